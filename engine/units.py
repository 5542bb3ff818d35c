"""Unit conventions: detect and convert S2 reflectance scale/offset and SAR dB / linear
power / linear amplitude.

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
SAR_UNIT_CHOICES = ("auto", "dB", "linear", "amplitude")  # "linear" = linear power

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
        notes.append(f"+1000 offset {'present' if present else 'absent'} "
                     f"(auto: 1st percentile {p1:.0f} vs {OFFSET_DECISION_DN:.0f})")
    else:
        present = offset == "present"
        notes.append(f"+1000 offset {offset} (set)")
    return S2Convention(s, present, "; ".join(notes))


# Typical backscatter of the package's training data, from the 7147 labelled competition
# patches' mean Sentinel-1 VV and VH (train_features_7147.csv.gz, descending / ascending):
# the VV-VH mean level has median -12.8 / -13.6 dB (IQR 6.0 / 6.7), the cross-polarisation
# ratio VV-VH median 6.7 / 6.5 dB (IQR 1.6 / 1.4); VV alone median -9.6 / -10.4 dB.  Real
# scenes sit near them (Sen1Floods11 Murcia sample VV -10.5, VH -17.7 dB).  Linear values are
# read as power or as amplitude (power = amplitude^2), whichever puts the layer's level and,
# above all, its cross-pol ratio nearer these in IQR units: amplitude read as power halves
# every dB figure, so its ratio falls to ~3.3 dB, which the training data almost never shows.
TYPICAL_SAR_LEVEL_DB, SAR_LEVEL_IQR_DB = -13.2, 6.4
TYPICAL_SAR_RATIO_DB, SAR_RATIO_IQR_DB = 6.6, 1.5
TYPICAL_VV_DB = -10.0


@dataclass
class SarConvention:
    scale: str  # "dB", "power" (linear power) or "amplitude" (linear amplitude)
    note: str

    @property
    def linear(self) -> bool:
        return self.scale != "dB"

    def averaged_as_power(self) -> "SarConvention":
        """The convention of a layer that AlignedLayer.average_linear_power turned into dB."""
        return SarConvention("dB", f"{self.note}; averaged onto the grid as linear power, read as dB")

    def to_db(self, x: np.ndarray, inplace: bool = False) -> np.ndarray:
        """Values -> dB (10 log10 of power, 20 log10 of amplitude); ``inplace`` overwrites
        ``x`` (float32)."""
        if not self.linear:
            return x
        k = np.float32(20.0 if self.scale == "amplitude" else 10.0)
        with np.errstate(divide="ignore", invalid="ignore"):
            if inplace:
                np.maximum(x, np.float32(1e-10), out=x)
                np.log10(x, out=x)
                x *= k
                return x
            y = k * np.log10(np.maximum(x, 1e-10))
        return y.astype(np.float32)


def _power_or_amplitude(sample: np.ndarray, label: str) -> SarConvention:
    """Positive linear values: power or amplitude, by which reading puts the layer's VV/VH
    level and cross-pol ratio (VV only: its level) nearer the training data's."""
    meds = []
    for band in sample[:2]:
        v = band[np.isfinite(band) & (band > 0)]
        if not v.size:  # a band with nothing positive: judge by VV alone (or refuse below)
            break
        meds.append(float(np.median(v)))
    if not meds:
        raise ValueError(f"The {label} layer has no positive values: no backscatter to read "
                         "(a blank layer whose nodata value is not declared?).")
    db = [10.0 * np.log10(m) for m in meds]  # read as power; as amplitude: twice these

    def distance(k: float) -> float:
        if len(db) == 2:
            level, ratio = k * (db[0] + db[1]) / 2, k * (db[0] - db[1])
            return (abs(level - TYPICAL_SAR_LEVEL_DB) / SAR_LEVEL_IQR_DB
                    + abs(ratio - TYPICAL_SAR_RATIO_DB) / SAR_RATIO_IQR_DB)
        return abs(k * db[0] - TYPICAL_VV_DB) / SAR_LEVEL_IQR_DB

    d_pow, d_amp = distance(1.0), distance(2.0)
    amplitude = d_amp < d_pow

    def reading(k: float) -> str:
        if len(db) == 2:
            return f"VV {k * db[0]:.1f}, VH {k * db[1]:.1f} dB, ratio {k * (db[0] - db[1]):.1f} dB"
        return f"{k * db[0]:.1f} dB"

    note = (f"linear {'amplitude' if amplitude else 'power'} (auto: no negatives; medians read as power "
            f"{reading(1.0)}, as amplitude {reading(2.0)}; typical ratio {TYPICAL_SAR_RATIO_DB} dB), "
            "converted to dB")
    if abs(d_amp - d_pow) < 1.0:
        note += (f"; uncertain between power and amplitude: set the {label} units if the layer is "
                 f"{'power' if amplitude else 'amplitude'}")
    return SarConvention("amplitude" if amplitude else "power", note)


def decide_sar(sample: np.ndarray, units: str = "auto", label: str = "Sentinel-1") -> SarConvention:
    """sample: (bands, h, w) of the layer's bands in model order (VV, VH), NaN = nodata."""
    if units == "dB":
        return SarConvention("dB", "dB (set)")
    if units == "linear":
        return SarConvention("power", "linear power (set), converted to dB")
    if units == "amplitude":
        return SarConvention("amplitude", "linear amplitude (set), converted to dB")
    v = sample[np.isfinite(sample)]
    if v.size == 0:
        raise ValueError(f"The {label} layer has no valid pixels.")
    med = float(np.median(v))
    neg = float((v < 0).mean())
    if neg > 0.05 or med < 0:
        return SarConvention("dB", f"dB (auto: median {med:.3g}, {neg:.0%} negative)")
    if med < 1.0:
        return _power_or_amplitude(sample, label)
    raise ValueError(
        f"The {label} layer's values (median {med:.3g}, none negative) look like neither dB nor "
        "calibrated backscatter (uncalibrated amplitude digital numbers or scaled integers?). "
        "Calibrate it to sigma0 or gamma0 (dB, linear power or linear amplitude) and set the "
        "Sentinel-1 units if detection gets them wrong."
    )
