"""No-verdict evidence for ADAPT_TO_SCENE on the real 7147-patch features.

    python -m sentinel_landslide.training.scene_eval                   # table to stdout
    python -m sentinel_landslide.training.scene_eval --doc docs/concepts/scene-adaptation.md

Pseudo-regions: k-means (K = 5, sklearn KMeans, n_init 10, random_state 0) on the robustly
standardised features of the full combination (s2+desc+asc: every patch has them).  K = 5
leaves each held-out "region" about a fifth of the patches on average (a scene-sized set
with a few hundred landslides, so its F1 is not noise) while the model still trains on four
fifths; k-means cells are regions of feature space, i.e. scenes that look different, which
is what scene adaptation is for (a stricter test than a random split).  Two splits:
- "hard": each patch in its nearest centre's region.  k-means cells are separated by
  hyperplanes, so a linear domain classifier tells a region from the rest perfectly: the
  case of a scene with nothing like it in training;
- "soft": each patch drawn into region j with probability proportional to
  exp(-(d_j^2 - d_min^2) / T), d_j its distance to centre j, T the median over patches of
  (second-nearest - nearest squared distance), seeded: regions overlap near their borders,
  the case of a scene partly like the training data (the typical patch has odds 1 : e of
  falling into its second region instead of its own).

For each region, each combination evaluated and each seed: the GBM pair (LightGBM + XGBoost,
train_gbm's hyper-parameters) is trained on the other regions
- "base": unweighted, as the bundled pair;
- "weighted": with ``scene_shift.scene_weights`` of the training rows against the held-out
  region's features (no labels of the region used);
- "ADAPT_TO_SCENE": what the option does: weighted, unless ``needs_verdicts`` says the
  scene is unlike the training data, then base.
Threshold: the package's rule, the F1-optimal threshold of the averaged pair's out-of-fold
probabilities on the training rows (3-fold here, 5 in train_gbm; computed once per region
with seed 0), the same for every variant (scene adaptation keeps the package's thresholds).
Held-out AUC and F1 are averaged over seeds, then over the regions with at least MIN_POS
(20) landslides (a region without landslides has no AUC or F1, its flagged tiles are all
false alarms and are shown; with a handful, one tile swings F1 from 0 to 1).  "flag all" is the F1 of flagging every tile.

Tree counts are cut to ROUNDS_SCALE (0.15) of train_gbm's, so the whole run takes minutes
on two cores; the comparison is between variants with the same counts.
"""
from __future__ import annotations

import argparse
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from ..core.features import feature_matrix, feature_names
from .adapt import DEFAULT_BASE_FEATURES
from .doc_blocks import replace_between
from .feature_table import load_feature_table
from .metrics import auc_score, prf
from .scene_shift import needs_verdicts, scene_weights
from .train_gbm import LGB_ROUNDS, XGB_ROUNDS, best_threshold, fit_lgb, fit_xgb, predict, supported_rows

K_REGIONS = 5
CV_FOLDS = 3
ROUNDS_SCALE = 0.15
COMBOS = ("s2+desc+asc", "s2")
SEEDS = (0, 1)
SPLITS = ("hard", "soft")
MIN_POS = 20
START = "<!-- scene-eval:start (python -m sentinel_landslide.training.scene_eval --doc docs/concepts/scene-adaptation.md) -->"
END = "<!-- scene-eval:end -->"


