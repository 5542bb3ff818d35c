"""Accuracy and landslide area from a stratified random sample of reviewed tiles, by the
estimators of Olofsson et al. (2014), "Good practices for estimating area and assessing
accuracy of land change", Remote Sensing of Environment 148, 42-57.

Strata h are the map classes (1 = flagged, 0 = not flagged) with N_h scored tiles each,
W_h = N_h / N.  In stratum h, n_h sample tiles carry a usable verdict (confirmed = 1,
rejected = 0; unsure ignored) and q_h = n_h1 / n_h is the fraction of them that are
landslides.  The estimated cell proportions (map i, reference j) are
p_i1 = W_i q_i and p_i0 = W_i (1 - q_i) (Olofsson eq. 4), and

* overall accuracy      OA = W_1 q_1 + W_0 (1 - q_0)                       (eq. 1)
* user's accuracy       UA = q_1        (precision of the landslide class)  (eq. 2)
* producer's accuracy   PA = W_1 q_1 / (W_1 q_1 + W_0 q_0)  (recall)        (eq. 3)
* F1                    2 UA PA / (UA + PA)
* landslide proportion  p_.1 = W_1 q_1 + W_0 q_0; tiles N p_.1; area A p_.1 (eq. 9-10)

Variances: V(q_h) = q_h (1 - q_h) / (n_h - 1), the strata sampled independently; OA
(eq. 5), UA (eq. 6), PA (eq. 7) and the area (eq. 10) by Olofsson's formulas, F1 by the
delta method over (q_1, q_0) (which also gives eqs. 5-7 exactly, checked in the tests).
95 % intervals are estimate +- 1.96 standard errors, clipped to [0, 1] for ratios.

When the strata of the draw are not today's map classes (the map was re-scored after the
sample was drawn: the review panel's "Adapt and re-score", or a top-up after a threshold
change), ``design_accuracy`` uses the estimators of Stehman (2014), "Estimating area and map
accuracy for stratified random sampling when the strata are different from the map classes",
International Journal of Remote Sensing 35, 4923-4939: every measure is a ratio of estimated
totals R = Y / X (OA: y = [map = reference], x = 1; UA: y = [map 1 and reference 1], x = [map 1];
PA: the same y, x = [reference 1]; F1: y = 2 [map 1 and reference 1], x = [map 1] + [reference 1];
share: y = [reference 1], x = 1), totals estimated with the design weights of
``engine.design`` (random verdicts M_h / n_h within the stratum of the draw, purposive
verdicts 1: a census of themselves), and V(R) = sum_h M_h^2 s^2_{d,h} / n_h / X^2 with
d = y - R x over the random verdicts of stratum h (Stehman eq. 27-28; purposive verdicts add
no variance).  Where the strata are the map classes and there are no purposive verdicts
these are Olofsson's estimates and standard errors exactly (tested).
"""
from __future__ import annotations

import html
import math
from dataclasses import dataclass

import numpy as np

from ..core.errors import InputError
from .design import Z95, design_weights, strata, verdict_arrays
from .verdicts import PICK_RANDOM


@dataclass
class Estimate:
    value: float
    se: float

    @property
    def ci(self) -> tuple[float, float]:
        return self.value - Z95 * self.se, self.value + Z95 * self.se

    def ci_clipped(self, lo=0.0, hi=1.0) -> tuple[float, float]:
        a, b = self.ci
        return max(lo, a), min(hi, b)


