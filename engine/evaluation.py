"""Evaluate a tile grid against a landslide inventory: ground truth per tile (engine.truth),
confusion counts, precision/recall/F1, ROC and precision-recall curves.

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

from ..core.channels import COMBINATIONS
from ..core.errors import InputError
from .truth import is_landslide, tile_landslide_fractions

OUTCOMES = ("TP", "FP", "FN", "TN")
NODATA_OUTCOME = "nodata"


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


@dataclass
class ModeMetrics:
    """The confusion counts and ratios of the tiles one input combination scored (the
    grid's ``mode``; ``mode`` "nodata" counts the tiles nothing scored, with no metrics)."""

    mode: str
    tiles: int  # tiles of this mode in the grid
    evaluated: int  # of them with a probability (all but nodata)
    positives: int  # evaluated tiles the inventory makes positive
    tp: int
    fp: int
    fn: int
    tn: int
    precision: float
    recall: float
    f1: float

    def as_dict(self) -> dict:
        return asdict(self)


def metrics_by_mode(modes, truth, predicted, evaluated) -> list[ModeMetrics]:
    """Per ``mode`` value (None / empty: "nodata"): tiles, TP, FP, FN, TN, precision,
    recall and F1 over its evaluated tiles; the combinations richest first (most channels,
    then with Sentinel-2), unknown names after them, "nodata" last.
    Tiles not evaluated (status nodata) whatever their mode count under "nodata"."""
    y = np.asarray(truth, dtype=bool)
    p = np.asarray(predicted, dtype=bool)
    e = np.asarray(evaluated, dtype=bool)
    if not (len(modes) == y.size == p.size == e.size):
        raise ValueError("modes, truth, predicted and evaluated need one value per tile")
    keys = np.array([str(m) if (m not in (None, "") and ev) else NODATA_OUTCOME for m, ev in zip(modes, e)],
                    dtype=object)
    ranked = sorted(COMBINATIONS, key=lambda c: (-len(c.channels), not c.s2, COMBINATIONS.index(c)))
    order = {c.name: i for i, c in enumerate(ranked)}
    names = sorted(set(keys), key=lambda k: (k == NODATA_OUTCOME, order.get(k, len(order)), k))
    out = []
    for name in names:
        sel = keys == name
        ev = sel & e
        tp, fp = int(np.sum(y & p & ev)), int(np.sum(~y & p & ev))
        fn, tn = int(np.sum(y & ~p & ev)), int(np.sum(~y & ~p & ev))
        out.append(ModeMetrics(name, int(sel.sum()), int(ev.sum()), int(np.sum(y & ev)), tp, fp, fn, tn,
                               _ratio(tp, tp + fp), _ratio(tp, tp + fn), _ratio(2 * tp, 2 * tp + fp + fn)))
    return out


def outcomes(truth, predicted, evaluated) -> list[str]:
    """'TP'|'FP'|'FN'|'TN' per tile, 'nodata' where not evaluated."""
    out = []
    for t, p, e in zip(truth, predicted, evaluated):
        if not e:
            out.append(NODATA_OUTCOME)
        else:
            out.append(("T" if bool(t) == bool(p) else "F") + ("P" if p else "N"))
    return out


@dataclass
class Evaluation:
    """Everything landslide:evaluate writes, per tile (all tiles) and over evaluated tiles."""

    frac: np.ndarray  # landslide area fraction per tile
    probs: np.ndarray  # NaN where detect gave none
    truth: np.ndarray  # is_landslide(frac, min_fraction)
    predicted: np.ndarray
    evaluated: np.ndarray  # status 'ok' and a finite probability
    outcome: list
    metrics: Metrics
    n_nodata: int
    warnings: list
    by_mode: list | None = None  # [ModeMetrics], when the grid has a mode per tile

    @property
    def y(self):
        return self.truth[self.evaluated]

    @property
    def score(self):
        return self.probs[self.evaluated]


def evaluate_tiles(tiles_wkb: list, inventory_wkb: list, probs, status=None, flagged=None,
                   threshold: float | None = None, min_fraction: float = 0.01, progress=None,
                   is_cancelled=None, modes=None) -> Evaluation:
    """Truth, predictions and metrics of a detect grid against an inventory (same CRS).

    probs: probability per tile (NaN for none); status: detect's status per tile (None, or
    None entries: 'ok' where the probability is finite); flagged: detect's decision per tile, used when
    ``threshold`` is None (else ``prob >= threshold``); modes: detect's ``mode`` per tile
    (the input combination that scored it), for the per-combination breakdown.  Raises InputError when nothing
    can be evaluated, Cancelled when ``is_cancelled()`` turns True."""
    if not inventory_wkb:
        raise InputError("The landslide inventory has no polygons.")
    if not len(tiles_wkb):
        raise InputError("The grid has no tiles.")
    if any(not w for w in tiles_wkb):
        raise InputError("Some grid tiles have no geometry: is this the output of detect?")
    warnings = []
    frac = tile_landslide_fractions(tiles_wkb, inventory_wkb, progress=progress, is_cancelled=is_cancelled)
    if not np.any(frac > 0):
        warnings.append("No inventory polygon overlaps the grid: every tile is negative. "
                        "Is it the inventory of this area (its CRS is read from the layer)?")
    probs = np.asarray(probs, dtype=np.float64)
    finite = np.isfinite(probs)
    if status is None:
        status = [None] * len(probs)
    # a tile without a status (not detect's output) counts where it has a probability
    evaluated = np.array([s is None or s == "ok" for s in status], dtype=bool) & finite
    truth = is_landslide(frac, min_fraction)
    if threshold is not None:
        predicted = np.where(finite, probs, -1.0) >= threshold
    elif flagged is None:
        raise InputError("Give a probability threshold or the grid's 'flagged' decisions.")
    else:
        predicted = np.asarray(flagged, dtype=bool)
    if not evaluated.any():
        raise InputError("Every tile of the grid is 'nodata': there is nothing to evaluate.")
    m = compute_metrics(truth[evaluated], predicted[evaluated], probs[evaluated])
    by_mode = None
    if modes is not None:
        by_mode = metrics_by_mode(list(modes), truth, predicted, evaluated)
    return Evaluation(frac, probs, truth, predicted, evaluated, outcomes(truth, predicted, evaluated), m,
                      int((~evaluated).sum()), warnings, by_mode)
