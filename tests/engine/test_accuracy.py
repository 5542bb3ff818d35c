"""Stratified accuracy and area estimates (engine/accuracy.py, Olofsson et al. 2014) and the
stratified sample (engine/sampling.py): a hand-computed example and a seeded simulation."""
from __future__ import annotations

import math

import numpy as np
import pytest


def test_hand_computed_example():
    """1000 scored tiles: N1 = 100 flagged, N0 = 900 not (W1 = 0.1, W0 = 0.9).
    Sample: 20 flagged tiles reviewed, 15 confirmed (q1 = 0.75); 30 unflagged, 3 confirmed
    (q0 = 0.1).  By hand:
      OA = 0.1 * 0.75 + 0.9 * (1 - 0.1) = 0.885
      V(q1) = 0.75 * 0.25 / 19 = 0.0098684;  V(q0) = 0.1 * 0.9 / 29 = 0.0031034
      V(OA) = 0.01 * 0.0098684 + 0.81 * 0.0031034 = 0.0026125 -> SE 0.05111
      UA = 0.75, SE = sqrt(0.0098684) = 0.09934
      p.1 = 0.075 + 0.09 = 0.165 -> 165 landslide tiles, SE = 1000 * 0.05111 = 51.11 tiles
      PA = 0.075 / 0.165 = 0.45455
      V(PA) = [100^2 (1 - 0.45455)^2 0.0098684 + 0.45455^2 900^2 0.0031034] / 165^2
            = (29.361 + 519.38) / 27225 = 0.020156 -> SE 0.14197
      F1 = 2 * 0.075 / (0.1 + 0.075 + 0.09) = 0.56604
      dF1/dq1 = (2*0.1*0.265 - 2*0.1*0.75*0.1) / 0.265^2 = 0.54112
      dF1/dq0 = -2*0.1*0.75*0.9 / 0.265^2 = -1.92239
      V(F1) = 0.54112^2 * 0.0098684 + 1.92239^2 * 0.0031034 = 0.014359 -> SE 0.11983
      tiles of 0.4096 km2: area 165 * 0.4096 = 67.58 km2, SE 20.94 km2"""
    from sentinel_landslide.engine.accuracy import stratified_accuracy

    r = stratified_accuracy(100, 900, 15, 20, 3, 30, tile_area=0.4096)
    assert r.overall.value == pytest.approx(0.885) and r.overall.se == pytest.approx(0.05111, abs=1e-5)
    assert r.users.value == pytest.approx(0.75) and r.users.se == pytest.approx(0.09934, abs=1e-5)
    assert r.producers.value == pytest.approx(0.45455, abs=1e-5) and r.producers.se == pytest.approx(0.14197, abs=1e-5)
    assert r.f1.value == pytest.approx(0.56604, abs=1e-5) and r.f1.se == pytest.approx(0.11983, abs=1e-5)
    assert r.tiles.value == pytest.approx(165.0) and r.tiles.se == pytest.approx(51.11, abs=0.01)
    assert r.area.value == pytest.approx(67.58, abs=0.01) and r.area.se == pytest.approx(20.94, abs=0.01)
    lo, hi = r.overall.ci
    assert (lo, hi) == pytest.approx((0.885 - 1.96 * 0.05111, 0.885 + 1.96 * 0.05111), abs=1e-3)
    assert r.rows()[0][0] == "Overall accuracy"


def test_from_tiles_uses_only_sample_verdicts_and_ignores_unsure():
    from sentinel_landslide.engine.accuracy import accuracy_from_tiles

    flagged = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0, 0], bool)
    scored = np.array([1] * 9 + [0], bool)  # the last tile is nodata
    sample = np.array([1, 1, 1, 0, 1, 1, 1, 0, 0, 1], bool)
    labels = np.array([1, 0, 1, 1, 0, 1, np.nan, 1, np.nan, 1])  # tile 3 and 7: reviewed, not in the sample
    r = accuracy_from_tiles(flagged, scored, sample, labels)
    assert r.N == (4, 5) and r.n == (3, 2) and r.n_landslide == (2, 1)


