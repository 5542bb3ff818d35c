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

from .channels import BLUE, COMBINATION_BY_NAME, GREEN, N_CHANNELS, NIR, OPTICAL, RED, SAR, combination_name

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
    # added with train_gbm.py (cross-validated: a small, consistent OOF AUC gain): the
    # remaining band pairs' normalised differences of means, and the spread of the
    # green / blue bands, as for red / NIR above
    "opt_nd_nir_blue_of_means": ("optical", lambda f: _nd(f["band4_mean"], f["band3_mean"])),
    "opt_nd_blue_green_of_means": ("optical", lambda f: _nd(f["band3_mean"], f["band2_mean"])),
    "opt_green_cv": ("optical", lambda f: _safe_div(f["band2_std"], f["band2_mean"])),
    "opt_blue_cv": ("optical", lambda f: _safe_div(f["band3_std"], f["band3_mean"])),
    "opt_green_range": ("optical", lambda f: f["band2_max"] - f["band2_min"]),
    "opt_blue_range": ("optical", lambda f: f["band3_max"] - f["band3_min"]),
    "opt_ndwi_range": ("optical", lambda f: f["ndwi_max"] - f["ndwi_min"]),
    # ... and the VH / change-channel counterparts of the SAR ones above
    "sar_desc_dvh_range": ("sar", lambda f: f["band8_max"] - f["band8_min"]),
    "sar_asc_dvh_range": ("sar", lambda f: f["band12_max"] - f["band12_min"]),
    "sar_desc_dvv_minus_dvh": ("sar", lambda f: f["band7_mean"] - f["band8_mean"]),
    "sar_asc_dvv_minus_dvh": ("sar", lambda f: f["band11_mean"] - f["band12_mean"]),
    "sar_vh_orbit_diff": ("sar", lambda f: f["band6_mean"] - f["band10_mean"]),
    "sar_dvv_orbit_diff": ("sar", lambda f: f["band7_mean"] - f["band11_mean"]),
    "sar_dvv_max_sum": ("sar", lambda f: f["band7_max"] + f["band11_max"]),
    "sar_dvv_min_sum": ("sar", lambda f: f["band7_min"] + f["band11_min"]),
    "sar_vv_std_sum": ("sar", lambda f: f["band5_std"] + f["band9_std"]),
    "sar_vh_std_sum": ("sar", lambda f: f["band6_std"] + f["band10_std"]),
}
DERIVED_FEATURES = tuple(_DERIVED)


def feature_names(mode: str) -> tuple[str, ...]:
    """Feature columns a GBM member of this combination consumes, in order: every base and
    derived feature whose channels the combination has (a post-event-only orbit has its VV,
    VH statistics, no change-channel ones).  Legacy mode names map to their combination
    ("combined" -> "s2+desc+asc": all features; "optical" -> "s2"; "sar" -> "desc+asc")."""
    name = combination_name(mode)
    if name not in COMBINATION_BY_NAME:
        raise ValueError(f"unknown mode {mode!r}")
    have = set(COMBINATION_BY_NAME[name].channels)
    return tuple(n for n in BASE_FEATURES + DERIVED_FEATURES if FEATURE_CHANNELS[n] <= have)


def add_derived(feats: dict) -> dict:
    """Add the derived features that can be computed from the base features present."""
    out = dict(feats)
    for name, (_, fn) in _DERIVED.items():
        try:
            out[name] = np.asarray(fn(feats), dtype=np.float32)
        except KeyError:
            continue  # its inputs belong to a modality that is absent
    return out


# patches per chunk: bounds the float64 temporaries (~0.4 MB per patch) whatever the
# batch, and keeps them in a core's L2 cache: 4 patches ran 2.5x faster than 32
_CHUNK = 4


