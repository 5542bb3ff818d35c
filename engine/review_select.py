"""The review panel's "Next tiles to review": a batch that mixes the stratified random sample
(so the estimates stay honest) with the tiles most informative for the model.

Random part (``PICK_RANDOM``), ``round(n * random_share)`` tiles: drawn without replacement
within each stratum (``stratum``: the map class at the time of the first draw) among its scored
tiles not yet reviewed.  ALLOCATION_RULE: the tiles go one at a time to the stratum furthest
below its target share of the cumulative random sample, the target being halfway between
proportional (N_h / N) and equal (1/2) allocation, so a rare flagged class still gets verdicts
and the large unflagged class (where missed landslides hide) gets most; a stratum with no
unreviewed tile left is skipped.  The sizes depend only on counts, never on verdicts or
probabilities, and each stratum's draw is a simple random sample of its unreviewed tiles, so
all random rounds together stay a stratified random sample of the tiles not reviewed
purposively (``engine.design`` weighs them so).

Informative part (``PICK_INFORMATIVE``), the rest: among the unreviewed scored tiles not drawn
above, the pool of the ``max(3 n, 30)`` most uncertain ones (smallest |logit(prob) -
logit(threshold)|), then greedy max-min selection: each next tile is the pool tile farthest
(Euclidean, features standardised over the scored tiles; on logit(prob) when ``features`` is
None) from every tile already reviewed or chosen, ties to the more uncertain one.  So the batch
is uncertain AND unlike what the model already has verdicts for.

Deterministic given ``seed`` (pass the round number as seed so rounds differ).
"""
from __future__ import annotations

import numpy as np

from .verdicts import PICK_INFORMATIVE, PICK_RANDOM

ALLOCATION_RULE = ("random tiles go one at a time to the stratum furthest below its target share of the cumulative "
                   "random sample, target = (N_h / N + 1/2) / 2 (halfway between proportional and equal allocation); "
                   "drawn without replacement among the stratum's scored tiles not yet reviewed")
INFORMATIVE_RULE = ("pool of the max(3 n, 30) unreviewed tiles nearest the threshold (in logit), then greedy "
                    "max-min distance (standardised features, or logit(prob)) to the tiles reviewed or chosen")
_EPS = 1e-6


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), _EPS, 1 - _EPS)
    return np.log(p / (1 - p))


def _allocate(n: int, N_h: dict, taken: dict, avail: dict) -> dict:
    total_N = sum(N_h.values())
    strata = [h for h in N_h if N_h[h] > 0]
    target = {h: 0.5 * N_h[h] / total_N + 0.5 / len(strata) for h in strata}
    got = {h: 0 for h in strata}
    for _ in range(n):
        open_ = [h for h in strata if got[h] < avail.get(h, 0)]
        if not open_:
            break
        cum = sum(taken.get(h, 0) + got[h] for h in strata) + 1
        h = max(open_, key=lambda s: (target[s] * cum - taken.get(s, 0) - got[s], -s))
        got[h] += 1
    return got


def _standardise(features: np.ndarray, scored: np.ndarray) -> np.ndarray:
    X = np.asarray(features, dtype=np.float64)
    if X.ndim == 1:
        X = X[:, None]
    ref = X[scored]
    with np.errstate(invalid="ignore"):
        mu = np.nanmean(ref, axis=0) if len(ref) else np.zeros(X.shape[1])
        sd = np.nanstd(ref, axis=0) if len(ref) else np.ones(X.shape[1])
    mu = np.nan_to_num(mu)
    sd = np.where(np.isfinite(sd) & (sd > 0), sd, 1.0)
    Z = (X - mu) / sd
    return np.nan_to_num(Z, nan=0.0, posinf=0.0, neginf=0.0)


