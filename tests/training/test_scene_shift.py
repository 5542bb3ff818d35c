"""training/scene_shift.py: weights that make a training table resemble a scene, on SYNTHETIC
Gaussian-like features (no QGIS)."""
from __future__ import annotations

import numpy as np
import pytest

from sentinel_landslide.training.scene_shift import (
    MIN_ESS_SHARE,
    VERDICTS_PER_CLASS,
    clip_weights,
    ess_of,
    needs_verdicts,
    scene_weights,
)


def _base(n=4000, d=12, seed=1):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    X[:, 1] = np.exp(X[:, 1])  # a skewed column, as band statistics are
    return X


def test_shifted_scene_weights_undo_the_shift():
    """The scene's x0 is shifted by 0.7 sd (e.g. brighter terrain), the other columns are as in
    training: the weighted training mean and quartiles of x0 move to the scene's."""
    base = _base()
    scene = _base(n=1500, seed=3)
    scene[:, 0] += 0.7
    sw = scene_weights(base, scene, seed=0)
    w = sw.weights
    assert w.shape == (len(base),) and w.dtype == np.float64
    assert np.isclose(w.mean(), 1.0) and np.all(w >= 0)
    gap_before = abs(base[:, 0].mean() - scene[:, 0].mean())
    gap_after = abs(np.average(base[:, 0], weights=w) - scene[:, 0].mean())
    assert gap_before > 0.5 and gap_after < 0.2 * gap_before  # at least 80 % of the shift undone

    def wq(x, q):  # weighted quantile
        o = np.argsort(x)
        c = np.cumsum(w[o]) / w.sum()
        return x[o][np.searchsorted(c, q)]

    for q in (0.25, 0.5, 0.75):
        assert abs(wq(base[:, 0], q) - np.quantile(scene[:, 0], q)) < 0.12
        assert abs(np.quantile(base[:, 0], q) - np.quantile(scene[:, 0], q)) > 0.3
    # the columns the selection did not touch stay where they were
    assert abs(np.average(base[:, 2], weights=w) - scene[:, 2].mean()) < 0.1
    assert 0.5 < sw.domain_auc < 0.97 and sw.ess_share > MIN_ESS_SHARE
    assert needs_verdicts(sw) is None
    assert "effective sample size" in sw.note and f"of {len(base)} training rows" in sw.note


def test_identical_scene_gives_weights_near_one():
    base = _base()
    scene = _base(n=2000, seed=7)  # the same distribution
    sw = scene_weights(base, scene, seed=0)
    assert sw.ess_share > 0.9 and sw.ess == pytest.approx(ess_of(sw.weights))
    assert abs(sw.domain_auc - 0.5) < 0.05
    lo, hi = np.quantile(sw.weights, [0.05, 0.95])
    assert lo > 0.6 and hi < 1.6
    assert needs_verdicts(sw) is None
    assert sw.n_base == len(base) and sw.n_scene == len(scene)


def test_scene_far_outside_the_training_data_warns_plainly():
    """A scene whose statistics lie beyond anything in training (4 sd out in three columns):
    tiny ESS, the plain warning with the verdicts needed, and no fake numbers."""
    base = _base()
    scene = _base(n=1500, seed=9)
    scene[:, :3] += 4.0
    sw = scene_weights(base, scene, seed=0, clip=20.0)
    assert sw.ess_share < MIN_ESS_SHARE
    assert sw.domain_auc > 0.97
    assert np.all(np.isfinite(sw.weights)) and np.isclose(sw.weights.mean(), 1.0)
    assert sw.weights.max() <= 20.0 * 1.001  # the cap holds
    msg = needs_verdicts(sw)
    assert msg is not None and "unlike the training data" in msg
    assert f"{VERDICTS_PER_CLASS} landslide and {VERDICTS_PER_CLASS} non-landslide" in msg
    assert "landslide:adapt" in msg
    assert "unlike the training data" in sw.note


def test_weights_are_deterministic_and_cross_fitted():
    base = _base(n=1500)
    scene = _base(n=600, seed=5)
    scene[:, 3] += 0.7
    a = scene_weights(base, scene, seed=4)
    b = scene_weights(base, scene, seed=4)
    assert np.array_equal(a.weights, b.weights) and a.domain_auc == b.domain_auc and a.note == b.note
    c = scene_weights(base, scene, seed=5)  # other folds: a little different, the same picture
    assert not np.array_equal(a.weights, c.weights)
    assert np.corrcoef(a.weights, c.weights)[0, 1] > 0.9


def test_missing_channels_are_told_apart_not_imputed_into_the_scene():
    """Training rows without some channel (NaN columns, as patches exported without SAR) are
    unlike a scene that has it: they get little weight, and no weight is NaN."""
    base = _base()
    lacking = np.zeros(len(base), bool)
    lacking[::4] = True
    base[lacking, 6:] = np.nan
    scene = _base(n=1500, seed=8)
    sw = scene_weights(base, scene, seed=0)
    assert np.all(np.isfinite(sw.weights))
    assert sw.weights[lacking].mean() < 0.2 * sw.weights[~lacking].mean()
    # a scene with the same missingness as training treats them alike
    scene2 = scene.copy()
    scene2[::4, 6:] = np.nan
    sw2 = scene_weights(base, scene2, seed=0)
    assert 0.7 < sw2.weights[lacking].mean() / sw2.weights[~lacking].mean() < 1.4


def test_clip_rule_and_too_few_scene_tiles():
    w = clip_weights(np.array([1000.0] + [1.0] * 99), 20.0)
    assert np.isclose(w.mean(), 1.0) and w.max() <= 20.0 * 1.001 and w[0] == w.max()
    assert ess_of(np.ones(50)) == pytest.approx(50.0)
    sw = scene_weights(_base(n=200), _base(n=4, seed=2), seed=0)
    assert np.all(sw.weights == 1.0) and sw.ess == 200 and "not estimated" in sw.note
    with pytest.raises(ValueError):
        scene_weights(_base(n=50), _base(n=50)[:, :3])
