"""Per-patch statistics, exactly as defined in ../shared/data/README.md, vectorised.

Base features (85, the column order of ``train_features_7147.csv.gz``):
``cloud_score_brightness`` (mean of channels 0-2), then for band1..band12 (channels
0..11), ``ndvi`` and ``ndwi``: ``_mean _std _min _max _kurt _skew``.  Statistics are
over the patch's valid pixels; std with ddof=0; kurtosis Fisher and biased; skew
biased (the scipy.stats defaults); values rounded to float32.  ndvi = (NIR - Red) /
(NIR + Red), ndwi = (Green - NIR) / (Green + NIR) per pixel on the raw values.

Derived features are functions of base features only (see ``add_derived``), so the
training script computes them from the CSV and detection computes them from pixels
through the very same function.
"""
from __future__ import annotations

import numpy as np

from .channels import BLUE, GREEN, N_CHANNELS, NIR, OPTICAL, RED, SAR

STATS = ("mean", "std", "min", "max", "kurt", "skew")
BAND_NAMES = tuple(f"band{i + 1}" for i in range(N_CHANNELS))
INDEX_NAMES = ("ndvi", "ndwi")


def _block(names):
    return [f"{n}_{s}" for n in names for s in STATS]


BASE_FEATURES: tuple[str, ...] = tuple(
    ["cloud_score_brightness"] + _block(BAND_NAMES) + _block(INDEX_NAMES)
)
OPTICAL_BASE = tuple(
    ["cloud_score_brightness"] + _block([BAND_NAMES[i] for i in OPTICAL]) + _block(INDEX_NAMES)
)
SAR_BASE = tuple(_block([BAND_NAMES[i] for i in SAR]))


def _safe_div(a, b):
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.asarray(a, dtype=np.float64) / np.asarray(b, dtype=np.float64)
    return np.where(np.isfinite(out), out, np.nan)


def _nd(a, b):
    """Normalised difference with a guarded denominator (NaN where a+b == 0)."""
    return _safe_div(np.asarray(a, np.float64) - b, np.asarray(a, np.float64) + b)


# name -> (mode group, function of a dict of base features)
_DERIVED = {
    # optical: relations between band means that single-band stats cannot express
    "opt_nd_nir_red_of_means": ("optical", lambda f: _nd(f["band4_mean"], f["band1_mean"])),
    "opt_nd_green_red_of_means": ("optical", lambda f: _nd(f["band2_mean"], f["band1_mean"])),
    "opt_nd_blue_red_of_means": ("optical", lambda f: _nd(f["band3_mean"], f["band1_mean"])),
    "opt_nd_nir_green_of_means": ("optical", lambda f: _nd(f["band4_mean"], f["band2_mean"])),
    "opt_red_cv": ("optical", lambda f: _safe_div(f["band1_std"], f["band1_mean"])),
    "opt_nir_cv": ("optical", lambda f: _safe_div(f["band4_std"], f["band4_mean"])),
    "opt_red_range": ("optical", lambda f: f["band1_max"] - f["band1_min"]),
    "opt_nir_range": ("optical", lambda f: f["band4_max"] - f["band4_min"]),
    "opt_ndvi_range": ("optical", lambda f: f["ndvi_max"] - f["ndvi_min"]),
    "opt_red_max_minus_mean": ("optical", lambda f: f["band1_max"] - f["band1_mean"]),
    "opt_ndvi_mean_minus_min": ("optical", lambda f: f["ndvi_mean"] - f["ndvi_min"]),
    # SAR: polarisation ratio (dB difference) and agreement of the two orbits' changes
    "sar_desc_vv_minus_vh": ("sar", lambda f: f["band5_mean"] - f["band6_mean"]),
    "sar_asc_vv_minus_vh": ("sar", lambda f: f["band9_mean"] - f["band10_mean"]),
    "sar_dvv_sum": ("sar", lambda f: f["band7_mean"] + f["band11_mean"]),
    "sar_dvh_sum": ("sar", lambda f: f["band8_mean"] + f["band12_mean"]),
    "sar_dvv_std_sum": ("sar", lambda f: f["band7_std"] + f["band11_std"]),
    "sar_dvh_std_sum": ("sar", lambda f: f["band8_std"] + f["band12_std"]),
    "sar_desc_dvv_range": ("sar", lambda f: f["band7_max"] - f["band7_min"]),
    "sar_asc_dvv_range": ("sar", lambda f: f["band11_max"] - f["band11_min"]),
    "sar_vv_orbit_diff": ("sar", lambda f: f["band5_mean"] - f["band9_mean"]),
}
DERIVED_FEATURES = tuple(_DERIVED)


