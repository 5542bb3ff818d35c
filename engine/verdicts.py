"""The analyst's verdicts on a detect grid, read and written outside QGIS (OGR), and
tile truth from an inventory (for SYNTHETIC scenes with a known truth: simulated verdicts).

Verdict convention (review field of the grid, written by the review panel):
``confirmed`` = landslide, ``rejected`` = not a landslide, ``unsure`` / empty = ignored.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from osgeo import ogr

from ..core.errors import InputError
from .truth import box_wkb, is_landslide, tile_landslide_fractions

ogr.UseExceptions()

CONFIRMED, REJECTED, UNSURE = "confirmed", "rejected", "unsure"
LABELS = {CONFIRMED: 1, REJECTED: 0}

# How a reviewed tile was chosen (grid field ``pick``).  Only ``random`` tiles (the stratified
# random sample, drawn within each map class with known inclusion probabilities) are a sample
# of the region; every other pick is purposive and must never be weighted as if random.
PICK_FIELD = "pick"
PICK_RANDOM = "random"  # stratified random sample (landslide:sample or the panel's random share)
PICK_UNCERTAIN = "uncertain"  # purposive: probability near the threshold / members disagree
PICK_INFORMATIVE = "informative"  # purposive: uncertain and unlike the tiles already reviewed
PICK_PROBABLE = "probable"  # purposive: most probable tiles
PICK_MANUAL = "manual"  # purposive: the analyst chose the tile
PURPOSIVE_PICKS = (PICK_UNCERTAIN, PICK_INFORMATIVE, PICK_PROBABLE, PICK_MANUAL)
# The map class (1 flagged, 0 not) a tile belonged to when the stratified sample was first
# drawn, set on every scored tile then and carried over when a grid is re-scored, so design
# weights stay those of the draw (N_h and n_h counted on this field, not on today's flags).
STRATUM_FIELD = "stratum"


def picks_of(picks, sample) -> list:
    """How each tile was chosen for review (``PICK_*``; '' where unknown) from the ``pick`` and
    ``sample`` fields (None / 0 where unset).  A tile with a ``sample`` number and no pick is a
    stratified random sample tile (older grids)."""
    sample = [0 if s is None else s for s in sample]
    picks = picks if picks is not None else [None] * len(sample)
    return [p if p else (PICK_RANDOM if s and s > 0 else "") for p, s in zip(picks, sample)]


def strata_of(stratum, flagged) -> np.ndarray:
    """Map class at the time of the stratified draw (1/0) from the ``stratum`` field (None where
    unset); today's ``flagged`` where unset (then the draw's strata were today's classes)."""
    flagged = np.asarray(flagged, dtype=bool)
    if stratum is None:
        return flagged.astype(np.int64)
    return np.array([int(f) if v is None else int(v) for v, f in zip(stratum, flagged)], dtype=np.int64)


def verdict_label(review) -> int | None:
    """1 (confirmed), 0 (rejected) or None (unsure, empty, anything else)."""
    if review is None:
        return None
    return LABELS.get(str(review).strip().lower())


@dataclass
class GridTiles:
    """The tiles of a grid as arrays (one entry per feature, in file order)."""

    fid: np.ndarray
    tile_id: np.ndarray
    row: np.ndarray
    col: np.ndarray
    bounds: np.ndarray  # (N, 4) xmin, ymin, xmax, ymax
    prob: np.ndarray  # NaN for nodata
    flagged: np.ndarray  # bool
    status: list
    review: list
    sample: np.ndarray  # int, 0 = not in the sample
    uncertainty: np.ndarray  # NaN where absent
    crs_wkt: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def labels(self) -> np.ndarray:
        """Verdicts as float: 1, 0, NaN (no usable verdict)."""
        return np.array([np.nan if (v := verdict_label(r)) is None else v for r in self.review], dtype=np.float64)

    @property
    def pick(self) -> list:
        """How each tile was chosen for review (``picks_of``)."""
        return picks_of(self.extra.get(PICK_FIELD), self.sample)

    @property
    def stratum(self) -> np.ndarray:
        """Map class at the time of the stratified draw (``strata_of``)."""
        return strata_of(self.extra.get(STRATUM_FIELD), self.flagged)

    @property
    def scored(self) -> np.ndarray:
        return np.array([s == "ok" for s in self.status]) & np.isfinite(self.prob)


def _get(f, defn, name, default=None):
    i = defn.GetFieldIndex(name)
    if i < 0 or not f.IsFieldSetAndNotNull(i):
        return default
    return f.GetField(i)


