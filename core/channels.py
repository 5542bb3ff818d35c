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

# Input roles: the analyst's layers.  These spellings are also the Processing parameter
# names, the command line's keys (lower case) and the batch CSV's columns.
S2_ROLE = "S2"
ORBITS = ("DESC", "ASC")
S1_ROLES = ("S1_DESC_POST", "S1_DESC_PRE", "S1_ASC_POST", "S1_ASC_PRE")
INPUT_ROLES = (S2_ROLE,) + S1_ROLES
ROLE_LABELS = {
    "S2": "Sentinel-2",
    "S1_DESC_POST": "Sentinel-1 descending post-event",
    "S1_DESC_PRE": "Sentinel-1 descending pre-event",
    "S1_ASC_POST": "Sentinel-1 ascending post-event",
    "S1_ASC_PRE": "Sentinel-1 ascending pre-event",
    "S2_MASK": "Sentinel-2 cloud mask",
}
# Optional Sentinel-2 validity mask: an L2A scene classification (SCL) raster or a 0/1
# mask (1 = invalid).  Not an input role of its own combination: it only removes pixels.
S2_MASK_ROLE = "S2_MASK"
# SCL classes that are not valid ground: no data, saturated, cloud shadow, cloud medium /
# high probability, thin cirrus
SCL_INVALID = (0, 1, 3, 8, 9, 10)
SCL_CLASSES = {0: "no data", 1: "saturated or defective", 2: "dark area", 3: "cloud shadow", 4: "vegetation",
               5: "not vegetated", 6: "water", 7: "unclassified", 8: "cloud medium probability",
               9: "cloud high probability", 10: "thin cirrus", 11: "snow or ice"}


# Processing parameters that pick the Sentinel-2 bands: (name, label, default band)
S2_BAND_PARAMS = (("S2_RED", "Red band", 1), ("S2_GREEN", "Green band", 2), ("S2_BLUE", "Blue band", 3),
                  ("S2_NIR", "Near-infrared band", 4))


def s1_role(orbit: str, when: str) -> str:
    """``s1_role("DESC", "POST")`` -> ``"S1_DESC_POST"``."""
    return f"S1_{orbit}_{when}"


# Sources (what a role contributes to) and their channels in the 12-channel layout.
SOURCE_CHANNELS = {
    "S2": OPTICAL,
    "S1_DESC": tuple(c.index for c in CHANNELS if c.source == "S1_DESC"),
    "S1_ASC": tuple(c.index for c in CHANNELS if c.source == "S1_ASC"),
}
# The three modes of earlier versions (package schema 1) and their sources; the
# combinations that replace them are LEGACY_MODE_NAMES below.
MODE_SOURCES = {
    "combined": ("S2", "S1_DESC", "S1_ASC"),
    "optical": ("S2",),
    "sar": ("S1_DESC", "S1_ASC"),
}
MODE_CHANNELS = {m: tuple(sorted(c for s in srcs for c in SOURCE_CHANNELS[s])) for m, srcs in MODE_SOURCES.items()}


# Combinations: which sources a run (or one tile) has.  Sentinel-2 present or not; each
# orbit absent, post-event only (VV, VH: no change channels) or post and pre (VV, VH and
# the post - pre change).  2 x 3 x 3 - 1 = 17 non-empty combinations, named by their
# sources: "s2", "s2+desc", "desc_post", "s2+desc+asc_post"...
ORBIT_STATES = ("none", "post", "full")


@dataclass(frozen=True)
class Combination:
    s2: bool
    desc: str = "none"  # one of ORBIT_STATES
    asc: str = "none"

    @property
    def name(self) -> str:
        parts = ["s2"] if self.s2 else []
        for orbit, state in (("desc", self.desc), ("asc", self.asc)):
            if state != "none":
                parts.append(orbit if state == "full" else f"{orbit}_post")
        return "+".join(parts)

    @property
    def channels(self) -> tuple[int, ...]:
        """The channels of the 12-channel layout this combination has."""
        out = list(OPTICAL) if self.s2 else []
        for orbit, state in (("DESC", self.desc), ("ASC", self.asc)):
            ch = SOURCE_CHANNELS[f"S1_{orbit}"]  # VV, VH, dVV, dVH
            out += list(ch[:2]) if state == "post" else list(ch) if state == "full" else []
        return tuple(out)

    @property
    def roles(self) -> tuple[str, ...]:
        """The input roles it reads."""
        out = [S2_ROLE] if self.s2 else []
        for orbit, state in (("DESC", self.desc), ("ASC", self.asc)):
            out += [s1_role(orbit, "POST")] if state != "none" else []
            out += [s1_role(orbit, "PRE")] if state == "full" else []
        return tuple(out)


COMBINATIONS: tuple[Combination, ...] = tuple(
    Combination(s2, d, a) for s2 in (True, False) for d in ORBIT_STATES for a in ORBIT_STATES
    if s2 or d != "none" or a != "none")
COMBINATION_BY_NAME = {c.name: c for c in COMBINATIONS}
# the three combinations of earlier versions, under their old names (older packages use them)
LEGACY_MODE_NAMES = {"combined": "s2+desc+asc", "optical": "s2", "sar": "desc+asc"}
ORBIT_RANK = {state: i for i, state in enumerate(ORBIT_STATES)}


def combination_within(c: Combination, limit: Combination) -> bool:
    """``c`` uses no source ``limit`` lacks (an orbit state is "at most" the limit's)."""
    return ((not c.s2 or limit.s2) and ORBIT_RANK[c.desc] <= ORBIT_RANK[limit.desc]
            and ORBIT_RANK[c.asc] <= ORBIT_RANK[limit.asc])


def richest_within(limit: Combination, offered) -> Combination | None:
    """The combination of ``offered`` (names or Combinations) that uses the most channels
    of ``limit`` and nothing it lacks; ties go to the one with Sentinel-2, then to the
    order of COMBINATIONS.  None when no offered combination fits."""
    names = {o if isinstance(o, str) else o.name for o in offered}
    fits = [c for c in COMBINATIONS if c.name in names and combination_within(c, limit)]
    if not fits:
        return None
    return max(fits, key=lambda c: (len(c.channels), c.s2, -COMBINATIONS.index(c)))


def combination_name(mode: str) -> str:
    """A combination name for a combination or legacy mode name ("combined" -> "s2+desc+asc")."""
    return LEGACY_MODE_NAMES.get(mode, mode)


def combination_groups(c: Combination) -> tuple[str, ...]:
    """The feature groups a combination has channels of ("optical", "sar")."""
    return (("optical",) if c.s2 else ()) + (("sar",) if c.desc != "none" or c.asc != "none" else ())


def combinations_having(channels) -> tuple[str, ...]:
    """Names of the combinations that have every one of ``channels`` (12-channel indices),
    in the order of COMBINATIONS: where a member built on those channels can run."""
    need = set(channels)
    return tuple(c.name for c in COMBINATIONS if need <= set(c.channels))