def _moment_stats(x: np.ndarray, w: np.ndarray | None, cnt: np.ndarray, raw: np.ndarray | None = None,
                  valid: np.ndarray | None = None) -> dict:
    """Stats of x (N, K, P) over the pixels where w (N, 1, P) is 1 (w None: all pixels;
    x may then be float32, the moments are float64 all the same); cnt (N, 1) > 0.
    Invalid pixels of x must hold finite values (e.g. 0).
    min / max come from ``raw`` (the same values before the float64 cast) when given."""
    if w is None:
        # float32 input is widened inside the reductions (no float64 copy of it first)
        mean = x.sum(axis=2, dtype=np.float64) / cnt
        d = np.subtract(x, mean[:, :, None], dtype=np.float64)
    else:
        mean = (x * w).sum(axis=2) / cnt
        d = x - mean[:, :, None]
        d *= w
    d2 = d * d
    m2 = d2.sum(axis=2) / cnt
    m3 = np.einsum("nkp,nkp->nk", d2, d) / cnt
    m4 = np.einsum("nkp,nkp->nk", d2, d2) / cnt
    src = x if raw is None else raw
    if valid is None:
        vmin, vmax = src.min(axis=2), src.max(axis=2)
    else:
        vmin = np.where(valid, src, np.inf).min(axis=2)
        vmax = np.where(valid, src, -np.inf).max(axis=2)
    # scipy's rule: moments of a (numerically) constant sample are undefined
    flat = m2 <= (np.finfo(np.float64).eps * mean) ** 2
    with np.errstate(divide="ignore", invalid="ignore"):
        skew = np.where(flat, np.nan, m3 / m2**1.5)
        kurt = np.where(flat, np.nan, m4 / m2**2 - 3.0)
    return {"mean": mean, "std": np.sqrt(m2), "min": vmin.astype(np.float64), "max": vmax.astype(np.float64),
            "kurt": kurt, "skew": skew}


def _masked_stats(x: np.ndarray, w: np.ndarray, cnt: np.ndarray) -> dict:
    """Stats of x (N, K, P) over pixels where w (N, 1, P) is 1; cnt (N, 1) > 0."""
    return _moment_stats(x, w, cnt, valid=w.astype(bool))


