"""Unit conventions: detect and convert S2 reflectance scale/offset and SAR dB/linear.

The model package declares its convention (competition data: S2 reflectance x 10000
with the +1000 offset of processing baseline >= 04.00; SAR in dB).  Inputs are
converted to it; 'auto' settings are decided from a decimated sample of each layer and
the decision is reported, so the analyst can override it.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

S2_SCALE_CHOICES = ("auto", "10000", "1")  # integer x 10000 or float reflectance 0..1
S2_OFFSET_CHOICES = ("auto", "present", "absent")  # the +1000 L2A offset
SAR_UNIT_CHOICES = ("auto", "dB", "linear")

# Dark surfaces (water, shadow) are well below 0.09 reflectance; with the +1000 offset
# the competition minima sit at ~930-1100.  A 1st percentile below this means no offset.
OFFSET_DECISION_DN = 900.0


@dataclass
class S2Convention:
    scale: float  # multiply raw values by this to get reflectance x 10000
    offset_present: bool
    note: str

    def to_package(self, x: np.ndarray, pkg_offset: float, inplace: bool = False) -> np.ndarray:
        """Raw values -> package convention (x 10000, plus pkg_offset); ``inplace``
        overwrites ``x`` (float32) instead of returning a new array."""
        if inplace:
            if self.scale != 1.0:
                x *= np.float32(self.scale)
            y = x
        else:
            y = x * np.float32(self.scale)
        if not self.offset_present:
            if pkg_offset:
                y += np.float32(pkg_offset)
        elif pkg_offset == 0:
            y -= np.float32(1000.0)
        return y


def decide_s2(sample: np.ndarray, scale: str = "auto", offset: str = "auto") -> S2Convention:
    """sample: (bands, h, w) raw values, NaN = nodata."""
    v = sample[np.isfinite(sample)]
    v = v[v > 0]
    notes = []
    if scale == "auto":
        if v.size == 0:
            raise ValueError("The Sentinel-2 layer has no valid pixels.")
        s = 10000.0 if np.percentile(v, 99) <= 2.0 else 1.0
        notes.append(f"scale {'reflectance 0-1' if s != 1 else 'x 10000'} (auto: 99th percentile {np.percentile(v, 99):.4g})")
    else:
        s = 10000.0 if scale == "1" else 1.0
        notes.append(f"scale set to {'reflectance 0-1' if s != 1 else 'x 10000'}")
    if offset == "auto":
        p1 = float(np.percentile(v * s, 1)) if v.size else 0.0
        present = p1 >= OFFSET_DECISION_DN
        notes.append(f"+1000 offset {'present' if present else 'absent'} (auto: 1st percentile {p1:.0f} vs {OFFSET_DECISION_DN:.0f})")
    else:
        present = offset == "present"
        notes.append(f"+1000 offset {offset} (set)")
    return S2Convention(s, present, "; ".join(notes))


@dataclass
class SarConvention:
    linear: bool
    note: str

    def to_db(self, x: np.ndarray, inplace: bool = False) -> np.ndarray:
        """Values -> dB; ``inplace`` overwrites ``x`` (float32)."""
        if not self.linear:
            return x
        with np.errstate(divide="ignore", invalid="ignore"):
            if inplace:
                np.maximum(x, np.float32(1e-10), out=x)
                np.log10(x, out=x)
                x *= np.float32(10.0)
                return x
            y = 10.0 * np.log10(np.maximum(x, 1e-10))
        return y.astype(np.float32)


def decide_sar(sample: np.ndarray, units: str = "auto", label: str = "Sentinel-1") -> SarConvention:
    if units == "dB":
        return SarConvention(False, "dB (set)")
    if units == "linear":
        return SarConvention(True, "linear power (set), converted to dB")
    v = sample[np.isfinite(sample)]
    if v.size == 0:
        raise ValueError(f"The {label} layer has no valid pixels.")
    med = float(np.median(v))
    neg = float((v < 0).mean())
    if neg > 0.05 or med < 0:
        return SarConvention(False, f"dB (auto: median {med:.3g}, {neg:.0%} negative)")
    if med < 1.0:
        return SarConvention(True, f"linear power (auto: median {med:.3g}, no negatives), converted to dB")
    raise ValueError(
        f"The {label} layer's values (median {med:.3g}, none negative) look like neither dB nor "
        "linear power backscatter (amplitude or scaled integers?). Set the SAR units explicitly "
        "after converting it to sigma0/gamma0 dB or linear power."
    )
