"""Evaluate a tile grid against a landslide inventory: ground truth per tile, confusion
counts, precision/recall/F1, ROC and precision-recall curves.

QGIS-free (numpy + OGR), so the maths is tested directly and matches scikit-learn's
conventions: ``roc_curve``/``roc_auc_score`` (ties share one threshold), ``precision_recall_curve``
and ``average_precision_score`` (step-wise, no interpolation).  Undefined ratios (no
predicted positives, no true positives) are 0, as scikit-learn's ``zero_division=0``; the
AUC is undefined (NaN) when the truth holds only one class.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from osgeo import ogr

from ..core.errors import Cancelled

ogr.UseExceptions()

OUTCOMES = ("TP", "FP", "FN", "TN")
NODATA_OUTCOME = "nodata"


def _valid(geom: ogr.Geometry) -> ogr.Geometry:
    if geom is None or geom.IsEmpty() or geom.IsValid():
        return geom
    try:
        fixed = geom.MakeValid()
    except (AttributeError, RuntimeError):
        fixed = None
    if fixed is None or fixed.IsEmpty():
        fixed = geom.Buffer(0)
    return fixed


def _polygonal(geom: ogr.Geometry) -> list[ogr.Geometry]:
    """Polygon parts of any geometry (MakeValid may return a collection with lines)."""
    if geom is None or geom.IsEmpty():
        return []
    flat = ogr.GT_Flatten(geom.GetGeometryType())
    if flat == ogr.wkbPolygon:
        return [geom]
    if flat in (ogr.wkbMultiPolygon, ogr.wkbGeometryCollection):
        out = []
        for i in range(geom.GetGeometryCount()):
            out.extend(_polygonal(geom.GetGeometryRef(i).Clone()))
        return out
    return []


def area_fractions(tiles_wkb: list[bytes], inventory_wkb: list[bytes], progress=None,
                   is_cancelled=None) -> np.ndarray:
    """Fraction of each tile's area covered by the inventory polygons (their union, so
    overlapping inventory polygons are not counted twice).  Both lists must share one
    CRS.  Returns float64 (n_tiles,) in [0, 1].  ``progress(fraction)`` is called as the
    inventory parts are processed; ``is_cancelled()`` True raises ``Cancelled``."""
    n = len(tiles_wkb)
    covered = np.zeros(n, dtype=np.float64)
    if n == 0:
        return covered
    tiles = [ogr.CreateGeometryFromWkb(bytes(w)) for w in tiles_wkb]
    area = np.array([t.GetArea() if t is not None else 0.0 for t in tiles])
    env = np.array([t.GetEnvelope() if t is not None else (np.inf, -np.inf, np.inf, -np.inf) for t in tiles])
    parts: list[ogr.Geometry] = []
    for w in inventory_wkb:
        g = _valid(ogr.CreateGeometryFromWkb(bytes(w)))
        parts.extend(_polygonal(g))
    if parts:
        union = ogr.Geometry(ogr.wkbMultiPolygon)
        for p in parts:
            union.AddGeometry(p)
        # the union makes the parts disjoint, so their intersection areas simply add up
        parts = _polygonal(union.UnionCascaded())
    for k, part in enumerate(parts):
        if is_cancelled is not None and is_cancelled():
            raise Cancelled()
        if progress is not None and k % 50 == 0:
            progress(k / len(parts))
        px0, px1, py0, py1 = part.GetEnvelope()
        hit = np.nonzero((env[:, 0] < px1) & (env[:, 1] > px0) & (env[:, 2] < py1) & (env[:, 3] > py0))[0]
        for i in hit:
            inter = tiles[i].Intersection(part)
            if inter is not None and not inter.IsEmpty():
                covered[i] += inter.GetArea()
    with np.errstate(divide="ignore", invalid="ignore"):
        frac = np.where(area > 0, covered / area, 0.0)
    return np.clip(frac, 0.0, 1.0)


def roc_curve(truth, score):
    """(fpr, tpr, thresholds) as scikit-learn's ``roc_curve(drop_intermediate=False)``:
    one point per distinct score, descending, starting at (0, 0) with threshold +inf."""
    tps, fps, thr = _cumulative(truth, score)
    p, n = (tps[-1], fps[-1]) if tps.size else (0, 0)
    tps = np.r_[0, tps]
    fps = np.r_[0, fps]
    thr = np.r_[np.inf, thr]
    fpr = fps / n if n > 0 else np.full(fps.shape, np.nan)
    tpr = tps / p if p > 0 else np.full(tps.shape, np.nan)
    return fpr, tpr, thr


def pr_curve(truth, score):
    """(precision, recall, thresholds) as scikit-learn's ``precision_recall_curve``:
    recall decreasing, ending at (precision 1, recall 0)."""
    tps, fps, thr = _cumulative(truth, score)
    p = tps[-1] if tps.size else 0
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(tps + fps > 0, tps / np.maximum(tps + fps, 1), 0.0)
    recall = tps / p if p > 0 else np.ones(tps.shape)
    sl = slice(None, None, -1)
    return np.r_[precision[sl], 1.0], np.r_[recall[sl], 0.0], thr[sl]


def _cumulative(truth, score):
    y = np.asarray(truth, dtype=bool)
    s = np.asarray(score, dtype=np.float64)
    order = np.argsort(-s, kind="mergesort")
    y, s = y[order], s[order]
    distinct = np.nonzero(np.diff(s))[0]
    idx = np.r_[distinct, y.size - 1] if y.size else np.array([], dtype=int)
    tps = np.cumsum(y)[idx] if y.size else np.array([], dtype=np.int64)
    fps = (1 + idx) - tps
    return tps.astype(np.float64), fps.astype(np.float64), s[idx]


def roc_auc(truth, score) -> float:
    """Area under the ROC curve (trapezoids; ties count one half); NaN with one class."""
    y = np.asarray(truth, dtype=bool)
    if y.size == 0 or y.all() or not y.any():
        return math.nan
    fpr, tpr, _ = roc_curve(y, score)
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2.0))


def average_precision(truth, score) -> float:
    """Step-wise area under the precision-recall curve; NaN without positives."""
    y = np.asarray(truth, dtype=bool)
    if not y.any():
        return math.nan
    precision, recall, _ = pr_curve(y, score)
    return float(-np.sum(np.diff(recall) * precision[:-1]))


@dataclass
class Metrics:
    n: int  # tiles evaluated (nodata excluded)
    positives: int  # tiles the inventory makes positive
    tp: int
    fp: int
    tn: int
    fn: int
    precision: float
    recall: float
    f1: float
    accuracy: float
    auc: float  # NaN when the truth holds a single class
    average_precision: float

    def as_dict(self) -> dict:
        return asdict(self)


def _ratio(a: float, b: float) -> float:
    return float(a) / float(b) if b > 0 else 0.0


def compute_metrics(truth, predicted, score) -> Metrics:
    """truth/predicted: booleans per evaluated tile; score: its probability."""
    y = np.asarray(truth, dtype=bool)
    p = np.asarray(predicted, dtype=bool)
    tp = int(np.sum(y & p))
    fp = int(np.sum(~y & p))
    fn = int(np.sum(y & ~p))
    tn = int(np.sum(~y & ~p))
    precision = _ratio(tp, tp + fp)
    recall = _ratio(tp, tp + fn)
    f1 = _ratio(2 * tp, 2 * tp + fp + fn)
    return Metrics(int(y.size), int(y.sum()), tp, fp, tn, fn, precision, recall, f1,
                   _ratio(tp + tn, y.size), roc_auc(y, score), average_precision(y, score))


def outcomes(truth, predicted, evaluated) -> list[str]:
    """'TP'|'FP'|'FN'|'TN' per tile, 'nodata' where not evaluated."""
    out = []
    for t, p, e in zip(truth, predicted, evaluated):
        if not e:
            out.append(NODATA_OUTCOME)
        else:
            out.append(("T" if bool(t) == bool(p) else "F") + ("P" if p else "N"))
    return out