@dataclass
class StratifiedAccuracy:
    N: tuple  # (N_1 flagged, N_0 not flagged) scored tiles
    n: tuple  # (n_1, n_0) sample tiles with a usable verdict
    n_landslide: tuple  # (n_11, n_01): confirmed landslides in each stratum's sample
    overall: Estimate
    users: Estimate  # precision of the landslide class
    producers: Estimate  # recall
    f1: Estimate
    proportion: Estimate  # landslide share of the scored tiles
    tiles: Estimate  # landslide tile count
    area: Estimate  # landslide area in the unit of ``tile_area``
    area_unit: str = "km2"
    design: str = ""  # how the strata relate to the map ('' = Olofsson, strata are today's map classes)

    def rows(self) -> list[tuple[str, str, str]]:
        """(measure, estimate, 95 % interval) for tables and reports."""
        def pct(e):
            lo, hi = e.ci_clipped()
            return f"{e.value:.3f}", f"{lo:.3f} - {hi:.3f}"

        def count(e, fmt):
            lo, hi = e.ci
            return fmt.format(e.value), f"{fmt.format(max(0.0, lo))} - {fmt.format(hi)}"
        return [("Overall accuracy", *pct(self.overall)),
                ("User's accuracy (precision)", *pct(self.users)),
                ("Producer's accuracy (recall)", *pct(self.producers)),
                ("F1", *pct(self.f1)),
                ("Landslide tiles", *count(self.tiles, "{:.1f}")),
                (f"Landslide tile area ({self.area_unit})", *count(self.area, "{:.2f}"))]

    def as_dict(self) -> dict:
        out = {"N_flagged": self.N[0], "N_unflagged": self.N[1], "n_flagged": self.n[0], "n_unflagged": self.n[1],
               "confirmed_in_flagged": self.n_landslide[0], "confirmed_in_unflagged": self.n_landslide[1]}
        for k in ("overall", "users", "producers", "f1", "proportion", "tiles", "area"):
            e = getattr(self, k)
            lo, hi = e.ci
            out.update({k: e.value, f"{k}_se": e.se, f"{k}_lo": lo, f"{k}_hi": hi})
        return out


def _var_q(q: float, n: int) -> float:
    return q * (1.0 - q) / (n - 1)


def stratified_accuracy(N1: int, N0: int, n11: int, n1: int, n01: int, n0: int,
                        tile_area: float = 1.0, area_unit: str = "km2") -> StratifiedAccuracy:
    """Olofsson estimators from counts: N1 / N0 scored tiles mapped landslide / not; in the
    flagged stratum's sample n1 verdicts of which n11 landslides, in the unflagged one n0
    verdicts of which n01 landslides.  ``tile_area``: mean area of a tile (for the area)."""
    if n1 < 2 or n0 < 2:
        raise InputError(
            f"The sample needs at least 2 verdicts (confirmed or rejected) in each map class; it has {n1} among "
            f"flagged and {n0} among unflagged tiles. Draw a stratified sample (landslide:sample) and review it.")
    if not (0 <= n11 <= n1 and 0 <= n01 <= n0) or N1 < n1 or N0 < n0:
        raise InputError("Inconsistent sample counts: more verdicts than tiles in a map class.")
    N = N1 + N0
    W1, W0 = N1 / N, N0 / N
    q1, q0 = n11 / n1, n01 / n0
    v1, v0 = _var_q(q1, n1), _var_q(q0, n0)

    oa = W1 * q1 + W0 * (1 - q0)
    v_oa = W1 ** 2 * v1 + W0 ** 2 * v0  # eq. 5
    ua = q1
    v_ua = v1  # eq. 6
    p_1 = W1 * q1 + W0 * q0  # landslide proportion
    v_p = W1 ** 2 * v1 + W0 ** 2 * v0  # eq. 10 (SE of the proportion)
    if p_1 > 0:
        pa = W1 * q1 / p_1
        # eq. 7 with N_.j estimated as N p_.1
        Nhat = N * p_1
        v_pa = (N1 ** 2 * (1 - pa) ** 2 * v1 + pa ** 2 * N0 ** 2 * v0) / Nhat ** 2
    else:
        pa, v_pa = 0.0, 0.0
    # F1 = 2 W1 q1 / (W1 + W1 q1 + W0 q0): delta method over q1, q0
    den = W1 + W1 * q1 + W0 * q0
    f1 = 2 * W1 * q1 / den if den > 0 else 0.0
    if den > 0:
        d1 = (2 * W1 * den - 2 * W1 * q1 * W1) / den ** 2
        d0 = -2 * W1 * q1 * W0 / den ** 2
        v_f1 = d1 ** 2 * v1 + d0 ** 2 * v0
    else:
        v_f1 = 0.0
    se_p = math.sqrt(v_p)
    return StratifiedAccuracy(
        (N1, N0), (n1, n0), (n11, n01),
        Estimate(oa, math.sqrt(v_oa)), Estimate(ua, math.sqrt(v_ua)), Estimate(pa, math.sqrt(v_pa)),
        Estimate(f1, math.sqrt(v_f1)), Estimate(p_1, se_p), Estimate(N * p_1, N * se_p),
        Estimate(N * tile_area * p_1, N * tile_area * se_p), area_unit)


