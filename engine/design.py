"""Design weights of reviewed tiles and the running estimate of the region's landslide share.

Verdicts come from two kinds of review (``engine.verdicts``' ``pick`` field):

* ``random``: the stratified random sample.  Strata h are the map classes at draw time
  (``stratum``: 1 flagged, 0 not); within each, the random tiles are a simple random sample
  of the stratum's scored tiles that were not reviewed purposively (``review_select.next_batch``
  draws them so).
* purposive (uncertain, informative, probable, manual, or a verdict with no pick): chosen
  for a reason.  They are never extrapolated: each stands for itself only (a census of the
  purposive tiles, weight 1).

With N_h scored tiles in stratum h, P_h of them reviewed purposively, M_h = N_h - P_h and n_h
random verdicts of which x_h landslides (q_h = x_h / n_h), every random verdict in h carries
the design weight M_h / n_h, every purposive verdict 1.  The region's landslide count is

    T = (confirmed purposive tiles) + sum_h M_h q_h          (unbiased; DESIGN_RULE)

and the share T / N.  The 95 % interval (SHARE_INTERVAL_RULE) is a stratified Wald interval on
Agresti-Caffo-adjusted proportions q~_h = (x_h + 1) / (n_h + 2) (one landslide and one
other tile added to each stratum's sample, which keeps the interval honest with a handful of
verdicts and with 0 or n_h landslides), variance q~_h (1 - q~_h) / (n_h + 2) times the
finite-population correction (1 - n_h / M_h); clipped to what the verdicts already prove
(at least the confirmed tiles, at most N minus the rejected ones).  A stratum holding
tiles but no random verdict contributes its adjusted 1/2 to the estimate and 0..M_h to the
interval (the note says so).  No random verdict at all: NaN share, and the note says why.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .verdicts import PICK_RANDOM

Z95 = 1.959963984540054  # two-sided 95 % normal quantile

DESIGN_RULE = ("random verdicts (stratified random sample, strata = map class at draw time) weigh M_h / n_h "
               "(stratum tiles not reviewed purposively / random verdicts in the stratum); purposive verdicts "
               "weigh 1 (they stand for themselves, never extrapolated)")
SHARE_INTERVAL_RULE = ("95 % interval: stratified Wald interval on Agresti-Caffo-adjusted stratum proportions "
                       "(x_h + 1) / (n_h + 2), variance q(1 - q) / (n_h + 2) x (1 - n_h / M_h), clipped to the "
                       "counts the verdicts prove")


@dataclass
class ShareEstimate:
    share: float  # landslide share of the scored tiles (NaN: no random verdict)
    lo: float
    hi: float
    count: float  # landslide tiles among the scored ones
    count_lo: float
    count_hi: float
    n_random: int  # random verdicts used
    n_purposive: int  # purposive verdicts (counted for themselves only)
    note: str
    n_scored: int = 0

    def as_dict(self) -> dict:
        def r(v, k=4):
            return None if not math.isfinite(v) else round(float(v), k)
        return {"share": r(self.share), "share_lo": r(self.lo), "share_hi": r(self.hi), "count": r(self.count, 1),
                "count_lo": r(self.count_lo, 1), "count_hi": r(self.count_hi, 1), "n_random": self.n_random,
                "n_purposive": self.n_purposive, "n_scored": self.n_scored, "note": self.note,
                "estimator": DESIGN_RULE, "interval": SHARE_INTERVAL_RULE}

    def text(self) -> str:
        if not math.isfinite(self.share):
            return f"Landslide share of the region: unknown ({self.note})"
        return (f"Landslide share of the region: {100 * self.share:.1f} % ({100 * self.lo:.1f} - {100 * self.hi:.1f} %), "
                f"about {self.count:.0f} of {self.n_scored} tiles ({self.count_lo:.0f} - {self.count_hi:.0f}); "
                f"from {self.n_random} random and {self.n_purposive} purposive verdicts. {self.note}").strip()


def verdict_arrays(labels, picks, stratum, scored):
    """Checked arrays and the masks of usable random and purposive verdicts among scored tiles."""
    labels = np.asarray(labels, dtype=np.float64)
    scored = np.asarray(scored, dtype=bool)
    stratum = np.asarray(stratum, dtype=np.int64)
    picks = list(picks) if picks is not None else [""] * len(labels)
    if not (len(labels) == len(scored) == len(stratum) == len(picks)):
        raise ValueError("labels, picks, stratum and scored must have one entry per tile")
    has = np.isfinite(labels) & scored
    rand = has & np.array([p == PICK_RANDOM for p in picks], dtype=bool)
    purp = has & ~rand
    return labels, scored, stratum, rand, purp


def strata(scored, stratum, rand, purp):
    """Per stratum of the draw holding tiles not reviewed purposively, highest first:
    ``(h, in_h, M_h, n_h)`` (the mask of its scored tiles, M_h = those not reviewed purposively,
    n_h = its random verdicts)."""
    for h in sorted(np.unique(stratum[scored]).tolist(), reverse=True):
        in_h = scored & (stratum == h)
        M_h = int(in_h.sum()) - int((purp & in_h).sum())
        if M_h > 0:
            yield h, in_h, M_h, int((rand & in_h).sum())


def design_weights(labels, picks, stratum, scored) -> np.ndarray:
    """Per tile: the design weight of its verdict (DESIGN_RULE); 0 where no usable verdict."""
    labels, scored, stratum, rand, purp = verdict_arrays(labels, picks, stratum, scored)
    w = np.zeros(len(labels))
    w[purp] = 1.0
    for _h, in_h, M_h, n_h in strata(scored, stratum, rand, purp):
        if n_h:
            w[rand & in_h] = M_h / n_h
    return w


def estimate_share(labels, picks, stratum, scored) -> ShareEstimate:
    """The region's landslide share and count from the verdicts (module docstring).
    ``labels``: 1 / 0 / NaN per tile; ``picks``: ``PICK_*`` per tile; ``stratum``: map class at
    draw time; ``scored``: tiles with a score (the population)."""
    labels, scored, stratum, rand, purp = verdict_arrays(labels, picks, stratum, scored)
    N = int(scored.sum())
    n_rand, n_purp = int(rand.sum()), int(purp.sum())
    known_pos = float((labels[purp] == 1).sum())
    proven_pos = float(((labels == 1) & (rand | purp)).sum())
    proven_neg = float(((labels == 0) & (rand | purp)).sum())
    if N == 0:
        return ShareEstimate(math.nan, math.nan, math.nan, math.nan, math.nan, math.nan, 0, 0,
                             "no scored tile", 0)
    if n_rand == 0:
        note = ("no random verdict: the share cannot be estimated from purposive verdicts alone (they were chosen, "
                "not drawn); draw and review random tiles")
        return ShareEstimate(math.nan, proven_pos / N, 1.0 - proven_neg / N, math.nan, proven_pos, N - proven_neg,
                             0, n_purp, note, N)
    T, T_adj, var, lo_extra, hi_extra = known_pos, known_pos, 0.0, 0.0, 0.0
    missing = []
    for h, in_h, M, n in strata(scored, stratum, rand, purp):
        x = float((labels[rand & in_h] == 1).sum())
        qa = (x + 1.0) / (n + 2.0)
        if n == 0:
            missing.append("flagged" if h == 1 else "not flagged")
            T += M * qa
            T_adj += M * qa
            lo_extra -= M * qa
            hi_extra += M * (1 - qa)
            continue
        T += M * x / n
        T_adj += M * qa
        fpc = max(0.0, 1.0 - n / M)
        var += M * M * qa * (1 - qa) / (n + 2.0) * fpc
    half = Z95 * math.sqrt(var)
    c_lo = max(proven_pos, T_adj - half + lo_extra)
    c_hi = min(N - proven_neg, T_adj + half + hi_extra)
    c_lo, c_hi = min(c_lo, T), max(c_hi, T)
    note = ""
    if missing:
        note = (f"the {' and '.join(missing)} stratum has no random verdict yet: its share is unknown (taken as "
                "1/2, interval 0 to all its tiles)")
    elif n_rand < 10:
        note = f"only {n_rand} random verdicts: a wide interval; review more random tiles to narrow it"
    return ShareEstimate(T / N, c_lo / N, c_hi / N, T, c_lo, c_hi, n_rand, n_purp, note, N)
