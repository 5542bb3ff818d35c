"""engine/review_select.py: the review panel's next batch (random within strata, then informative)
and engine/design.py's running estimate of the region's landslide share, on SYNTHETIC tiles."""
from __future__ import annotations

import math

import numpy as np
import pytest

from sentinel_landslide.engine.design import design_weights, estimate_share
from sentinel_landslide.engine.review_select import next_batch
from sentinel_landslide.engine.verdicts import PICK_INFORMATIVE, PICK_RANDOM


def _region(n=600, seed=0, flagged_share=0.08):
    rng = np.random.default_rng(seed)
    feats = rng.normal(size=(n, 4))
    prob = 1 / (1 + np.exp(-(feats[:, 0] * 1.5 - 2.0)))
    stratum = (prob >= np.quantile(prob, 1 - flagged_share)).astype(np.int64)
    scored = np.ones(n, dtype=bool)
    scored[:7] = False
    prob[:7] = np.nan
    return prob, stratum, scored, feats


def test_batch_random_within_strata_then_informative_no_repeats_deterministic():
    prob, stratum, scored, feats = _region()
    reviewed = np.zeros(len(prob), dtype=bool)
    idx, picks = next_batch(prob, stratum, scored, reviewed, feats, 20, threshold=0.5, seed=3)
    assert len(idx) == 20 and len(set(idx.tolist())) == 20
    assert picks[:10] == [PICK_RANDOM] * 10 and picks[10:] == [PICK_INFORMATIVE] * 10
    assert scored[idx].all()
    rand = idx[:10]
    # both strata get random tiles: the rare flagged class too (compromise allocation)
    n1 = int(stratum[rand].sum())
    assert 2 <= n1 <= 5, n1
    again, picks2 = next_batch(prob, stratum, scored, reviewed, feats, 20, threshold=0.5, seed=3)
    assert np.array_equal(idx, again) and picks == picks2
    other, _ = next_batch(prob, stratum, scored, reviewed, feats, 20, threshold=0.5, seed=4)
    assert not np.array_equal(np.sort(idx[:10]), np.sort(other[:10]))
    # a second round never repeats a reviewed tile, and keeps both strata in the cumulative sample
    reviewed[idx] = True
    idx2, picks2 = next_batch(prob, stratum, scored, reviewed, feats, 20, threshold=0.5, seed=4)
    assert not reviewed[idx2].any() and len(set(idx2.tolist())) == 20


def test_random_part_is_uniform_within_each_stratum():
    """Each unreviewed tile of a stratum is drawn equally often (a simple random sample), whatever
    its probability: seeded replicates, counts compared with the uniform expectation."""
    prob, stratum, scored, feats = _region(n=120, seed=1, flagged_share=0.25)
    reviewed = np.zeros(len(prob), dtype=bool)
    reviewed[scored & (prob > 0.6)] = True  # purposive reviews of the most probable tiles
    counts = np.zeros(len(prob))
    reps = 400
    for s in range(reps):
        idx, picks = next_batch(prob, stratum, scored, reviewed, None, 10, threshold=0.3, random_share=1.0, seed=s,
                                in_random=np.zeros(len(prob), dtype=bool))
        assert all(p == PICK_RANDOM for p in picks)
        counts[idx] += 1
    assert counts[reviewed | ~scored].sum() == 0
    for h in (0, 1):
        pool = scored & ~reviewed & (stratum == h)
        c = counts[pool]
        # the same expected count for every tile of the stratum; chi-square style bound
        assert c.std() / c.mean() < 0.35, (h, c.mean(), c.std())
        # no relation between being drawn and the probability inside the stratum
        assert abs(np.corrcoef(c, prob[pool])[0, 1]) < 0.35


def test_informative_part_is_uncertain_and_diverse():
    prob, stratum, scored, feats = _region(n=800, seed=2)
    reviewed = np.zeros(len(prob), dtype=bool)
    idx, picks = next_batch(prob, stratum, scored, reviewed, feats, 12, threshold=0.3, random_share=0.0, seed=0)
    assert picks == [PICK_INFORMATIVE] * 12
    logit = np.log(prob / (1 - prob))
    dist = np.abs(logit - np.log(0.3 / 0.7))
    free = scored & ~reviewed
    # all from the 36 tiles nearest the threshold
    near = np.sort(dist[free])[35]
    assert (dist[idx] <= near + 1e-12).all()
    # more spread in feature space than the 12 nearest the threshold
    nearest = np.flatnonzero(free)[np.argsort(dist[free], kind="stable")[:12]]

    def min_gap(rows):
        Z = (feats[rows] - feats[scored].mean(0)) / feats[scored].std(0)
        d = np.sqrt(((Z[:, None] - Z[None]) ** 2).sum(-1)) + np.eye(len(rows)) * 1e9
        return d.min()
    assert min_gap(idx) > min_gap(nearest)
    # tiles close to an already reviewed tile are avoided
    reviewed2 = reviewed.copy()
    reviewed2[idx[:6]] = True
    idx2, _ = next_batch(prob, stratum, scored, reviewed2, feats, 6, threshold=0.3, random_share=0.0, seed=0)
    assert not set(idx2.tolist()) & set(idx[:6].tolist())


