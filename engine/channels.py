"""The 12-channel layout of the competition patches (the model's input contract).

The model package's manifest repeats this layout (it is what the package was trained
on); `models.package` checks the two agree, so a package trained on another layout is
refused instead of silently producing nonsense.
"""
from __future__ import annotations

from dataclasses import dataclass

PATCH_SIZE = 64
PIXEL_SIZE_M = 10.0


@dataclass(frozen=True)
class Channel:
    index: int
    name: str
    source: str  # input slot that provides it: S2, S1_DESC, S1_ASC
    units: str


CHANNELS: tuple[Channel, ...] = (
    Channel(0, "S2_RED", "S2", "reflectance x 10000 (+1000 offset)"),
    Channel(1, "S2_GREEN", "S2", "reflectance x 10000 (+1000 offset)"),
    Channel(2, "S2_BLUE", "S2", "reflectance x 10000 (+1000 offset)"),
    Channel(3, "S2_NIR", "S2", "reflectance x 10000 (+1000 offset)"),
    Channel(4, "S1_DESC_VV", "S1_DESC", "dB"),
    Channel(5, "S1_DESC_VH", "S1_DESC", "dB"),
    Channel(6, "S1_DESC_DVV", "S1_DESC", "dB (post - pre)"),
    Channel(7, "S1_DESC_DVH", "S1_DESC", "dB (post - pre)"),
    Channel(8, "S1_ASC_VV", "S1_ASC", "dB"),
    Channel(9, "S1_ASC_VH", "S1_ASC", "dB"),
    Channel(10, "S1_ASC_DVV", "S1_ASC", "dB (post - pre)"),
    Channel(11, "S1_ASC_DVH", "S1_ASC", "dB (post - pre)"),
)
CHANNEL_NAMES = tuple(c.name for c in CHANNELS)
N_CHANNELS = len(CHANNELS)

OPTICAL = (0, 1, 2, 3)
SAR = tuple(range(4, 12))
RED, GREEN, BLUE, NIR = OPTICAL

# Which input groups each detection mode needs.  A partial SAR set (one orbit only, or
# post without pre) cannot make the diff channels, so SAR counts as present only when
# both orbits with both dates are given.
MODE_SOURCES = {
    "combined": ("S2", "S1_DESC", "S1_ASC"),
    "optical": ("S2",),
    "sar": ("S1_DESC", "S1_ASC"),
}
MODE_CHANNELS = {
    "combined": tuple(range(N_CHANNELS)),
    "optical": OPTICAL,
    "sar": SAR,
}


def mode_for_sources(sources: set[str]) -> str | None:
    """The richest mode the given input groups allow, or None."""
    for mode in ("combined", "optical", "sar"):
        if all(s in sources for s in MODE_SOURCES[mode]):
            return mode
    return None