def _chunk_features(p32: np.ndarray, valid: np.ndarray | None, chans: list, groups) -> dict:
    """patch_features' statistics for one chunk; ``valid`` None means every pixel valid."""
    n = p32.shape[0]
    raw = p32.reshape(n, p32.shape[1], -1)[:, chans]  # (n, K, P) in the input dtype
    p = raw.shape[2]
    if valid is None:
        w = vb = None
        cnt = np.full((n, 1), float(p))
        xs = raw
    else:
        vb = valid.reshape(n, 1, p)
        w = vb.astype(np.float64)
        cnt = np.maximum(w[:, 0].sum(axis=1, keepdims=True), 1.0)
        xs = np.where(vb, raw, 0.0).astype(np.float64)
    out: dict = {}
    stats = _moment_stats(xs, w, cnt, raw=raw, valid=vb)
    for k, ch in enumerate(chans):
        for s in STATS:
            out[f"{BAND_NAMES[ch]}_{s}"] = stats[s][:, k]
    if "optical" in groups:
        r, g, nir = (xs[:, chans.index(i)].astype(np.float64) for i in (RED, GREEN, NIR))
        out["cloud_score_brightness"] = stats["mean"][:, [chans.index(i) for i in (RED, GREEN, BLUE)]].mean(axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            idx = np.stack([(nir - r) / (nir + r), (g - nir) / (g + nir)], axis=1)
        fin = np.isfinite(idx)
        if w is None and fin.all():
            st = _moment_stats(idx, None, cnt)
            for j, name in enumerate(INDEX_NAMES):
                for s in STATS:
                    out[f"{name}_{s}"] = st[s][:, j]
        else:
            # a zero denominator makes the index undefined for that pixel: leave it out
            wi = fin if vb is None else (fin & vb)
            for j, name in enumerate(INDEX_NAMES):
                wj = wi[:, j : j + 1]
                cj = wj[:, 0].sum(axis=1, keepdims=True).astype(np.float64)
                st = _moment_stats(np.where(wj, idx[:, j : j + 1], 0.0), wj.astype(np.float64),
                                   np.maximum(cj, 1.0), valid=wj)
                for s in STATS:
                    out[f"{name}_{s}"] = np.where(cj[:, 0] == 0, np.nan, st[s][:, 0])
    return out


def patch_features(
    patches: np.ndarray, valid: np.ndarray | None = None, groups=("optical", "sar"), channels=None,
    index: np.ndarray | None = None,
) -> dict:
    """Base + derived features for a batch of patches.

    patches: (N, 12, H, W) in the package convention (S2 x10000 with offset, SAR dB);
    valid: (N, H, W) bool, pixels to use (default: all finite).  ``groups`` says which
    modalities are present; ``channels`` (indices of the 12-channel layout), when given,
    replaces it: only those channels' statistics (and the optical indices when all four
    optical channels are among them), e.g. a post-event-only orbit's VV, VH.  Returns
    {feature name: float32 array (N,)}; a patch with no valid pixel gets NaN.

    Vectorised over chunks of patches (moments in float64); a chunk whose pixels are
    all valid takes an unmasked fast path.

    ``index``: the features of ``patches[index]`` (``valid`` then has one entry per
    index), gathered a chunk at a time instead of copying that subset of a batch first.
    """
    patches = np.asarray(patches)
    if patches.dtype not in (np.float32, np.float64):
        patches = patches.astype(np.float64)
    rows = None if index is None else np.asarray(index, dtype=np.intp)
    n = patches.shape[0] if rows is None else len(rows)
    if channels is not None:
        chans = sorted(int(c) for c in channels)
        groups = (("optical",) if all(c in chans for c in OPTICAL) else ()) + (("sar",) if set(chans) & set(SAR) else ())
        if set(chans) & set(OPTICAL) and "optical" not in groups:
            raise ValueError("the optical channels come all four or none")
    else:
        chans = []
        if "optical" in groups:
            chans += list(OPTICAL)
        if "sar" in groups:
            chans += list(SAR)
    if valid is None:
        valid = np.isfinite(patches[:, chans] if rows is None else patches[rows][:, chans]).all(axis=1)
    valid = np.asarray(valid, dtype=bool).reshape(n, -1)
    empty = ~valid.any(axis=1)
    full = valid.all(axis=1)
    # fully valid patches (nearly all of a scene) take the unmasked path, the few
    # partial ones (scene edges, nodata holes) the masked one; chunks bound the float64
    # temporaries whatever the batch size
    order = np.concatenate([np.flatnonzero(full), np.flatnonzero(~full)])
    parts, n_full = [], int(full.sum())
    for lo, hi, masked in ((0, n_full, False), (n_full, n, True)):
        for c0 in range(lo, hi, _CHUNK):
            sel = order[c0:min(c0 + _CHUNK, hi)]
            contiguous = sel[-1] - sel[0] + 1 == len(sel)
            sl = slice(sel[0], sel[-1] + 1) if contiguous else sel
            at = sl if rows is None else rows[sl]
            parts.append(_chunk_features(patches[at], valid[sl] if masked else None, chans, groups))
    out: dict = {}
    if parts:
        inv = np.empty(n, dtype=np.intp)
        inv[order] = np.arange(n)
        for k in parts[0]:
            out[k] = np.where(empty, np.nan, np.concatenate([pt[k] for pt in parts])[inv]).astype(np.float32)
    return add_derived(out)


def feature_matrix(feats: dict, names) -> np.ndarray:
    """Stack features into an (N, len(names)) float32 matrix in the given order."""
    return np.stack([np.asarray(feats[n], dtype=np.float32) for n in names], axis=1)


class _Recorder(dict):
    """A dict that notes the base features a derived feature reads."""

    def __init__(self):
        super().__init__()
        self.read: set = set()

    def __getitem__(self, key):
        self.read.add(key)
        return np.zeros(1)


def feature_channels(name: str) -> tuple[int, ...]:
    """The channels (12-channel layout) a feature is computed from: ``band7_mean`` -> (6,),
    ``ndvi_std`` -> the optical channels, derived features -> those of their inputs."""
    if name in _DERIVED:
        rec = _Recorder()
        _DERIVED[name][1](rec)
        return tuple(sorted({c for k in rec.read for c in feature_channels(k)}))
    head = name.split("_")[0]
    if head.startswith("band") and head[4:].isdigit():
        return (int(head[4:]) - 1,)
    if head in INDEX_NAMES or name == "cloud_score_brightness" or head == "opt":
        return tuple(OPTICAL)
    raise ValueError(f"unknown feature {name!r}")


# feature name -> the channels (12-channel layout) its value depends on
FEATURE_CHANNELS: dict = {n: frozenset(feature_channels(n)) for n in BASE_FEATURES + DERIVED_FEATURES}