def say(msg: str) -> None:
    print(f"[scene_eval {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def regions(table: dict, k: int = K_REGIONS) -> dict:
    """{"hard": nearest-centre region, "soft": region drawn by distance} of every row (k-means
    on the robustly standardised full-combination features; see the module docstring)."""
    from sklearn.cluster import KMeans

    X = feature_matrix(table, list(feature_names("s2+desc+asc"))).astype(np.float64)
    med = np.nanmedian(X, axis=0)
    iqr = (np.nanpercentile(X, 75, axis=0) - np.nanpercentile(X, 25, axis=0)) / 1.349
    sd = np.nanstd(X, axis=0)
    scale = np.where(iqr > 1e-12, iqr, np.where(sd > 1e-12, sd, 1.0))
    Z = np.clip(np.nan_to_num((X - med) / scale), -5, 5)
    km = KMeans(n_clusters=k, n_init=10, random_state=0).fit(Z)
    d2 = ((Z[:, None, :] - km.cluster_centers_[None, :, :]) ** 2).sum(axis=2)
    srt = np.sort(d2, axis=1)
    temp = float(np.median(srt[:, 1] - srt[:, 0]))
    p = np.exp(-(d2 - srt[:, :1]) / temp)
    p /= p.sum(axis=1, keepdims=True)
    u = np.random.default_rng(0).random(len(Z))[:, None]
    soft = (u > np.cumsum(p, axis=1)).sum(axis=1)
    return {"hard": np.asarray(km.labels_), "soft": np.minimum(soft, k - 1)}


def _fit_predict(kind, X, y, w, names, rounds, seed, Xt):
    fit = fit_lgb if kind == "lightgbm" else fit_xgb
    return predict(kind, fit(X, y, names, rounds, seed, 1, weight=w), Xt, 1)


def _pair(pool, X, y, w, names, mode, seed, Xt):
    """Futures of both members' probabilities of Xt."""
    return [pool.submit(_fit_predict, kind, X, y, w, names, max(10, int(r[mode] * ROUNDS_SCALE)), seed, Xt)
            for kind, r in (("lightgbm", LGB_ROUNDS), ("xgboost", XGB_ROUNDS))]


def _mean(fs) -> np.ndarray:
    return np.mean([f.result() for f in fs], axis=0)


def evaluate(path: Path, k: int, seeds, combos, splits, threads: int) -> list[dict]:
    _, y, table = load_feature_table(path)
    regs = regions(table, k)
    say(f"{len(y)} patches, {int(y.sum())} landslides; region sizes "
        + "; ".join(f"{sp}: {np.bincount(regs[sp], minlength=k).tolist()}" for sp in splits))
    rows = []
    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        for split in splits:
            reg = regs[split]
            for mode in combos:
                names = list(feature_names(mode))
                sup = supported_rows(table, mode)
                X = feature_matrix(table, names)
                for r in range(k):
                    t0 = time.perf_counter()
                    tr = np.flatnonzero(sup & (reg != r))
                    te = np.flatnonzero(sup & (reg == r))
                    yt, yy = y[te], y[tr].astype(np.float64)
                    # the package's threshold rule: F1-optimal on the training rows' OOF probabilities
                    fold = np.random.default_rng(0).permutation(len(tr)) % CV_FOLDS
                    oof = np.empty(len(tr))
                    cv = [(f, _pair(pool, X[tr][fold != f], yy[fold != f], None, names, mode, f, X[tr][fold == f]))
                          for f in range(CV_FOLDS)]
                    for f, fs in cv:
                        oof[fold == f] = _mean(fs)
                    t = best_threshold(y[tr], oof)
                    for seed in seeds:
                        sw = scene_weights(X[tr], X[te], seed=seed, threads=1)
                        base = _pair(pool, X[tr], yy, None, names, mode, seed, X[te])
                        wtd = _pair(pool, X[tr], yy, sw.weights, names, mode, seed, X[te])
                        pb, pw = _mean(base), _mean(wtd)
                        warns = needs_verdicts(sw) is not None
                        use = pb if warns else pw
                        both = 0 < int(yt.sum()) < len(yt)
                        rec = {"split": split, "combo": mode, "region": r, "seed": seed, "n": len(te),
                               "pos": int(yt.sum()), "ess_share": sw.ess_share, "domain_auc": sw.domain_auc,
                               "too_small": warns, "threshold": t, "both": both}
                        for tag, p in (("base", pb), ("weighted", pw), ("adapt", use)):
                            rec[f"{tag}_auc"] = auc_score(yt, p) if both else float("nan")
                            rec[f"{tag}_f1"] = prf(yt, p, t)[0] if both else float("nan")
                            rec[f"{tag}_flagged"] = int((p >= t).sum())
                        rows.append(rec)
                        say(f"{split} {mode} region {r} seed {seed}: n {len(te)} ({rec['pos']} pos), "
                            f"ESS {sw.ess_share:.0%}, domain AUC {sw.domain_auc:.2f}, t {t:.2f}; AUC "
                            f"{rec['base_auc']:.3f} -> {rec['weighted_auc']:.3f}, F1 {rec['base_f1']:.3f} -> "
                            f"{rec['weighted_f1']:.3f}, flagged {rec['base_flagged']} -> {rec['weighted_flagged']}")
                    say(f"  ({time.perf_counter() - t0:.0f} s)")
    return rows


def _fmt(v: float, nd: int = 3) -> str:
    return "-" if not np.isfinite(v) else f"{v:.{nd}f}"


def markdown(rows: list[dict], k: int, seeds) -> str:
    out = [f"K = {k} k-means pseudo-regions (hard and soft splits), seeds {', '.join(map(str, seeds))}, tree counts "
           f"x {ROUNDS_SCALE:g}, threshold by the package's rule ({CV_FOLDS}-fold OOF F1-optimal on the training "
           f"regions). AUC / F1 on the held-out region, mean over seeds (means: regions with >= {MIN_POS} "
           "landslides); ESS = effective sample size of the weights "
           "as a share of the training rows; '(warns)': the scene-unlike-training warning fired, so ADAPT_TO_SCENE "
           "kept the base pair; 'weighted' is the refit made anyway. Flagged: tiles flagged by base / weighted "
           "(landslide tiles in the region in the patches column).", "",
           "| split | combination | region | patches (landslides) | ESS | domain AUC | AUC base | AUC weighted | "
           "F1 base | F1 weighted | F1 ADAPT_TO_SCENE | F1 flag all | flagged base / weighted |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for split in dict.fromkeys(r["split"] for r in rows):
        for c in dict.fromkeys(r["combo"] for r in rows if r["split"] == split):
            rc = [r for r in rows if r["combo"] == c and r["split"] == split]
            agg = []
            for g in sorted({r["region"] for r in rc}):
                rr = [r for r in rc if r["region"] == g]
                m = {key: float(np.mean([r[key] for r in rr])) for key in rr[0]
                     if isinstance(rr[0][key], (int, float)) and not isinstance(rr[0][key], bool)}
                m["too_small"] = sum(r["too_small"] for r in rr)
                m["both"] = rr[0]["both"]
                agg.append(m)
                prev = m["pos"] / m["n"]
                warn = "" if not m["too_small"] else (" (warns)" if m["too_small"] == len(rr)
                                                      else f" (warns {m['too_small']:.0f}/{len(rr)})")
                out.append(f"| {split} | `{c}` | {g} | {int(m['n'])} ({int(m['pos'])}) | {m['ess_share']:.0%} | "
                           f"{m['domain_auc']:.2f}{warn} | {_fmt(m['base_auc'])} | {_fmt(m['weighted_auc'])} | "
                           f"{_fmt(m['base_f1'])} | {_fmt(m['weighted_f1'])} | {_fmt(m['adapt_f1'])} | "
                           f"{_fmt(2 * prev / (1 + prev)) if m['both'] else '-'} | "
                           f"{m['base_flagged']:.0f} / {m['weighted_flagged']:.0f} |")
            ok = [a for a in agg if a["both"] and a["pos"] >= MIN_POS]
            mean = {key: float(np.mean([a[key] for a in ok])) for key in
                    ("base_auc", "weighted_auc", "base_f1", "weighted_f1", "adapt_f1")}
            out.append(f"| {split} | `{c}` | **mean** | | {np.mean([a['ess_share'] for a in agg]):.0%} | "
                       f"{np.mean([a['domain_auc'] for a in agg]):.2f} | **{mean['base_auc']:.3f}** | "
                       f"**{mean['weighted_auc']:.3f}** | **{mean['base_f1']:.3f}** | **{mean['weighted_f1']:.3f}** | "
                       f"**{mean['adapt_f1']:.3f}** | | |")
    return "\n".join(out) + "\n"


def refresh(path: Path, table: str) -> None:
    replace_between(path, START, END, table, "scene-eval")


def time_refit(path: Path, k: int, region: int, threads: int) -> list[str]:
    """The real refit ADAPT_TO_SCENE makes (bundled package, full tree counts) with one soft
    region's patches as the scene (at most SCENE_TILE_CAP of them, evenly spaced): its log,
    which gives the seconds."""
    import tempfile

    from ..models.package import load_package
    from .scene_adapt import SCENE_TILE_CAP, _even, adapt_to_scene

    _, _y, table = load_feature_table(path)
    reg = regions(table, k)["soft"]
    te = np.flatnonzero(reg == region)
    te = te[_even(len(te), SCENE_TILE_CAP)]
    scene = {mode: {n: table[n][te] for n in feature_names(mode)} for mode in COMBOS}
    with tempfile.TemporaryDirectory() as tmp:
        res = adapt_to_scene(load_package(None), scene, Path(tmp) / "pkg", path, threads=threads)
    return res.log


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="scene_eval", description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=str(DEFAULT_BASE_FEATURES), help="train_features_7147.csv.gz")
    ap.add_argument("--k", type=int, default=K_REGIONS)
    ap.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS))
    ap.add_argument("--combos", nargs="+", default=list(COMBOS))
    ap.add_argument("--splits", nargs="+", default=list(SPLITS), choices=SPLITS)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--doc", help="replace the table between the scene-eval markers of this Markdown file")
    ap.add_argument("--time-refit", type=int, metavar="REGION", default=None,
                    help="instead: time the real refit (bundled package, full tree counts) for this soft region")
    a = ap.parse_args(argv)
    if not Path(a.data).is_file():
        raise SystemExit(f"no feature table at {a.data} (the real data lives in ../shared/data)")
    if a.time_refit is not None:
        print("\n".join(time_refit(Path(a.data), a.k, a.time_refit, a.threads)))
        return 0
    t0 = time.perf_counter()
    rows = evaluate(Path(a.data), a.k, a.seeds, a.combos, a.splits, a.threads)
    table = markdown(rows, a.k, a.seeds)
    say(f"done in {time.perf_counter() - t0:.0f} s")
    if a.doc:
        refresh(Path(a.doc), table)
    sys.stdout.write(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