def accuracy_from_tiles(flagged, scored, in_sample, labels, tile_areas=None, area_unit: str = "km2"):
    """From per-tile arrays: map class ``flagged``, ``scored`` (not nodata), ``in_sample``
    (the stratified sample, drawn within today's map classes), verdict ``labels`` (1, 0,
    NaN = none/unsure).  Verdicts on tiles outside the sample are not used.  ``tile_areas``
    (m2 per tile) give the mean tile area; the area is reported in km2.  Grids that record
    how each tile was picked and the strata of the draw go through ``design_accuracy``."""
    in_sample = np.asarray(in_sample, dtype=bool)
    labels = np.where(in_sample, np.asarray(labels, dtype=np.float64), np.nan)
    picks = [PICK_RANDOM if s else "" for s in in_sample]
    return design_accuracy(flagged, scored, labels, picks, np.asarray(flagged, dtype=np.int64),
                           tile_areas=tile_areas, area_unit=area_unit)


def _stratified_var(v, rand, stratum, M) -> float:
    """sum_h M_h^2 s^2_h / n_h of the values ``v`` over each stratum's random verdicts (Stehman
    eq. 27-28); purposive verdicts (a census of themselves) add nothing."""
    var = 0.0
    for h, M_h in M.items():
        vh = v[rand & (stratum == h)]
        if len(vh) > 1:
            var += M_h ** 2 * float(vh.var(ddof=1)) / len(vh)
    return var


def _ratio(y, x, w, rand, stratum, M) -> Estimate:
    """Stehman's ratio estimator R = sum w y / sum w x and its standard error (module docstring)."""
    X = float((w * x).sum())
    if X <= 0:
        return Estimate(0.0, 0.0)
    R = float((w * y).sum()) / X
    return Estimate(R, math.sqrt(_stratified_var(y - R * x, rand, stratum, M)) / X)


def _total(y, w, rand, stratum, M) -> Estimate:
    return Estimate(float((w * y).sum()), math.sqrt(_stratified_var(y, rand, stratum, M)))


