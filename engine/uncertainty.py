"""Per-tile uncertainty of the ensemble: where the models are unsure.

Two signs of doubt, both in [0, 1]:

* margin  m = 1 - |p - t| / max(t, 1 - t): 1 when the ensemble probability ``p`` sits on
  the threshold ``t``, 0 at the far end of the probability scale (0 or 1);
* spread  s = 2 * sigma_w: the weighted standard deviation of the members' probabilities
  (weights = the package's member weights), scaled so the largest possible spread of
  values in [0, 1] (half the weight at 0, half at 1: sigma = 0.5) gives 1.

    uncertainty u = (1 - LAMBDA) * m + LAMBDA * s,   LAMBDA = 0.3

The margin dominates (a tile far from the threshold is unlikely to be wrong whatever the
members say); the spread breaks ties between tiles at equal margin: members that disagree
mean the evidence is ambiguous.  A single-member ensemble has s = 0 and u = 0.7 m.

A member with no probability on a tile (NaN: the cascade did not run the networks there,
``scored_by = gbm``) is left out of that tile's spread, the others' weights renormalised:
on such tiles s is the spread of the GBM pair and p the pair's weighted mean, on the same
[0, 1] scale (docs/concepts/cascade.md).
"""
from __future__ import annotations

import numpy as np

LAMBDA = 0.3
FORMULA = "u = 0.7 * (1 - |p - t| / max(t, 1 - t)) + 0.3 * min(1, 2 * weighted std of member probabilities)"


def uncertainty(prob, threshold: float, member_probs=None, weights=None) -> np.ndarray:
    """Uncertainty per tile.  ``prob`` (N,); ``member_probs`` (M, N) in the order of
    ``weights`` (M,) (None: equal weights; no members: spread 0).  Returns float64 (N,)."""
    p = np.atleast_1d(np.asarray(prob, dtype=np.float64))
    t = float(threshold)
    margin = 1.0 - np.abs(p - t) / max(t, 1.0 - t)
    spread = np.zeros_like(p)
    if member_probs is not None and len(member_probs):
        mp = np.asarray(member_probs, dtype=np.float64).reshape(-1, len(p))
        w = np.ones(len(mp)) if weights is None else np.asarray(weights, dtype=np.float64)
        if w.sum() > 0 and len(mp) > 1:
            ran = np.isfinite(mp)  # members that scored each tile
            wt = np.where(ran, w[:, None], 0.0)
            tot = wt.sum(axis=0)
            wt = wt / np.where(tot > 0, tot, 1.0)
            x = np.where(ran, mp, 0.0)
            mean = (wt * x).sum(axis=0)
            var = (wt * (x - mean) ** 2).sum(axis=0)
            spread = np.minimum(1.0, 2.0 * np.sqrt(var))
    return np.clip((1.0 - LAMBDA) * margin + LAMBDA * spread, 0.0, 1.0)


def batch_uncertainty(probs: dict, member_names: list, weights, threshold: float) -> np.ndarray:
    """``uncertainty`` for a batch's scores as the ensemble returns them ({'prob', member: (N,)})."""
    members = [np.asarray(probs[m]) for m in member_names if m in probs]
    return uncertainty(probs["prob"], threshold, np.stack(members) if members else None,
                       weights if weights is not None and len(members) == len(member_names) else None)