def feature_names(mode: str) -> tuple[str, ...]:
    """Feature columns a GBM member of this mode consumes, in order."""
    if mode == "combined":
        return BASE_FEATURES + DERIVED_FEATURES
    if mode == "optical":
        return OPTICAL_BASE + tuple(n for n, (g, _) in _DERIVED.items() if g == "optical")
    if mode == "sar":
        return SAR_BASE + tuple(n for n, (g, _) in _DERIVED.items() if g == "sar")
    raise ValueError(f"unknown mode {mode!r}")


def add_derived(feats: dict) -> dict:
    """Add the derived features that can be computed from the base features present."""
    out = dict(feats)
    for name, (_, fn) in _DERIVED.items():
        try:
            out[name] = np.asarray(fn(feats), dtype=np.float32)
        except KeyError:
            continue  # its inputs belong to a modality that is absent
    return out


def _masked_stats(x: np.ndarray, w: np.ndarray, cnt: np.ndarray) -> dict:
    """Stats of x (N, K, P) over pixels where w (N, 1, P) is 1; cnt (N, 1) > 0."""
    c = cnt[:, :, None]
    mean = (x * w).sum(axis=2, keepdims=True) / c
    d = (x - mean) * w
    d2 = d * d
    m2 = d2.sum(axis=2) / cnt
    m3 = (d2 * d).sum(axis=2) / cnt
    m4 = (d2 * d2).sum(axis=2) / cnt
    mean = mean[:, :, 0]
    valid = w.astype(bool)
    vmin = np.where(valid, x, np.inf).min(axis=2)
    vmax = np.where(valid, x, -np.inf).max(axis=2)
    # scipy's rule: moments of a (numerically) constant sample are undefined
    flat = m2 <= (np.finfo(np.float64).eps * mean) ** 2
    with np.errstate(divide="ignore", invalid="ignore"):
        skew = np.where(flat, np.nan, m3 / m2**1.5)
        kurt = np.where(flat, np.nan, m4 / m2**2 - 3.0)
    return {"mean": mean, "std": np.sqrt(m2), "min": vmin, "max": vmax, "kurt": kurt, "skew": skew}


def patch_features(
    patches: np.ndarray, valid: np.ndarray | None = None, groups=("optical", "sar")
) -> dict:
    """Base + derived features for a batch of patches.

    patches: (N, 12, H, W) in the package convention (S2 x10000 with offset, SAR dB);
    valid: (N, H, W) bool, pixels to use (default: all finite).  ``groups`` says which
    modalities are present.  Returns {feature name: float32 array (N,)}; a patch with
    no valid pixel gets NaN.
    """
    x = np.asarray(patches, dtype=np.float64)
    n = x.shape[0]
    x = x.reshape(n, x.shape[1], -1)
    chans = []
    if "optical" in groups:
        chans += list(OPTICAL)
    if "sar" in groups:
        chans += list(SAR)
    if valid is None:
        valid = np.isfinite(x[:, chans]).all(axis=1)
    w = np.asarray(valid, dtype=np.float64).reshape(n, 1, -1)
    cnt = w[:, 0].sum(axis=1, keepdims=True)
    empty = cnt[:, 0] == 0
    cnt = np.where(cnt == 0, 1, cnt)
    xs = np.where(w.astype(bool), x[:, chans], 0.0)

    out: dict = {}
    stats = _masked_stats(xs, w, cnt)
    for k, ch in enumerate(chans):
        for s in STATS:
            out[f"{BAND_NAMES[ch]}_{s}"] = stats[s][:, k]
    if "optical" in groups:
        r, g, b, nir = (xs[:, chans.index(i)] for i in (RED, GREEN, BLUE, NIR))
        out["cloud_score_brightness"] = stats["mean"][:, [chans.index(i) for i in (RED, GREEN, BLUE)]].mean(axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            ndvi = (nir - r) / (nir + r)
            ndwi = (g - nir) / (g + nir)
        idx = np.stack([ndvi, ndwi], axis=1)
        # a zero denominator makes the index undefined for that pixel: leave it out
        wi = w * np.isfinite(idx)
        ci = wi.sum(axis=2)
        for j, name in enumerate(INDEX_NAMES):
            cj = ci[:, j : j + 1]
            st = _masked_stats(np.where(wi[:, j : j + 1] > 0, idx[:, j : j + 1], 0.0), wi[:, j : j + 1], np.where(cj == 0, 1, cj))
            for s in STATS:
                v = st[s][:, 0]
                out[f"{name}_{s}"] = np.where(cj[:, 0] == 0, np.nan, v)
    for k in out:
        out[k] = np.where(empty, np.nan, out[k]).astype(np.float32)
    return add_derived(out)


def feature_matrix(feats: dict, names) -> np.ndarray:
    """Stack features into an (N, len(names)) float32 matrix in the given order."""
    return np.stack([np.asarray(feats[n], dtype=np.float32) for n in names], axis=1)