def read_grid(path: str, layer: str | None = None) -> GridTiles:
    """Read a detect grid (any OGR format) into ``GridTiles``."""
    try:
        ds = ogr.Open(str(path))
    except RuntimeError as exc:
        raise InputError(f"The grid '{path}' could not be opened: {exc}") from None
    if ds is None:
        raise InputError(f"The grid '{path}' could not be opened.")
    lyr = ds.GetLayerByName(layer) if layer else ds.GetLayer(0)
    defn = lyr.GetLayerDefn()
    names = {defn.GetFieldDefn(i).GetName() for i in range(defn.GetFieldCount())}
    missing = {"tile_id", "prob"} - names
    if missing:
        raise InputError(f"'{path}' is not a landslide grid from detect: it has no {', '.join(sorted(missing))} field.")
    keys = ("fid", "tile_id", "row", "col", "bounds", "prob", "flagged", "status", "review", "sample", "uncertainty")
    cols: dict[str, list] = {k: [] for k in keys}
    optional = [n for n in (PICK_FIELD, STRATUM_FIELD) if n in names]
    extra: dict[str, list] = {n: [] for n in optional}
    for f in lyr:
        g = f.GetGeometryRef()
        x0, x1, y0, y1 = g.GetEnvelope() if g is not None else (np.nan,) * 4
        prob = _get(f, defn, "prob")
        cols["fid"].append(f.GetFID())
        cols["tile_id"].append(_get(f, defn, "tile_id", -1))
        cols["row"].append(_get(f, defn, "row", -1))
        cols["col"].append(_get(f, defn, "col", -1))
        cols["bounds"].append((x0, y0, x1, y1))
        cols["prob"].append(np.nan if prob is None or prob < 0 else prob)
        cols["flagged"].append(bool(_get(f, defn, "flagged", 0)))
        cols["status"].append(_get(f, defn, "status", "ok" if prob is not None and prob >= 0 else "nodata"))
        cols["review"].append(_get(f, defn, "review"))
        cols["sample"].append(int(_get(f, defn, "sample", 0) or 0))
        u = _get(f, defn, "uncertainty")
        cols["uncertainty"].append(np.nan if u is None else u)
        for name in optional:
            extra[name].append(_get(f, defn, name))
    srs = lyr.GetSpatialRef()
    wkt = srs.ExportToWkt() if srs is not None else ""
    ds = None
    return GridTiles(np.array(cols["fid"], dtype=np.int64), np.array(cols["tile_id"], dtype=np.int64),
                     np.array(cols["row"], dtype=np.int64), np.array(cols["col"], dtype=np.int64),
                     np.array(cols["bounds"], dtype=np.float64).reshape(-1, 4), np.array(cols["prob"], dtype=np.float64),
                     np.array(cols["flagged"], dtype=bool), cols["status"], cols["review"],
                     np.array(cols["sample"], dtype=np.int64), np.array(cols["uncertainty"], dtype=np.float64), wkt, extra)


def write_fields(path: str, values: dict, fid_values: dict | None = None, layer: str | None = None) -> None:
    """Set fields of a grid in place: ``values`` {field: {fid: value}}; missing fields are
    created (integer for ints/bools, real for floats, string otherwise)."""
    ds = ogr.Open(str(path), 1)
    lyr = ds.GetLayerByName(layer) if layer else ds.GetLayer(0)
    defn = lyr.GetLayerDefn()
    for name, per_fid in values.items():
        if defn.GetFieldIndex(name) < 0:
            sample = next(iter(per_fid.values()), None)
            kind = ogr.OFTInteger if isinstance(sample, (bool, int, np.integer)) else (
                ogr.OFTReal if isinstance(sample, (float, np.floating)) else ogr.OFTString)
            lyr.CreateField(ogr.FieldDefn(name, kind))
            defn = lyr.GetLayerDefn()
    lyr.StartTransaction()
    for f in lyr:
        changed = False
        for name, per_fid in values.items():
            if f.GetFID() in per_fid:
                v = per_fid[f.GetFID()]
                i = defn.GetFieldIndex(name)
                if v is None:
                    f.SetFieldNull(i)
                else:
                    f.SetField(i, int(v) if isinstance(v, (bool, np.bool_, np.integer)) else v)
                changed = True
        if changed:
            lyr.SetFeature(f)
    lyr.CommitTransaction()
    ds = None


def tile_truth(bounds, inventory_path: str, min_fraction: float = 0.01) -> np.ndarray:
    """Per tile (bounds (N, 4) in the inventory's CRS): True where the inventory polygons
    cover at least ``min_fraction`` of it (landslide:evaluate's rule and default)."""
    ds = ogr.Open(str(inventory_path))
    polys = [bytes(f.GetGeometryRef().ExportToWkb()) for f in ds.GetLayer(0) if f.GetGeometryRef() is not None]
    ds = None
    frac = tile_landslide_fractions([box_wkb(*map(float, b)) for b in np.asarray(bounds).reshape(-1, 4)], polys)
    return is_landslide(frac, min_fraction)


def simulate_verdicts(truth: np.ndarray, chosen) -> list:
    """Verdict strings an analyst who knows the (SYNTHETIC) truth would give on ``chosen``
    tiles (indices); None elsewhere."""
    out: list[str | None] = [None] * len(truth)
    for i in np.asarray(chosen, dtype=int):
        out[i] = CONFIRMED if truth[i] else REJECTED
    return out
