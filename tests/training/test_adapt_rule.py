"""training/adapt_rule.py: the adapted threshold from a few dozen verdicts, on SYNTHETIC
regions with a known prevalence and a known F1-optimal threshold."""
from __future__ import annotations

import math

import numpy as np
import pytest

from sentinel_landslide.engine.design import design_weights, estimate_share
from sentinel_landslide.engine.review_select import next_batch
from sentinel_landslide.engine.verdicts import PICK_RANDOM
from sentinel_landslide.training import adapt_rule as R
from sentinel_landslide.training.metrics import prf


def _region(seed, N=4000, pi=0.15):
    """Known prevalence ~pi; the model ranks with AUC ~0.9 but its probabilities are far from
    calibrated for this region (a threshold of 0.5 flags a few percent of the tiles)."""
    rng = np.random.default_rng(seed)
    y = (rng.random(N) < pi).astype(np.int64)
    s = rng.normal(size=N) + 1.8 * y
    return y, 1 / (1 + np.exp(-(1.3 * s - 3.2)))


def _verdicts(y, p, seed, n_purposive=40, n_random=30, t0=0.5):
    """The analyst reviews the n_purposive tiles nearest the map's threshold (purposive) and a
    stratified random sample drawn by next_batch."""
    N = len(y)
    stratum = (p >= t0).astype(np.int64)
    scored = np.ones(N, dtype=bool)
    labels = np.full(N, np.nan)
    picks = [""] * N
    purp = np.argsort(np.abs(np.log(p / (1 - p)) - math.log(t0 / (1 - t0))))[:n_purposive]
    labels[purp] = y[purp]
    for i in purp:
        picks[i] = "uncertain"
    idx, pk = next_batch(p, stratum, scored, np.isfinite(labels), None, n_random, threshold=t0, random_share=1.0,
                         seed=seed, in_random=np.zeros(N, dtype=bool))
    labels[idx] = y[idx]
    for i, q in zip(idx, pk):
        picks[i] = q
    return labels, picks, stratum, scored


def _rule(y, p, labels, picks, stratum, scored):
    v = np.flatnonzero(np.isfinite(labels))
    share = estimate_share(labels, picks, stratum, scored)
    w = design_weights(labels, picks, stratum, scored)
    ch = R.choose_fraction(y[v], p[v], w[v], np.array([picks[i] == PICK_RANDOM for i in v]),
                           R.fraction_curve([p]), share, p)
    return R.threshold_for_fraction(p, ch.fraction), ch, share


def test_threshold_rule_lands_near_the_true_f1_optimum_and_a_purposive_as_random_rule_does_not():
    """20 SYNTHETIC regions (prevalence 0.15), 40 purposive verdicts near the map's threshold
    (three quarters landslides) + 30 stratified random ones: the design-weighted rule's
    threshold is on average within 0.03 of the true F1-optimal one; the same rule with the
    purposive verdicts weighted as random ones flags far too much (threshold biased low)."""
    ok, naive, true_t, share_err, naive_share_err = [], [], [], [], []
    for seed in range(20):
        y, p = _region(seed)
        f1 = R.weighted_f1_curve(y, p, np.ones(len(y)))  # the population's F1 at every threshold
        assert f1.max() == pytest.approx(max(prf(y, p, t)[0] for t in R.THRESHOLD_GRID[::10]), abs=0.05)
        true_t.append(R.THRESHOLD_GRID[int(np.argmax(f1))])
        labels, picks, stratum, scored = _verdicts(y, p, seed)
        t, ch, share = _rule(y, p, labels, picks, stratum, scored)
        assert ch.random_sample and 0 < ch.lam < 1
        ok.append(t)
        share_err.append(share.share - y.mean())
        as_random = [PICK_RANDOM if np.isfinite(labels[i]) else "" for i in range(len(y))]
        t_bad, _, share_bad = _rule(y, p, labels, as_random, stratum, scored)
        naive.append(t_bad)
        naive_share_err.append(share_bad.share - y.mean())
    true_t, ok, naive = np.array(true_t), np.array(ok), np.array(naive)
    assert abs(np.mean(ok - true_t)) < 0.03, (ok.mean(), true_t.mean())
    assert np.mean(naive - true_t) < -0.05, (naive.mean(), true_t.mean())
    assert abs(np.mean(share_err)) < 0.01 and np.mean(naive_share_err) > 0.03


def test_three_verdicts_of_each_class_shrink_toward_the_estimated_share():
    y, p = _region(3)
    labels, picks, stratum, scored = _verdicts(y, p, 3, n_purposive=0, n_random=30)
    v = np.flatnonzero(np.isfinite(labels))
    # keep exactly 3 random landslides and 3 random others
    pos, neg = [i for i in v if y[i] == 1][:3], [i for i in v if y[i] == 0][:3]
    assert len(pos) == 3 and len(neg) == 3
    keep = np.full(len(y), np.nan)
    keep[pos + neg] = y[pos + neg]
    t, ch, share = _rule(y, p, keep, picks, stratum, scored)
    assert ch.lam == pytest.approx(3 / (3 + R.SHRINK_K))
    assert ch.fraction == pytest.approx(ch.lam * ch.f_f1 + (1 - ch.lam) * ch.f_share)
    assert 0.001 <= t <= 0.999 and np.isfinite(share.share)