def test_clear_messages_without_sample_or_verdicts():
    from sentinel_landslide.core.errors import InputError
    from sentinel_landslide.engine.accuracy import accuracy_from_tiles

    f = np.array([1, 1, 0, 0], bool)
    s = np.ones(4, bool)
    with pytest.raises(InputError, match="no sample tiles"):
        accuracy_from_tiles(f, s, np.zeros(4, bool), np.full(4, np.nan))
    with pytest.raises(InputError, match="No sample tile has a verdict"):
        accuracy_from_tiles(f, s, s, np.full(4, np.nan))
    with pytest.raises(InputError, match="at least 2 verdicts"):
        accuracy_from_tiles(f, s, s, np.array([1, np.nan, 0, 0]))


def test_sample_is_stratified_seeded_and_skips_nodata():
    from sentinel_landslide.engine.sampling import draw_sample

    rng = np.random.default_rng(0)
    flagged = rng.random(500) < 0.1
    scored = rng.random(500) < 0.95
    a = draw_sample(flagged, scored, 20, 30, seed=5)
    assert np.array_equal(a, draw_sample(flagged, scored, 20, 30, seed=5))
    assert not np.array_equal(a, draw_sample(flagged, scored, 20, 30, seed=6))
    assert scored[a].all() and len(set(a)) == len(a)
    assert flagged[a].sum() == 20 and (~flagged[a]).sum() == 30
    # capped at the stratum size
    b = draw_sample(flagged, scored, 10_000, 0)
    assert set(b) == set(np.flatnonzero(flagged & scored))


def test_simulation_intervals_cover_the_truth_about_95_percent():
    """Known truth, 2000 stratified samples (seeded): the 95 % intervals of OA, UA, PA, F1
    and the landslide tile count cover the population value about 95 % of the time."""
    from sentinel_landslide.engine.accuracy import stratified_accuracy
    from sentinel_landslide.engine.sampling import draw_sample

    rng = np.random.default_rng(2014)
    N = 3000
    flagged = np.zeros(N, bool)
    flagged[:300] = True
    truth = np.zeros(N, bool)
    truth[:210] = True  # 70 % of the flagged tiles are landslides
    truth[300:300 + 270] = True  # 10 % of the unflagged ones are missed landslides
    tp, fp, fn = 210, 90, 270
    true = {"overall": (N - fp - fn) / N, "users": tp / (tp + fp), "producers": tp / (tp + fn),
            "f1": 2 * tp / (2 * tp + fp + fn), "tiles": tp + fn}
    scored = np.ones(N, bool)
    reps, hits = 2000, {k: 0 for k in true}
    for _rep in range(reps):
        idx = draw_sample(flagged, scored, 60, 120, seed=int(rng.integers(1 << 31)))
        s1, s0 = idx[flagged[idx]], idx[~flagged[idx]]
        r = stratified_accuracy(300, N - 300, int(truth[s1].sum()), len(s1), int(truth[s0].sum()), len(s0))
        for k, v in true.items():
            lo, hi = getattr(r, k).ci
            hits[k] += lo <= v <= hi
    cover = {k: h / reps for k, h in hits.items()}
    for k, c in cover.items():
        assert 0.92 <= c <= 0.985, (k, cover)
    print("coverage", cover)
    assert not math.isnan(sum(cover.values()))


def _arrays_from_counts(N1, N0, n11, n1, n01, n0):
    """Tile arrays of a grid whose sample is the counts of the hand-computed example."""
    flagged = np.r_[np.ones(N1, bool), np.zeros(N0, bool)]
    labels = np.full(N1 + N0, np.nan)
    labels[:n1] = np.r_[np.ones(n11), np.zeros(n1 - n11)]
    labels[N1:N1 + n0] = np.r_[np.ones(n01), np.zeros(n0 - n01)]
    picks = ["random" if np.isfinite(v) else "" for v in labels]
    return flagged, np.ones(N1 + N0, bool), labels, picks


def test_design_accuracy_equals_olofsson_when_strata_are_the_map_classes():
    """Stehman's ratio estimators with the strata = today's map classes and no purposive
    verdicts give Olofsson's estimates and standard errors (the hand-computed example)."""
    from sentinel_landslide.engine.accuracy import design_accuracy, stratified_accuracy

    flagged, scored, labels, picks = _arrays_from_counts(100, 900, 15, 20, 3, 30)
    ref = stratified_accuracy(100, 900, 15, 20, 3, 30)
    r = design_accuracy(flagged, scored, labels, picks, flagged.astype(int))
    for k in ("overall", "users", "producers", "f1", "proportion", "tiles"):
        assert getattr(r, k).value == pytest.approx(getattr(ref, k).value, abs=1e-12), k
        assert getattr(r, k).se == pytest.approx(getattr(ref, k).se, rel=1e-9), k
    assert r.design == ""


