"""Weights that make the training table look like the scene (covariate shift, no labels).

The bundled gradient-boosting members were fitted on one competition's patches.  When the
analyst's scene has another feature distribution, the training rows that resemble the scene
should count more.  ``scene_weights`` estimates the density ratio

    w(x) = p_scene(x) / p_train(x)

with a domain classifier that tells training rows (class 0) from the scene's tiles (class 1):

- features: the columns given (the GBM features of one input combination), standardised
  robustly (median, interquartile range / 1.349; fallback standard deviation) on the pooled
  rows of the classifier's training folds and clipped to +-CLIP_Z; a missing value becomes 0
  (the median) plus one 0/1 "missing" column per distinct missingness pattern, so a base row
  that lacks a channel the scene has is told apart instead of being imputed into the scene;
- classifier: L2-penalised logistic regression (penalty L2_PENALTY per row-equivalent,
  IRLS / Newton steps, numpy only, no random state: deterministic);
- cross-fitting: FOLDS folds (rows of both sets shuffled by ``seed``), each row's
  probability p comes from the model fitted on the other folds (a row's weight never comes
  from a model that saw it); the same out-of-fold probabilities give ``domain_auc``
  (0.5 = the scene is indistinguishable from the training data);
- ratio: w = p / (1 - p) * n_base / n_scene (the classes' sizes undo the classifier's prior);
- clipping (the rule): w' = min(s * w, ``clip``) with the scale s chosen so that the mean is
  exactly 1 (``clip_weights``).  So no training row counts more than ``clip`` (20) average
  rows, and the effective sample size can never fall below n_base / clip (5 %);
- effective sample size: ESS = (sum w)^2 / sum w^2 (Kish): n_base when every weight is 1.

``needs_verdicts`` turns a too-small ESS into one plain sentence for the log.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

FOLDS = 5
L2_PENALTY = 0.001        # ridge strength on the standardised coefficients, per 1000 rows
CLIP_Z = 8.0              # standardised features are clipped to +-8 robust standard deviations
NEWTON_STEPS = 100
MAX_STEP = 5.0            # largest Newton step (Euclidean norm of the coefficient change)
CLIP_RULE = ("w = p/(1-p) * n_base/n_scene from cross-fitted (5-fold) logistic-regression domain "
             "probabilities, then min(s * w, {clip:g}) with s such that the mean weight is 1")
# The scene is "unlike the training data" when the weights leave fewer than this share of
# the training rows' worth of evidence (ESS / n_base): at the cap of 20 the smallest
# possible share is 1/20 = 0.05, reached when every row the scene does not resemble gets
# weight ~0 and a twentieth of the table carries all of it.
MIN_ESS_SHARE = 0.10
# ... or when the domain classifier tells the scene from the training rows almost perfectly
# (cross-fitted AUC at least this): the weights then extrapolate from the edge of the table.
MAX_DOMAIN_AUC = 0.97
# Verdicts asked for: enough of each class to estimate the model's recall on landslide
# tiles (and its false-alarm rate on the others) within +-HALF_WIDTH at 95 % confidence in
# the worst case (a rate of 0.5): n = 1.96^2 * 0.25 / HALF_WIDTH^2.
HALF_WIDTH = 0.15
VERDICTS_PER_CLASS = math.ceil(1.96 ** 2 * 0.25 / HALF_WIDTH ** 2)  # 43


@dataclass(frozen=True)
class SceneWeights:
    """One weight per training (base) row that makes the training table resemble the scene."""

    weights: np.ndarray      # one per base (training) row, float64, mean 1 after clipping/normalising
    ess: float               # effective sample size (sum w)^2 / sum w^2
    n_base: int
    n_scene: int
    domain_auc: float        # cross-fitted AUC of the train-vs-scene classifier (0.5 = indistinguishable)
    note: str                # one plain sentence for the log (ESS, share of rows, what it means)
    clip: float = 20.0
    seed: int = 0

    @property
    def ess_share(self) -> float:
        """ESS as a share of the training rows (1.0: the scene looks like the training data)."""
        return self.ess / self.n_base if self.n_base else 0.0

    @property
    def too_small(self) -> bool:
        """True when the scene is unlike the training data (see MIN_ESS_SHARE, MAX_DOMAIN_AUC)."""
        return self.ess_share < MIN_ESS_SHARE or self.domain_auc >= MAX_DOMAIN_AUC

    @property
    def rule(self) -> str:
        """The weighting rule, as recorded in a package's manifest."""
        return CLIP_RULE.format(clip=self.clip)

    def provenance(self) -> dict:
        """What a manifest records about these weights."""
        return {"rule": self.rule, "ess": round(self.ess, 1), "ess_share": round(self.ess_share, 4),
                "domain_auc": round(self.domain_auc, 4), "n_base": self.n_base, "n_scene": self.n_scene,
                "clip": self.clip, "seed": self.seed, "max_weight": round(float(self.weights.max()), 3)
                if self.n_base else None}


