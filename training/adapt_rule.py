"""The rules of ``landslide:adapt`` on arrays (numpy, LightGBM, XGBoost; no QGIS, no files):
how the threshold is chosen from a few dozen verdicts, and which refit wins.

Shared by ``training/adapt.py`` (per input combination of a package) and the leave-one-region-
out benchmark ``training/loro.py``.

Threshold (THRESHOLD_RULE).  Everything is decided as a *fraction of the region's tiles to
flag*, then turned into a threshold on the final model's probabilities over the scene's tiles
(so a refit whose probabilities are scaled differently gets the same share of flags):

1. F1 part: on the verdicts' cross-validated probabilities (each fold's GBMs refitted without
   that fold; base members' probabilities where nothing was refitted), the design-weighted
   F1 (``engine.design``: random verdicts weigh M_h / n_h, purposive ones 1, never more) at
   every threshold of THRESHOLD_GRID; the middle of the best plateau gives t*, and f* = the
   share of the scene's tiles the cross-validated models flag at t*.
2. Share part: f0 = the share to flag that the estimated landslide share of the region
   (``engine.design.estimate_share``, from the random verdicts) implies for this model
   (``share_fraction``: the scene's probabilities shifted in logit so their mean is the
   estimated share, then the number of flags maximising the expected F1 under them; a sharp
   model flags about the estimated share, an unsure one somewhat more).
3. Blend: f = lam f* + (1 - lam) f0 with lam = k / (k + SHRINK_K), k = min(random confirmed,
   random rejected): with 3 landslides among the random verdicts lam = 3/11, the sample's
   share dominates; with 24 lam = 0.75.
4. Purposive verdicts only (no random sample): no share can be estimated; f = f* from the
   purposive verdicts' (unweighted: weight 1 each) F1, at least the share the confirmed verdicts
   already prove.  The manifest and log say so.

Candidates (CANDIDATE_RULE): the base package unchanged (its members and threshold: adapting
must earn its place); threshold only (base members, new threshold); the GBMs refitted
on the base rows weighted toward the scene (``scene_shift.scene_weights``) with no verdicts
(share 0); and refitted on those rows plus the verdicts weighing LOCAL_SHARES of the fit.  Each
gets its threshold by the rule above and is scored by the design-weighted F1 of its
cross-validated probabilities at that threshold; the simplest candidate (in that order) within
one standard error of the best wins, SE = sqrt(F1 (1 - F1) / confirmed verdicts).
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ..engine.design import ShareEstimate
from .train_gbm import fit_lgb, fit_xgb, predict

THRESHOLD_GRID = np.round(np.concatenate([np.arange(0.005, 0.05, 0.005), np.arange(0.05, 0.9501, 0.01),
                                          np.arange(0.955, 0.9951, 0.005)]), 3)
SHRINK_K = 8
LOCAL_SHARES = (0.1, 0.3, 0.5)
MAX_FOLDS = 3
CV_BASE_ROWS = 2000  # candidate fits (cross-validation) use a stratified subsample of the base rows (speed)
CV_ROUNDS = 0.5  # ... and half the trees; the chosen candidate is refitted in full.  The threshold is
# carried over as a share of the scene to flag, so the shorter fits' other scale does not matter
THRESHOLD_RULE = (
    "fraction of the region to flag f = lam * f_F1 + (1 - lam) * f_share, lam = k / (k + 8), k = min(random "
    "confirmed, random rejected); f_F1 = share of the scene the cross-validated models flag at the threshold "
    "maximising the design-weighted F1 (random verdicts weigh M_h / n_h, purposive 1) of the verdicts' "
    "cross-validated probabilities (middle of the best plateau); f_share = the share to flag maximising the "
    "expected F1 of the scene's probabilities recalibrated (logit shift) to the stratified estimate of the region's "
    "landslide share; the threshold flags f of the scene's tiles under the final model. Purposive "
    "verdicts only: f = f_F1 of their unweighted F1 (not a sample estimate), at least the share they prove")
CANDIDATE_RULE = ("candidates: the base package unchanged (members and threshold); threshold only (base members); "
                  "GBMs refitted on base rows with scene weights "
                  "(no verdicts); and with the verdicts weighing 0.1 / 0.3 / 0.5 of the fit; each scored by the "
                  "design-weighted F1 of its cross-validated probabilities at its rule threshold; the simplest "
                  "within one standard error (sqrt(F1 (1 - F1) / confirmed verdicts)) of the best wins")
LEGACY_THRESHOLD_RULE = ("with >= 10 verdicts per class: F1-optimal threshold (0.05..0.95 step 0.01, middle of the "
                         "best plateau) of the cross-validated probabilities, every verdict weight 1; else the base "
                         "threshold")


# ---------------------------------------------------------------- threshold rule
def weighted_f1_curve(y: np.ndarray, p: np.ndarray, w: np.ndarray, grid: np.ndarray = THRESHOLD_GRID) -> np.ndarray:
    """F1 at every threshold of ``grid`` with per-verdict weights ``w`` (design weights)."""
    y = np.asarray(y).astype(bool)
    w = np.asarray(w, dtype=np.float64)
    pred = np.asarray(p, dtype=np.float64)[None, :] >= grid[:, None]
    tp = (pred & y) @ w
    fp = (pred & ~y) @ w
    fn = (~pred & y) @ w
    den = 2 * tp + fp + fn
    return np.where(den > 0, 2 * tp / np.where(den > 0, den, 1), 0.0)


def plateau_middle(values: np.ndarray) -> int:
    best = np.flatnonzero(values >= values.max() - 1e-12)
    return int(best[len(best) // 2])


def fraction_curve(scene_probs: list, grid: np.ndarray = THRESHOLD_GRID) -> np.ndarray:
    """Share of the scene's tiles flagged at each threshold, averaged over the given models'
    scene probabilities (one array per cross-validation fold, or one)."""
    return np.mean([(np.asarray(s)[None, :] >= grid[:, None]).mean(axis=1) for s in scene_probs], axis=0)


def threshold_for_fraction(scene_prob: np.ndarray, f: float) -> float:
    """The threshold that flags a share ``f`` of the scene's tiles (midway between the k-th and
    (k+1)-th highest probability, k = round(f m)), within 0.001..0.999."""
    p = np.sort(np.asarray(scene_prob, dtype=np.float64))[::-1]
    m = len(p)
    k = int(round(min(max(f, 0.0), 1.0) * m))
    if m == 0:
        return 0.5
    if k <= 0:
        t = p[0] + 1e-6
    elif k >= m:
        t = p[-1]
    else:
        t = 0.5 * (p[k - 1] + p[k])
    return float(np.clip(t, 0.001, 0.999))


def share_fraction(scene_prob: np.ndarray, share: float) -> float:
    """The share of the scene to flag that the estimated landslide ``share`` implies: the scene's
    probabilities are recalibrated to that share (one logit shift d with mean(sigmoid(logit p + d))
    = share), then the number of flags k maximising the expected F1 under them, 2 sum_{top k} q /
    (k + sum q), is taken (k / m).  A sharp model flags about the share; an unsure one more."""
    p = np.clip(np.asarray(scene_prob, dtype=np.float64), 1e-6, 1 - 1e-6)
    m = len(p)
    if m == 0 or not math.isfinite(share):
        return float("nan")
    share = min(max(share, 0.5 / m), 1 - 0.5 / m)
    z = np.log(p / (1 - p))
    lo, hi = -30.0, 30.0
    for _ in range(80):
        d = 0.5 * (lo + hi)
        if (1 / (1 + np.exp(-(z + d)))).mean() < share:
            lo = d
        else:
            hi = d
    q = np.sort(1 / (1 + np.exp(-(z + 0.5 * (lo + hi)))))[::-1]
    k = np.arange(1, m + 1)
    f1 = 2 * np.cumsum(q) / (k + q.sum())
    return float(k[int(np.argmax(f1))] / m)


@dataclass
class ThresholdChoice:
    fraction: float  # share of the region to flag
    t_cv: float  # threshold on the cross-validated probabilities' scale giving that share
    f1_design: float  # design-weighted F1 of the CV probabilities at t_cv (the criterion)
    lam: float
    f_f1: float
    f_share: float
    random_sample: bool
    detail: dict = field(default_factory=dict)


def choose_fraction(y: np.ndarray, p_cv: np.ndarray, w: np.ndarray, is_random: np.ndarray, frac: np.ndarray,
                    share: ShareEstimate, scene_prob: np.ndarray | None = None) -> ThresholdChoice:
    """THRESHOLD_RULE.  ``w``: design weights of the verdicts; ``frac``: share of the scene the
    (cross-validated) models flag at each THRESHOLD_GRID threshold."""
    y = np.asarray(y).astype(np.int64)
    is_random = np.asarray(is_random, dtype=bool)
    curve = weighted_f1_curve(y, p_cv, w)
    i_star = plateau_middle(curve)
    f_star = float(frac[i_star])
    n_rp = int(((y == 1) & is_random).sum())
    n_rn = int(((y == 0) & is_random).sum())
    have_share = share.n_random > 0 and math.isfinite(share.share)
    if have_share:
        k = min(n_rp, n_rn)
        lam = k / (k + SHRINK_K)
        f_share = share.share if scene_prob is None else share_fraction(scene_prob, share.share)
        f = lam * f_star + (1 - lam) * f_share
    else:
        lam, f_share = 1.0, float("nan")
        proven = share.lo if math.isfinite(share.lo) else 0.0
        f = max(f_star, proven)
    i = int(np.argmin(np.abs(frac - f)))  # the grid threshold whose flagged share is nearest f
    return ThresholdChoice(float(f), float(THRESHOLD_GRID[i]), float(curve[i]), float(lam), f_star, float(f_share),
                           have_share, {"t_f1": float(THRESHOLD_GRID[i_star]), "f1_at_t_f1": float(curve[i_star]),
                                        "random_confirmed": n_rp, "random_rejected": n_rn})


BASE_CANDIDATE = "base package"


def base_choice(y: np.ndarray, p: np.ndarray, w: np.ndarray, is_random: np.ndarray, scene_prob: np.ndarray,
                threshold: float, share: ShareEstimate) -> ThresholdChoice:
    """The base package's own threshold as a ThresholdChoice: the share of the scene it flags
    and the design-weighted F1 of the verdicts at it (the same criterion as every candidate)."""
    y = np.asarray(y).astype(np.int64)
    is_random = np.asarray(is_random, dtype=bool)
    f1 = float(weighted_f1_curve(y, p, w, np.array([threshold]))[0])
    frac = float((np.asarray(scene_prob) >= threshold).mean()) if len(scene_prob) else 0.0
    have = share.n_random > 0 and math.isfinite(share.share)
    return ThresholdChoice(frac, float(threshold), f1, 1.0, frac, float("nan"), have,
                           {"t_f1": float(threshold), "f1_at_t_f1": f1, "kept": "base threshold",
                            "random_confirmed": int(((y == 1) & is_random).sum()),
                            "random_rejected": int(((y == 0) & is_random).sum())})


def legacy_threshold(y: np.ndarray, p_cv: np.ndarray, base_t: float, min_per_class: int = 10) -> float:
    """Version 0.4's rule (LEGACY_THRESHOLD_RULE), kept for the benchmark."""
    y = np.asarray(y)
    if (y == 1).sum() < min_per_class or (y == 0).sum() < min_per_class:
        return float(base_t)
    grid = np.round(np.arange(0.05, 0.9501, 0.01), 2)
    curve = weighted_f1_curve(y, p_cv, np.ones(len(y)), grid)
    return float(grid[plateau_middle(curve)])


