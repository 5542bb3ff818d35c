"""engine.evaluation, the runtime's numpy metrics, against scikit-learn on random
labels and scores with ties; and evaluate_tiles' rules for nodata and predictions."""
from __future__ import annotations

import math

import numpy as np
import pytest
from osgeo import ogr


def test_metrics_and_curves_match_scikit_learn():
    from sklearn import metrics as skm

    from sentinel_landslide.engine import evaluation as ev

    rng = np.random.default_rng(4)
    for _ in range(100):
        n = int(rng.integers(2, 80))
        y = rng.random(n) < rng.uniform(0.1, 0.9)
        s = np.round(rng.random(n), int(rng.integers(1, 4)))  # with ties
        pred = s >= 0.5
        m = ev.compute_metrics(y, pred, s)
        tn, fp, fn, tp = skm.confusion_matrix(y, pred, labels=[False, True]).ravel()
        assert (m.tp, m.fp, m.tn, m.fn) == (tp, fp, tn, fn)
        p, r, f, _ = skm.precision_recall_fscore_support(y, pred, average="binary", zero_division=0)
        assert (m.precision, m.recall, m.f1) == pytest.approx((p, r, f))
        if y.all() or not y.any():
            assert math.isnan(m.auc)
            continue
        assert m.auc == pytest.approx(skm.roc_auc_score(y, s))
        assert m.average_precision == pytest.approx(skm.average_precision_score(y, s))
        fpr, tpr, _ = ev.roc_curve(y, s)
        f2, t2, _ = skm.roc_curve(y, s, drop_intermediate=False)
        assert np.allclose(fpr, f2) and np.allclose(tpr, t2)
        pr, rc, _ = ev.pr_curve(y, s)
        p2, r2, _ = skm.precision_recall_curve(y, s)
        assert np.allclose(pr, p2) and np.allclose(rc, r2)


def test_outcomes():
    from sentinel_landslide.engine.evaluation import outcomes

    assert outcomes([1, 0, 1, 0, 1], [1, 1, 0, 0, 1], [1, 1, 1, 1, 0]) == ["TP", "FP", "FN", "TN", "nodata"]


def _square(x0, y0, x1, y1) -> bytes:
    return ogr.CreateGeometryFromWkt(f"POLYGON(({x0} {y0},{x1} {y0},{x1} {y1},{x0} {y1},{x0} {y0}))").ExportToWkb()


def test_evaluate_tiles_leaves_out_nodata_and_uses_flagged_without_threshold():
    from sentinel_landslide.core.errors import InputError
    from sentinel_landslide.engine.evaluation import evaluate_tiles

    tiles = [_square(i * 10, 0, i * 10 + 10, 10) for i in range(4)]
    inv = [_square(0, 0, 10, 10), _square(20, 0, 20.5, 10)]  # tile 0 all, tile 2 5 %
    ev = evaluate_tiles(tiles, inv, [0.9, 0.8, float("nan"), 0.1], ["ok", "ok", "nodata", None],
                        flagged=[True, False, False, True], min_fraction=0.01)
    assert ev.truth.tolist() == [True, False, True, False]
    assert ev.evaluated.tolist() == [True, True, False, True]  # a missing status counts where prob is finite
    assert ev.outcome == ["TP", "TN", "nodata", "FP"]  # flagged, not prob >= 0.5
    assert (ev.metrics.tp, ev.metrics.fp, ev.metrics.tn, ev.metrics.fn, ev.n_nodata) == (1, 1, 1, 0, 1)
    ev = evaluate_tiles(tiles, inv, [0.9, 0.8, float("nan"), 0.1], threshold=0.85, min_fraction=0.1)
    assert ev.truth.tolist() == [True, False, False, False] and ev.outcome == ["TP", "TN", "nodata", "TN"]
    with pytest.raises(InputError, match="nothing to evaluate"):
        evaluate_tiles(tiles, inv, [float("nan")] * 4, threshold=0.5)
    with pytest.raises(InputError, match="no polygons"):
        evaluate_tiles(tiles, [], [0.5] * 4, threshold=0.5)


def test_metrics_by_mode_match_scikit_learn_on_each_combination():
    """Random truth / predictions over a mix of combinations and nodata tiles: each row
    equals scikit-learn's figures on that combination's evaluated tiles."""
    from sklearn import metrics as skm

    from sentinel_landslide.engine.evaluation import metrics_by_mode

    rng = np.random.default_rng(9)
    names = np.array(["s2+desc+asc", "desc_post", "s2", None])
    modes = names[rng.integers(0, 4, 300)]
    evaluated = modes != None  # noqa: E711 (numpy element-wise)
    evaluated[:5] = False  # nodata tiles that still carry a mode string count as nodata
    y = rng.random(300) < 0.3
    pred = rng.random(300) < np.where(y, 0.7, 0.2)
    rows = metrics_by_mode(list(modes), y, pred, evaluated)
    assert [r.mode for r in rows] == ["s2+desc+asc", "s2", "desc_post", "nodata"]  # richest first, nodata last
    assert sum(r.tiles for r in rows) == 300
    for r in rows[:-1]:
        sel = (modes == r.mode) & evaluated
        assert r.tiles == r.evaluated == sel.sum()
        tn, fp, fn, tp = skm.confusion_matrix(y[sel], pred[sel], labels=[False, True]).ravel()
        assert (r.tp, r.fp, r.fn, r.tn, r.positives) == (tp, fp, fn, tn, y[sel].sum())
        p, rc, f, _ = skm.precision_recall_fscore_support(y[sel], pred[sel], average="binary", zero_division=0)
        assert (r.precision, r.recall, r.f1) == pytest.approx((p, rc, f))
    nod = rows[-1]
    assert nod.tiles == (~evaluated).sum() and nod.evaluated == 0 and (nod.tp, nod.fp, nod.fn) == (0, 0, 0)
    # the per-mode counts add up to the overall confusion matrix
    assert sum(r.tp for r in rows) == int(np.sum(y & pred & evaluated))


def test_evaluate_tiles_breaks_down_by_mode():
    from sentinel_landslide.engine.evaluation import evaluate_tiles

    tiles = [_square(i * 10, 0, i * 10 + 10, 10) for i in range(5)]
    inv = [_square(0, 0, 10, 10), _square(30, 0, 40, 10)]  # tiles 0 and 3
    ev = evaluate_tiles(tiles, inv, [0.9, 0.8, float("nan"), 0.2, 0.1], ["ok", "ok", "nodata", "ok", "ok"],
                        flagged=[True, True, False, False, False],
                        modes=["s2+desc", "desc_post", None, "desc_post", "s2+desc"])
    got = {r.mode: (r.tiles, r.tp, r.fp, r.fn, r.precision, r.recall, r.f1) for r in ev.by_mode}
    assert got == {"s2+desc": (2, 1, 0, 0, 1.0, 1.0, 1.0), "desc_post": (2, 0, 1, 1, 0.0, 0.0, 0.0),
                   "nodata": (1, 0, 0, 0, 0.0, 0.0, 0.0)}
    assert evaluate_tiles(tiles, inv, [0.5] * 5, threshold=0.5).by_mode is None  # a grid without modes