# ---------------------------------------------------------------- helpers
def ess_of(w: np.ndarray) -> float:
    """Kish's effective sample size (sum w)^2 / sum w^2 (0 for no or all-zero weights)."""
    w = np.asarray(w, dtype=np.float64)
    s2 = float((w * w).sum())
    return float(w.sum()) ** 2 / s2 if s2 > 0 else 0.0


def clip_weights(w: np.ndarray, clip: float) -> np.ndarray:
    """Mean 1 with no weight above ``clip``: w' = min(s * w, clip), the scale s solved exactly
    so that the mean is 1 (the capped rows are the largest; sort once, try each count of capped
    rows).  When fewer than n / clip rows carry any weight the cap cannot hold with mean 1:
    they share the total equally."""
    w = np.asarray(w, dtype=np.float64).copy()
    n = len(w)
    if not n:
        return w
    w = np.where(np.isfinite(w) & (w > 0), w, 0.0)
    if w.sum() <= 0:
        return np.ones_like(w)
    w /= w.mean()
    if not clip or clip <= 1 or w.max() <= clip:
        return w
    desc = np.sort(w)[::-1]
    tail = np.concatenate([np.cumsum(desc[::-1])[::-1], [0.0]])  # tail[k] = sum of desc[k:]
    for k in range(1, n + 1):  # k largest rows capped at clip, the rest scaled by s
        if tail[k] <= 0:
            break
        s = (n - k * clip) / tail[k]
        if s > 0 and s * desc[k] <= clip + 1e-12:
            return np.minimum(w * s, clip)
    pos = w > 0  # degenerate: too few rows with weight for the cap
    return np.where(pos, n / pos.sum(), 0.0)