# ---------------------------------------------------------------- refits
def stratified_folds(y: np.ndarray, k: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    fold = np.empty(len(y), dtype=np.int64)
    for c in (0, 1):
        idx = rng.permutation(np.flatnonzero(y == c))
        fold[idx] = np.arange(len(idx)) % k
    return fold


def fit_member(kind: str, X, y, w, names, rounds: int, seed: int, threads: int, min_leaf: int):
    if kind == "lightgbm":
        return fit_lgb(X, y, names, rounds, seed, threads, weight=w, min_leaf=min_leaf)
    return fit_xgb(X, y, names, rounds, seed, threads, weight=w)


@dataclass
class Combo:
    """One input combination's arrays.  GBM members: ``gbms`` [(name, kind)], all on ``names``.
    Other members (networks) are fixed: ``fixed_local`` / ``fixed_scene`` {name: probs}."""

    names: list
    gbms: list
    weights: dict  # member name -> ensemble weight
    Xb: np.ndarray  # base rows
    yb: np.ndarray
    wb: np.ndarray  # base row weights (scene weights, mean 1; ones without)
    Xl: np.ndarray  # verdicts
    yl: np.ndarray
    w_design: np.ndarray
    is_random: np.ndarray
    Xs: np.ndarray  # scene tiles (all scored tiles or a bounded subsample)
    base_local: dict  # member name -> base probs on the verdicts (every member)
    base_scene: dict  # member name -> base probs on the scene tiles (every member)
    rounds: Callable[[str], int]
    min_leaf: int = 20
    scene_weighted: bool = True

    def ensemble(self, gbm_probs: dict, fixed: dict) -> np.ndarray:
        tot = sum(self.weights.values())
        out = sum(self.weights[n] * gbm_probs[n] for n, _ in self.gbms)
        out = out + sum(self.weights[n] * fixed[n] for n in fixed if n in self.weights and n not in gbm_probs)
        return np.asarray(out, dtype=np.float64) / tot

    def fixed_local(self) -> dict:
        return {n: p for n, p in self.base_local.items() if n not in dict(self.gbms)}

    def fixed_scene(self) -> dict:
        return {n: p for n, p in self.base_scene.items() if n not in dict(self.gbms)}


def local_weight(share: float, base_total: float, n_local: int) -> float:
    """Each verdict's weight so that the verdicts together weigh ``share`` of the fit."""
    if base_total <= 0:
        return 1.0
    return share / (1 - share) * base_total / max(1, n_local)


def design(c: Combo, share: float, local_rows=None, base_rows=None):
    """(X, y, w) of a refit: base rows (scene weights) plus verdicts weighing ``share``."""
    Xb, yb, wb = c.Xb, c.yb, c.wb
    if base_rows is not None:
        scale = wb.sum() / max(wb[base_rows].sum(), 1e-12)
        Xb, yb, wb = Xb[base_rows], yb[base_rows], wb[base_rows] * scale
    if share <= 0 or len(c.yl) == 0:
        return Xb, yb.astype(np.float64), wb
    Xl, yl = (c.Xl, c.yl) if local_rows is None else (c.Xl[local_rows], c.yl[local_rows])
    wl = np.full(len(yl), local_weight(share, float(c.wb.sum()), len(c.yl)))
    if len(yb) == 0:
        wl = np.ones(len(yl))
    return (np.vstack([Xb, Xl]), np.concatenate([yb, yl]).astype(np.float64), np.concatenate([wb, wl]))


def _subsample(y: np.ndarray, limit: int, seed: int) -> np.ndarray | None:
    if len(y) <= limit:
        return None
    rng = np.random.default_rng(seed)
    keep = []
    for cls in np.unique(y):
        idx = np.flatnonzero(y == cls)
        keep.append(rng.choice(idx, size=max(2, round(limit * len(idx) / len(y))), replace=False))
    return np.sort(np.concatenate(keep))


@dataclass
class Candidate:
    name: str  # "threshold only", "scene weights", "refit 0.3" ...
    share: float | None  # None: base members kept
    choice: ThresholdChoice
    p_local: np.ndarray  # the verdicts' (cross-validated) probabilities the choice was made on


def evaluate(c: Combo, share_est: ShareEstimate, *, seed: int = 0, threads: int = 1, shares=LOCAL_SHARES,
             folds: int = MAX_FOLDS, cv_base_rows: int = CV_BASE_ROWS, map_fn=None, cancelled=None,
             progress=None, scene_fit: dict | None = None,
             base_threshold: float | None = None) -> tuple[Candidate, list]:
    """Every candidate's threshold choice (CANDIDATE_RULE); the winner first.  ``base_threshold``:
    the base package's threshold, which makes "base package" (nothing changed) the first and
    simplest candidate: on a region the base model already fits, a few dozen verdicts cannot
    show a change to be better, and the one-standard-error rule then keeps it.  ``map_fn``: a
    ``map`` over jobs (a thread pool's); default the builtin.  ``scene_fit``: {member: (probs on
    the verdicts, probs on the scene)} of an existing scene-weighted refit (the benchmark reuses
    one per region)."""
    mapper = map_fn or map
    y = c.yl
    gb = dict(c.gbms)
    fixed_l, fixed_s = c.fixed_local(), c.fixed_scene()
    cands = []
    # threshold only: base members' probabilities (the verdicts were never fitted on)
    p_l = c.ensemble({n: c.base_local[n] for n in gb}, fixed_l)
    p_s = c.ensemble({n: c.base_scene[n] for n in gb}, fixed_s)
    if base_threshold is not None:
        cands.append(Candidate(BASE_CANDIDATE, None, base_choice(y, p_l, c.w_design, c.is_random, p_s,
                                                                 float(base_threshold), share_est), p_l))
    cands.append(Candidate("threshold only", None, choose_fraction(y, p_l, c.w_design, c.is_random,
                                                                   fraction_curve([p_s]), share_est, p_s), p_l))
    jobs = []
    if c.scene_weighted and len(c.yb) and scene_fit is None:
        jobs += [("scene", 0.0, -1, n, kind) for n, kind in c.gbms]
    k = min(folds, int((y == 1).sum()), int((y == 0).sum()))
    fold = stratified_folds(y, k, seed) if k >= 2 else None
    sub = _subsample(c.yb, cv_base_rows, seed) if len(c.yb) else None
    if fold is not None:
        jobs += [("cv", s, f, n, kind) for s in shares for f in range(k) for n, kind in c.gbms]

    def run(job):
        what, s, f, n, kind = job
        if cancelled is not None and cancelled():
            from ..core.errors import Cancelled
            raise Cancelled()
        r = max(10, int(c.rounds(kind) * CV_ROUNDS))
        if what == "scene":
            X, yy, ww = design(c, 0.0, base_rows=sub)
            b = fit_member(kind, X, yy, ww, c.names, r, seed, 1, c.min_leaf)
        else:
            tr = np.flatnonzero(fold != f)
            X, yy, ww = design(c, s, local_rows=tr, base_rows=sub)
            b = fit_member(kind, X, yy, ww, c.names, r, seed + f, 1, c.min_leaf)
        return job, predict(kind, b, c.Xl, 1), predict(kind, b, c.Xs, 1)

    res = {("scene", 0.0, -1, n, kd): scene_fit[n] for n, kd in c.gbms} if scene_fit is not None else {}
    for i, (job, pl, ps) in enumerate(mapper(run, jobs)):
        res[job] = (pl, ps)
        if progress is not None:
            progress((i + 1) / max(1, len(jobs)))
    if c.scene_weighted and len(c.yb):
        pl = c.ensemble({n: res[("scene", 0.0, -1, n, kd)][0] for n, kd in c.gbms}, fixed_l)
        ps = c.ensemble({n: res[("scene", 0.0, -1, n, kd)][1] for n, kd in c.gbms}, fixed_s)
        cands.append(Candidate("scene weights", 0.0, choose_fraction(y, pl, c.w_design, c.is_random,
                                                                     fraction_curve([ps]), share_est, ps), pl))
    if fold is not None:
        for s in shares:
            p_cv = np.zeros(len(y))
            scene_fold = []
            for f in range(k):
                va = fold == f
                gl = {n: res[("cv", s, f, n, kd)][0] for n, kd in c.gbms}
                gs = {n: res[("cv", s, f, n, kd)][1] for n, kd in c.gbms}
                p_cv[va] = c.ensemble(gl, fixed_l)[va]
                scene_fold.append(c.ensemble(gs, fixed_s))
            cands.append(Candidate(f"refit {s:g}", s, choose_fraction(y, p_cv, c.w_design, c.is_random,
                                                                      fraction_curve(scene_fold), share_est,
                                                                      np.mean(scene_fold, axis=0)), p_cv))
    # one-standard-error rule (Hastie, Tibshirani & Friedman, ESL 7.10): the simplest candidate
    # whose estimate is within one standard error of the best, SE = sqrt(F1 (1 - F1) / n_confirmed)
    # (a few dozen verdicts hold few landslides: their F1 is noisy, and the largest of five noisy
    # estimates is biased up)
    top = max(cd.choice.f1_design for cd in cands)
    se = math.sqrt(max(top * (1 - top), 0.0) / max(1, int((y == 1).sum())))
    win = next(i for i, cd in enumerate(cands) if cd.choice.f1_design >= top - se - 1e-12)
    order = [win] + sorted((i for i in range(len(cands)) if i != win),
                           key=lambda i: (-round(cands[i].choice.f1_design, 6), i))
    return cands[win], [cands[i] for i in order]


def final_fit(c: Combo, share: float, kind: str, seed: int, threads: int = 1):
    X, yy, ww = design(c, share)
    return fit_member(kind, X, yy, ww, c.names, c.rounds(kind), seed, threads, c.min_leaf)
