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