def _auc(y: np.ndarray, s: np.ndarray) -> float:
    """Rank AUC with ties counted half (Mann-Whitney), numpy only."""
    y = np.asarray(y).astype(bool)
    n1, n0 = int(y.sum()), int((~y).sum())
    if not n1 or not n0:
        return 0.5
    order = np.argsort(s, kind="mergesort")
    ss = np.asarray(s)[order]
    ranks = np.empty(len(ss), dtype=np.float64)
    i = 0
    while i < len(ss):  # average ranks of ties
        j = i
        while j + 1 < len(ss) and ss[j + 1] == ss[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return float((ranks[y].sum() - n1 * (n1 + 1) / 2.0) / (n1 * n0))


class _Design:
    """Robust standardisation + missingness indicators, fitted on one set of rows."""

    def __init__(self, X: np.ndarray):
        with np.errstate(all="ignore"):
            med = np.nanmedian(X, axis=0)
            q75, q25 = np.nanpercentile(X, 75, axis=0), np.nanpercentile(X, 25, axis=0)
            sd = np.nanstd(X, axis=0)
        scale = (q75 - q25) / 1.349
        scale = np.where(np.isfinite(scale) & (scale > 1e-12), scale, sd)
        self.keep = np.isfinite(med) & np.isfinite(scale) & (scale > 1e-12)  # constant / empty columns carry nothing
        self.med = np.where(self.keep, med, 0.0)
        self.scale = np.where(self.keep, scale, 1.0)
        miss = ~np.isfinite(X)
        pats: dict[bytes, int] = {}
        for j in np.flatnonzero(miss.any(axis=0) & ~miss.all(axis=0)):
            pats.setdefault(np.packbits(miss[:, j]).tobytes(), int(j))
        self.miss_cols = np.array(sorted(pats.values()), dtype=np.int64)

    def __call__(self, X: np.ndarray) -> np.ndarray:
        Z = (X - self.med) / self.scale
        Z = np.where(np.isfinite(Z), np.clip(Z, -CLIP_Z, CLIP_Z), 0.0)[:, self.keep]
        M = (~np.isfinite(X[:, self.miss_cols])).astype(np.float64)
        return np.hstack([np.ones((len(X), 1)), Z, M])


def _sigmoid(eta: np.ndarray) -> np.ndarray:
    """1 / (1 + exp(-eta)) without overflow."""
    return 0.5 * (1.0 + np.tanh(0.5 * eta))


def _fit_logistic(Z: np.ndarray, y: np.ndarray, penalty: float) -> np.ndarray:
    """L2-penalised logistic regression by Newton steps (intercept not penalised)."""
    n, d = Z.shape
    beta = np.zeros(d)
    prior = min(max(y.mean(), 1e-6), 1 - 1e-6)
    beta[0] = math.log(prior / (1 - prior))
    lam = np.full(d, penalty * n / 1000.0)
    lam[0] = 0.0
    for _ in range(NEWTON_STEPS):
        p = _sigmoid(Z @ beta)
        g = Z.T @ (p - y) + lam * beta
        h = (Z * (p * (1 - p))[:, None]).T @ Z + np.diag(lam + 1e-9)
        step = np.linalg.solve(h, g)
        norm = float(np.sqrt((step * step).sum()))
        if norm > MAX_STEP:  # damped Newton: separable data would otherwise jump to huge coefficients
            step *= MAX_STEP / norm
        beta -= step
        if float(np.abs(step).max()) < 1e-7:
            break
    return beta


def _limit_threads(threads: int):
    """Cap the BLAS threads (deterministic sums) when threadpoolctl is there; else a no-op."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl comes with numpy's usual stacks
        import contextlib

        return contextlib.nullcontext()
    return threadpool_limits(limits=max(1, int(threads)))


def domain_logits(base_X: np.ndarray, scene_X: np.ndarray, *, seed: int = 0,
                  threads: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Cross-fitted log(p / (1 - p)), p = P(scene | x), of every base row and every scene row
    (FOLDS folds).  Logits, not probabilities: far from the training data p rounds to 0 for
    every base row, and the ratios between rows would be lost."""
    X = np.vstack([np.asarray(base_X, np.float64), np.asarray(scene_X, np.float64)])
    y = np.concatenate([np.zeros(len(base_X)), np.ones(len(scene_X))])
    fold = np.empty(len(X), dtype=np.int64)
    rng = np.random.default_rng(seed)
    for c in (0, 1):  # stratified: each fold holds its share of both sets
        idx = np.flatnonzero(y == c)
        fold[rng.permutation(idx)] = np.arange(len(idx)) % FOLDS
    p = np.empty(len(X))
    with _limit_threads(threads):
        for f in range(FOLDS):
            tr, va = fold != f, fold == f
            if not va.any():
                continue
            design = _Design(X[tr])
            beta = _fit_logistic(design(X[tr]), y[tr], L2_PENALTY)
            p[va] = design(X[va]) @ beta
    return p[:len(base_X)], p[len(base_X):]


# ---------------------------------------------------------------- the API
def scene_weights(base_X: np.ndarray, scene_X: np.ndarray, *, seed: int = 0, clip: float = 20.0,
                  threads: int = 1) -> SceneWeights:
    """Weights for the training rows ``base_X`` (n_base x d) that make them resemble the
    scene's tiles ``scene_X`` (n_scene x d, the same columns); NaN = missing.  See the module
    docstring for the classifier, the cross-fitting and the clipping rule."""
    base_X = np.asarray(base_X, dtype=np.float64)
    scene_X = np.asarray(scene_X, dtype=np.float64)
    if base_X.ndim != 2 or scene_X.ndim != 2 or base_X.shape[1] != scene_X.shape[1]:
        raise ValueError(f"base and scene features must be 2-D with the same columns: {base_X.shape} vs {scene_X.shape}")
    nb, ns = len(base_X), len(scene_X)
    if nb == 0:
        raise ValueError("no training rows to weight")
    if ns < 2 * FOLDS:
        w = np.ones(nb)
        return SceneWeights(w, float(nb), nb, ns, 0.5, f"Scene weights not estimated: only {ns} valid scene "
                            f"tile(s) (at least {2 * FOLDS} needed); training rows keep weight 1.", clip, seed)
    eb, es = domain_logits(base_X, scene_X, seed=seed, threads=threads)
    auc = _auc(np.concatenate([np.zeros(nb), np.ones(ns)]), np.concatenate([eb, es]))
    # p/(1-p) * nb/ns = exp(logit) * nb/ns; the constant factor cancels in the mean-1
    # normalisation, so the weights are exp(logit - max logit) (no overflow), then capped
    w = clip_weights(np.exp(eb - eb.max()), clip)
    ess = ess_of(w)
    share = ess / nb
    if share < MIN_ESS_SHARE or auc >= MAX_DOMAIN_AUC:
        meaning = "the scene is unlike the training data"
    elif share < 0.5:
        meaning = "the scene resembles part of the training data, which now counts more"
    else:
        meaning = "the scene resembles the training data; the weights change little"
    note = (f"Scene weights: effective sample size {ess:.0f} of {nb} training rows ({share:.0%}), "
            f"domain AUC {auc:.2f} over {ns} scene tiles: {meaning}.")
    return SceneWeights(w, float(ess), nb, ns, float(auc), note, float(clip), int(seed))


def needs_verdicts(sw: SceneWeights) -> str | None:
    """A plain warning when the weights cannot stand in for the scene (ESS share below
    MIN_ESS_SHARE, or the domain classifier separates scene and training rows with AUC of
    at least MAX_DOMAIN_AUC); None when the weights are usable."""
    if not sw.too_small:
        return None
    return (f"The scene is unlike the training data (effective sample size {sw.ess:.0f} of {sw.n_base} training "
            f"rows, {sw.ess_share:.0%}; the scene's tiles are told from the training rows with AUC "
            f"{sw.domain_auc:.2f}): the model's scores here are an extrapolation. Review about "
            f"{VERDICTS_PER_CLASS} landslide and {VERDICTS_PER_CLASS} non-landslide tiles (enough to know its "
            f"recall and false-alarm rate here within +-{HALF_WIDTH:.2f} at 95 % confidence) and run "
            "landslide:adapt.")