def test_design_accuracy_after_rescoring_is_unbiased_where_todays_strata_are_not():
    """A sample drawn on yesterday's map, then the map re-scored (adapt): 300 tiles moved from
    'not flagged' to 'flagged'.  Over 1500 seeded draws the Stehman estimates of today's map's
    precision, recall, F1 and OA centre on the truth and their 95 % intervals cover it about
    95 % of the time (a little less for the ratios); weighting the same verdicts by today's classes is biased."""
    from sentinel_landslide.engine.accuracy import design_accuracy
    from sentinel_landslide.engine.sampling import draw_sample

    rng = np.random.default_rng(2014)
    N = 4000
    old = np.zeros(N, bool)
    old[:200] = True
    truth = np.zeros(N, bool)
    truth[:180] = True  # 180 of the 200 old flags are landslides
    truth[200:350] = True  # 150 missed by the old map ...
    truth[600:660] = True  # ... and 60 more
    new = old.copy()
    new[200:500] = True  # re-scoring flags 300 more tiles: the 150, and 150 that are not landslides
    tp, fp, fn = int((new & truth).sum()), int((new & ~truth).sum()), int((~new & truth).sum())
    true = {"users": tp / (tp + fp), "producers": tp / (tp + fn), "f1": 2 * tp / (2 * tp + fp + fn),
            "overall": (N - fp - fn) / N}
    scored = np.ones(N, bool)
    reps = 1500
    est = {k: [] for k in true}
    naive = {k: [] for k in true}
    hits = {k: 0 for k in true}
    for _ in range(reps):
        idx = draw_sample(old, scored, 50, 250, seed=int(rng.integers(1 << 31)))
        labels = np.full(N, np.nan)
        labels[idx] = truth[idx]
        picks = ["random" if np.isfinite(v) else "" for v in labels]
        r = design_accuracy(new, scored, labels, picks, old.astype(int))
        assert r.design.startswith("Stehman")
        for k, v in true.items():
            e = getattr(r, k)
            est[k].append(e.value)
            hits[k] += e.ci[0] <= v <= e.ci[1]
        # today's classes as strata (what 0.4 did): the same verdicts, the wrong weights
        rn = design_accuracy(new, scored, labels, picks, new.astype(int))
        for k in true:
            naive[k].append(getattr(rn, k).value)
    for k, v in true.items():
        assert abs(np.mean(est[k]) - v) < 0.01, (k, np.mean(est[k]), v)
        # Wald intervals of ratio estimators run short where a cell is rare in the sample
        # (here ~4 of the 60 missed landslides among 250 unflagged draws): 0.87 is the floor
        assert 0.87 <= hits[k] / reps <= 0.985, (k, hits[k] / reps)
    print({k: (round(v, 3), round(float(np.mean(est[k])), 3), round(float(np.mean(naive[k])), 3), hits[k] / reps)
           for k, v in true.items()})
    assert max(abs(np.mean(naive[k]) - v) for k, v in true.items()) > 0.1


def test_design_accuracy_counts_purposive_verdicts_for_their_own_tiles():
    """Purposive verdicts weigh 1 and random ones M_h / n_h (engine.design's rule): the share
    equals estimate_share's point estimate, and a purposive verdict never needs a partner."""
    from sentinel_landslide.engine.accuracy import design_accuracy
    from sentinel_landslide.engine.design import estimate_share

    rng = np.random.default_rng(7)
    N = 600
    flagged = rng.random(N) < 0.1
    scored = np.ones(N, bool)
    truth = (rng.random(N) < np.where(flagged, 0.6, 0.05)).astype(float)
    labels = np.full(N, np.nan)
    picks = [""] * N
    for h, k in ((True, 12), (False, 25)):
        for i in rng.choice(np.flatnonzero(flagged == h), k, replace=False):
            labels[i], picks[i] = truth[i], "random"
    for i in rng.choice(np.flatnonzero(np.isnan(labels)), 10, replace=False):
        labels[i], picks[i] = truth[i], "uncertain"
    r = design_accuracy(flagged, scored, labels, picks, flagged.astype(int))
    share = estimate_share(labels, picks, flagged.astype(int), scored)
    assert r.tiles.value == pytest.approx(share.count, rel=1e-12)
    assert "10 purposive verdicts" in r.design