def next_batch(prob: np.ndarray, stratum: np.ndarray, scored: np.ndarray, reviewed: np.ndarray,
               features: np.ndarray | None, n: int, *, threshold: float, random_share: float = 0.5,
               seed: int = 0, in_random: np.ndarray | None = None) -> tuple[np.ndarray, list[str]]:
    """Up to ``n`` tile indices to review next and how each was picked (``PICK_RANDOM`` or
    ``PICK_INFORMATIVE``), random ones first (module docstring).  ``prob``: tile probabilities
    (NaN for nodata); ``stratum``: map class at draw time (1/0); ``scored``: tiles with a score;
    ``reviewed``: tiles that already carry a verdict; ``features``: (N, d) tile features or None;
    ``in_random``: tiles already in the random sample (their pick is ``PICK_RANDOM``), which the
    allocation counts (None: every reviewed tile counts, as if all were random)."""
    prob = np.asarray(prob, dtype=np.float64)
    stratum = np.asarray(stratum, dtype=np.int64)
    scored = np.asarray(scored, dtype=bool) & np.isfinite(prob)
    reviewed = np.asarray(reviewed, dtype=bool)
    if not (len(prob) == len(stratum) == len(scored) == len(reviewed)):
        raise ValueError("prob, stratum, scored and reviewed must have one entry per tile")
    if not 0.0 <= random_share <= 1.0:
        raise ValueError("random_share must lie in [0, 1]")
    rng = np.random.default_rng(seed)
    free = scored & ~reviewed
    n = int(min(max(0, n), int(free.sum())))
    if n == 0:
        return np.array([], dtype=np.int64), []
    n_rand = int(round(n * random_share))
    strata = sorted(np.unique(stratum[scored]).tolist(), reverse=True)
    N_h = {h: int((scored & (stratum == h)).sum()) for h in strata}
    in_rand = reviewed if in_random is None else np.asarray(in_random, dtype=bool)
    taken = {h: int((scored & in_rand & (stratum == h)).sum()) for h in strata}
    avail = {h: int((free & (stratum == h)).sum()) for h in strata}
    alloc = _allocate(n_rand, N_h, taken, avail)
    chosen: list[int] = []
    for h in strata:
        k = alloc.get(h, 0)
        if k:
            pool = np.flatnonzero(free & (stratum == h))
            chosen += sorted(int(i) for i in rng.choice(pool, size=k, replace=False))
    picks = [PICK_RANDOM] * len(chosen)
    n_inf = n - len(chosen)
    if n_inf > 0:
        cand = free.copy()
        cand[chosen] = False
        idx = np.flatnonzero(cand)
        closeness = np.abs(_logit(prob[idx]) - _logit(np.array([threshold]))[0])
        order = np.lexsort((idx, closeness))
        pool = idx[order[:max(3 * n_inf, 30)]]
        pool_close = closeness[order[:max(3 * n_inf, 30)]]
        Z = _standardise(features, scored) if features is not None else _logit(prob)[:, None]
        anchors = np.flatnonzero(scored & reviewed).tolist() + chosen
        if anchors:
            A = Z[anchors]
            dmin = np.sqrt(((Z[pool][:, None, :] - A[None, :, :]) ** 2).sum(-1)).min(axis=1)
        else:
            dmin = np.full(len(pool), np.inf)
        alive = np.ones(len(pool), dtype=bool)
        for _ in range(min(n_inf, len(pool))):
            # farthest from everything reviewed or chosen; ties (e.g. the first pick with nothing
            # reviewed: all infinite) to the tile nearest the threshold
            cand_i = np.flatnonzero(alive)
            best = cand_i[np.lexsort((pool_close[cand_i], -dmin[cand_i]))[0]]
            alive[best] = False
            chosen.append(int(pool[best]))
            picks.append(PICK_INFORMATIVE)
            d = np.sqrt(((Z[pool] - Z[pool[best]]) ** 2).sum(-1))
            dmin = np.minimum(dmin, d)
    return np.array(chosen, dtype=np.int64), picks