def design_accuracy(flagged, scored, labels, picks, stratum, tile_areas=None,
                    area_unit: str = "km2") -> StratifiedAccuracy:
    """Accuracy of today's map (``flagged``) from verdicts whose random part was drawn within
    ``stratum`` (the map class at draw time; ``engine.verdicts.STRATUM_FIELD``): Stehman (2014),
    see the module docstring.  ``picks``: ``PICK_*`` per tile (only ``random`` verdicts are
    extrapolated; every other verdict counts for its own tile).  Each stratum of the draw that
    holds unreviewed tiles needs 2 random verdicts."""
    flagged = np.asarray(flagged, dtype=bool)
    if len(flagged) != len(labels):
        raise ValueError("flagged and labels must have one entry per tile")
    labels, scored, stratum, rand, purp = verdict_arrays(labels, picks, stratum, scored)
    if not (scored & np.array([p == PICK_RANDOM for p in picks], dtype=bool)).any():
        raise InputError("The grid has no sample tiles (its 'sample' field is empty): draw a stratified sample "
                         "first (landslide:sample or the review panel's 'Draw accuracy sample').")
    if not rand.any():
        raise InputError("No sample tile has a verdict yet: review the sample tiles (confirm or reject) first.")
    M: dict[int, int] = {}
    for h, _in_h, M_h, n_h in strata(scored, stratum, rand, purp):
        if n_h < 2:
            what = "flagged" if h == 1 else "unflagged"
            raise InputError(
                f"The sample needs at least 2 verdicts (confirmed or rejected) in each class it was drawn from; it "
                f"has {n_h} among tiles {what} when it was drawn. Draw a stratified sample (landslide:sample) "
                "and review it.")
        M[h] = M_h
    w = design_weights(labels, picks, stratum, scored)
    use = rand | purp
    m = flagged.astype(np.float64) * use
    r = np.where(use, np.nan_to_num(labels), 0.0)
    one = use.astype(np.float64)
    agree = one * (m == r)
    oa = _ratio(agree, one, w, rand, stratum, M)
    ua = _ratio(m * r, m, w, rand, stratum, M)
    pa = _ratio(m * r, r, w, rand, stratum, M)
    f1 = _ratio(2 * m * r, m + r, w, rand, stratum, M)
    share = _ratio(r, one, w, rand, stratum, M)
    tiles = _total(r, w, rand, stratum, M)
    area = 1.0
    if tile_areas is not None:
        a = np.asarray(tile_areas, dtype=np.float64)[scored]
        area = float(a.mean()) / 1e6 if len(a) else 1.0
    s1, s0 = scored & flagged, scored & ~flagged
    same = bool(np.array_equal(stratum[scored], flagged[scored].astype(np.int64))) and not purp.any()
    moved = int((stratum[scored] != flagged[scored]).sum())
    design = "" if same else (
        f"Stehman (2014) estimators: the sample was drawn within the map classes of its draw ({moved} scored "
        f"tiles have changed class since), {int(rand.sum())} random verdicts weighed M_h / n_h, "
        f"{int(purp.sum())} purposive verdicts counted for their own tiles.")
    return StratifiedAccuracy(
        (int(s1.sum()), int(s0.sum())), (int((use & s1).sum()), int((use & s0).sum())),
        (int((use & s1 & (r == 1)).sum()), int((use & s0 & (r == 1)).sum())),
        oa, ua, pa, f1, share, tiles, Estimate(tiles.value * area, tiles.se * area), area_unit, design)


def accuracy_table_html(acc) -> str:
    rows = "".join(f"<tr><td>{html.escape(m)}</td><td>{e}</td><td>{ci}</td></tr>" for m, e, ci in acc.rows())
    return ("<table><tr><th>Measure</th><th>Estimate</th><th>95 % interval</th></tr>" + rows + "</table>"
            f"<p class='meta'>Stratified estimators of Olofsson et al. (2014) from {acc.n[0]} flagged and {acc.n[1]} "
            f"unflagged sample tiles with a verdict ({acc.n_landslide[0]} and {acc.n_landslide[1]} confirmed); "
            f"strata: {acc.N[0]} flagged, {acc.N[1]} unflagged scored tiles.</p>"
            + (f"<p class='meta'>{html.escape(acc.design)}</p>" if acc.design else ""))


def accuracy_table_text(acc) -> str:
    lines = [f"{m}: {e} (95 % CI {ci})" for m, e, ci in acc.rows()]
    lines.append(f"Sample verdicts: {acc.n[0]} flagged ({acc.n_landslide[0]} confirmed), {acc.n[1]} not flagged "
                 f"({acc.n_landslide[1]} confirmed); strata {acc.N[0]} / {acc.N[1]} tiles")
    if acc.design:
        lines.append(acc.design)
    return "\n".join(lines)


def accuracy_page_html(acc) -> str:
    """A stand-alone HTML page holding the accuracy table (landslide:accuracy and the command line)."""
    return ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>Accuracy</title><style>"
            "body{font-family:'DejaVu Sans',Arial,sans-serif}table{border-collapse:collapse}"
            "td,th{border:1px solid #ccc;padding:.2em .6em}.meta{color:#666}</style></head><body>"
            "<h1>Accuracy from a stratified sample</h1>" + accuracy_table_html(acc) + "</body></html>")