def test_batch_small_pool_and_no_features():
    prob = np.array([0.1, 0.2, 0.5, 0.9, np.nan])
    stratum = np.array([0, 0, 1, 1, 0])
    scored = np.isfinite(prob)
    reviewed = np.array([True, False, False, False, False])
    idx, picks = next_batch(prob, stratum, scored, reviewed, None, 10, threshold=0.5, seed=0)
    assert sorted(idx.tolist()) == [1, 2, 3] and len(picks) == 3


def _draw_region(rng, N=2000, share=0.12):
    y = (rng.random(N) < share).astype(float)
    score = y * 1.2 + rng.normal(size=N)
    stratum = (score > np.quantile(score, 0.9)).astype(np.int64)
    return y, stratum


def test_share_estimate_covers_the_truth_with_few_verdicts():
    """Seeded replicates: 20 random verdicts (+10 purposive near the top) per replicate; the
    95 % interval holds the true share in at least ~90 % of them and the estimate is unbiased."""
    rng = np.random.default_rng(7)
    y, stratum = _draw_region(rng)
    N = len(y)
    scored = np.ones(N, dtype=bool)
    truth = y.mean()
    hits, est = 0, []
    reps = 300
    for s in range(reps):
        labels = np.full(N, np.nan)
        picks = [""] * N
        purp = np.argsort(-(stratum + rng.random(N)))[:10]  # purposive: flagged tiles
        labels[purp] = y[purp]
        for i in purp:
            picks[i] = "probable"
        reviewed = np.isfinite(labels)
        idx, pk = next_batch(np.where(stratum == 1, 0.8, 0.2), stratum, scored, reviewed, None, 20,
                             threshold=0.5, random_share=1.0, seed=s, in_random=np.zeros(N, dtype=bool))
        labels[idx] = y[idx]
        for i, p in zip(idx, pk):
            picks[i] = p
        e = estimate_share(labels, picks, stratum, scored)
        assert e.n_random == 20 and e.n_purposive == 10
        hits += e.lo <= truth <= e.hi
        est.append(e.share)
        assert e.count == pytest.approx(e.share * N)
    assert hits / reps >= 0.9, hits / reps
    assert abs(np.mean(est) - truth) < 0.01


def test_share_estimate_without_random_verdicts_says_so():
    labels = np.array([1, 0, 1, np.nan, np.nan, np.nan])
    picks = ["uncertain", "uncertain", "manual", "", "", ""]
    e = estimate_share(labels, picks, np.zeros(6, int), np.ones(6, bool))
    assert math.isnan(e.share) and "no random verdict" in e.note
    assert e.count_lo == 2 and e.count_hi == 5 and e.n_purposive == 3 and e.n_random == 0


def test_design_weights_purposive_count_once_random_extrapolate():
    stratum = np.array([1] * 10 + [0] * 90)
    labels = np.full(100, np.nan)
    picks = [""] * 100
    labels[[0, 1]] = [1, 0]
    picks[0] = picks[1] = PICK_RANDOM
    labels[[20, 21, 22, 23]] = [0, 1, 0, 0]
    for i in (20, 21, 22, 23):
        picks[i] = PICK_RANDOM
    labels[[50, 51]] = [1, 1]
    picks[50] = "uncertain"  # 51 has a verdict and no pick: purposive
    w = design_weights(labels, picks, stratum, np.ones(100, bool))
    assert w[0] == w[1] == 5.0
    assert w[20] == pytest.approx((90 - 2) / 4)
    assert w[50] == w[51] == 1.0 and w[2] == 0
    assert w.sum() == pytest.approx(100)
    e = estimate_share(labels, picks, stratum, np.ones(100, bool))
    assert e.count == pytest.approx(2 + 10 * 0.5 + 88 * 0.25)