def test_purposive_verdicts_only_still_choose_a_threshold_and_say_so():
    y, p = _region(5)
    labels, picks, stratum, scored = _verdicts(y, p, 5, n_purposive=30, n_random=0)
    t, ch, share = _rule(y, p, labels, picks, stratum, scored)
    assert not ch.random_sample and math.isnan(ch.f_share) and ch.lam == 1.0
    assert math.isnan(share.share) and "no random verdict" in share.note
    assert ch.fraction >= share.lo  # at least what the confirmed verdicts prove
    assert 0.001 <= t <= 0.999
    assert "Purposive verdicts only" in R.THRESHOLD_RULE


def test_share_fraction_flags_the_share_for_a_sharp_model_and_more_for_an_unsure_one():
    rng = np.random.default_rng(0)
    sharp = np.concatenate([np.full(200, 0.999), np.full(800, 0.001)])
    assert R.share_fraction(sharp, 0.2) == pytest.approx(0.2, abs=0.01)
    unsure = 1 / (1 + np.exp(-rng.normal(size=1000) * 0.7))
    assert R.share_fraction(unsure, 0.2) > 0.25
    p = rng.random(500)
    assert (p >= R.threshold_for_fraction(p, 0.3)).mean() == pytest.approx(0.3, abs=0.003)


def _synthetic_combo(seed: int, ns: int, shift: float, cut: float, per_class: int, slope: float):
    """A SYNTHETIC region: 400 base rows, ``ns`` scene tiles shifted by ``shift`` in feature 0
    (landslide where feature 0 + noise > ``cut``), ``per_class`` random verdicts of each class,
    base members a logistic of feature 0 with ``slope``.  Returns (make_combo, share estimate)."""
    rng = np.random.default_rng(seed)
    nb = 400
    Xb = rng.normal(size=(nb, 3))
    yb = (Xb[:, 0] + 0.3 * rng.normal(size=nb) > 1).astype(np.int64)
    Xs = rng.normal(size=(ns, 3)) + np.array([shift, 0, 0])
    ys = (Xs[:, 0] + 0.3 * rng.normal(size=ns) > cut).astype(np.int64)
    idx = np.concatenate([np.flatnonzero(ys == 1)[:per_class], np.flatnonzero(ys == 0)[:per_class]])
    labels = np.full(ns, np.nan)
    labels[idx] = ys[idx]
    picks = [PICK_RANDOM if i in idx else "" for i in range(ns)]
    stratum = np.zeros(ns, dtype=np.int64)
    scored = np.ones(ns, dtype=bool)
    share = estimate_share(labels, picks, stratum, scored)
    w = design_weights(labels, picks, stratum, scored)
    p = 1 / (1 + np.exp(-(Xs[:, 0] - 1) * slope))
    base = {"lgbm": p, "xgb": p.copy()}

    def combo():
        return R.Combo(["a", "b", "c"], [("lgbm", "lightgbm"), ("xgb", "xgboost")], {"lgbm": 1.0, "xgb": 1.0},
                       Xb, yb, np.ones(nb), Xs[idx], ys[idx], w[idx], np.ones(len(idx), dtype=bool), Xs,
                       {k: v[idx] for k, v in base.items()}, base, lambda kind: 15, min_leaf=5)
    return combo, share


def test_evaluate_candidates_from_three_verdicts_per_class_deterministic():
    """Tiny SYNTHETIC feature tables: every candidate is evaluated (threshold only, scene
    weights, refits at 0.1 / 0.3 / 0.5 with 3 folds), the winner has the best design-weighted
    F1, and the same inputs give the same result."""
    combo, share = _synthetic_combo(1, 150, 0.5, 1.2, 3, 3)
    best, cands = R.evaluate(combo(), share, seed=0)
    names = [c.name for c in cands]
    assert set(names) == {"threshold only", "scene weights", "refit 0.1", "refit 0.3", "refit 0.5"}
    assert best is cands[0]
    top = max(c.choice.f1_design for c in cands)
    se = (top * (1 - top) / 3) ** 0.5
    assert best.choice.f1_design >= top - se - 1e-9  # within one standard error of the best ...
    simpler = names.index(best.name)  # ... and no simpler candidate is (evaluation order = simplicity)
    order = ["threshold only", "scene weights", "refit 0.1", "refit 0.3", "refit 0.5"]
    assert all(c.choice.f1_design < top - se for c in cands if order.index(c.name) < order.index(best.name))
    assert simpler == 0
    best2, cands2 = R.evaluate(combo(), share, seed=0)
    assert [c.name for c in cands2] == names and best2.choice.fraction == best.choice.fraction


def test_the_base_package_is_kept_only_where_no_change_is_measurably_better():
    """SYNTHETIC: 12 random verdicts per class.  A base threshold that fits the region is kept
    (the simplest candidate within one standard error); one that flags almost nothing, as on
    the unfamiliar real scene of issue 19, loses to a change."""
    make_combo, share = _synthetic_combo(3, 200, 0.0, 1.0, 12, 4)
    combo = make_combo()
    best, cands = R.evaluate(combo, share, seed=0, base_threshold=0.5)
    assert cands[-1].name != R.BASE_CANDIDATE and R.BASE_CANDIDATE in [c.name for c in cands]
    assert best.name == R.BASE_CANDIDATE and best.share is None and best.choice.t_cv == 0.5
    best_bad, cands_bad = R.evaluate(combo, share, seed=0, base_threshold=0.999)  # flags (almost) nothing
    base_bad = next(c for c in cands_bad if c.name == R.BASE_CANDIDATE)
    assert base_bad.choice.f1_design < 0.2 and best_bad.name != R.BASE_CANDIDATE
    assert best_bad.choice.f1_design > 0.6
