"""No-verdict evidence for ADAPT_TO_SCENE on the real 7147-patch features.

    python -m sentinel_landslide.training.scene_eval                   # table to stdout
    python -m sentinel_landslide.training.scene_eval --doc docs/concepts/scene-adaptation.md

Pseudo-regions: k-means (K = 5, sklearn KMeans, n_init 10, random_state 0) on the robustly
standardised features of the full combination (s2+desc+asc: every patch has them).  K = 5
leaves each held-out "region" about a fifth of the patches (a scene-sized set with a few
hundred landslides, so its F1 is not noise) while the model still trains on four fifths;
k-means cells are regions of feature space, i.e. scenes that look different, which is what
scene adaptation is for (a stricter test than a random split).

For each region, each combination evaluated and each seed: the GBM pair (LightGBM + XGBoost,
train_gbm's hyper-parameters) is trained on the other regions
- "base": unweighted, as the bundled pair;
- "weighted": with ``scene_shift.scene_weights`` of the training rows against the held-out
  region's features (no labels of the region used);
- "ADAPT_TO_SCENE": what the option does: weighted, unless ``needs_verdicts`` says the
  scene is unlike the training data, then base.
Threshold: the package's rule, the F1-optimal threshold of the averaged pair's out-of-fold
probabilities on the training rows (3-fold here, 5 in train_gbm), the same for every variant
(scene adaptation keeps the package's thresholds).  Held-out AUC and F1 are averaged over
seeds, then over regions.  "flag all" is the F1 of flagging every tile.

Tree counts are cut to ROUNDS_SCALE (1/4) of train_gbm's, so the whole run takes minutes
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
from .feature_table import load_feature_table
from .metrics import auc_score, prf
from .scene_shift import needs_verdicts, scene_weights
from .train_gbm import LGB_ROUNDS, XGB_ROUNDS, best_threshold, fit_lgb, fit_xgb, predict, supported_rows

K_REGIONS = 5
CV_FOLDS = 3
ROUNDS_SCALE = 0.25
COMBOS = ("s2+desc+asc", "s2")
SEEDS = (0, 1, 2)
START = "<!-- scene-eval:start (python -m sentinel_landslide.training.scene_eval --doc docs/concepts/scene-adaptation.md) -->"
END = "<!-- scene-eval:end -->"


def say(msg: str) -> None:
    print(f"[scene_eval {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def regions(table: dict, k: int = K_REGIONS) -> np.ndarray:
    """k-means region of every row on the robustly standardised full-combination features."""
    from sklearn.cluster import KMeans

    X = feature_matrix(table, list(feature_names("s2+desc+asc"))).astype(np.float64)
    med = np.nanmedian(X, axis=0)
    iqr = (np.nanpercentile(X, 75, axis=0) - np.nanpercentile(X, 25, axis=0)) / 1.349
    sd = np.nanstd(X, axis=0)
    scale = np.where(iqr > 1e-12, iqr, np.where(sd > 1e-12, sd, 1.0))
    Z = np.clip(np.nan_to_num((X - med) / scale), -5, 5)
    return KMeans(n_clusters=k, n_init=10, random_state=0).fit_predict(Z)


def _fit_predict(kind, X, y, w, names, rounds, seed, Xt):
    fit = fit_lgb if kind == "lightgbm" else fit_xgb
    return predict(kind, fit(X, y, names, rounds, seed, 1, weight=w), Xt, 1)


def _pair(pool, X, y, w, names, mode, seed, Xt):
    """Futures of both members' probabilities of Xt."""
    return [pool.submit(_fit_predict, kind, X, y, w, names, max(10, int(r[mode] * ROUNDS_SCALE)), seed, Xt)
            for kind, r in (("lightgbm", LGB_ROUNDS), ("xgboost", XGB_ROUNDS))]


def _mean(fs) -> np.ndarray:
    return np.mean([f.result() for f in fs], axis=0)


def evaluate(path: Path, k: int, seeds, combos, threads: int) -> list[dict]:
    _, y, table = load_feature_table(path)
    reg = regions(table, k)
    say(f"{len(y)} patches, {int(y.sum())} landslides; region sizes {np.bincount(reg).tolist()}")
    rows = []
    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        for mode in combos:
            names = list(feature_names(mode))
            sup = supported_rows(table, mode)
            X = feature_matrix(table, names)
            for r in range(k):
                tr = np.flatnonzero(sup & (reg != r))
                te = np.flatnonzero(sup & (reg == r))
                yt = y[te]
                for seed in seeds:
                    t0 = time.perf_counter()
                    sw = scene_weights(X[tr], X[te], seed=seed, threads=1)
                    yy = y[tr].astype(np.float64)
                    base = _pair(pool, X[tr], yy, None, names, mode, seed, X[te])
                    wtd = _pair(pool, X[tr], yy, sw.weights, names, mode, seed, X[te])
                    fold = np.random.default_rng(seed).permutation(len(tr)) % CV_FOLDS
                    oof = np.empty(len(tr))
                    cv = [(f, _pair(pool, X[tr][fold != f], yy[fold != f], None, names, mode, seed + f,
                                    X[tr][fold == f])) for f in range(CV_FOLDS)]
                    for f, fs in cv:
                        oof[fold == f] = _mean(fs)
                    t = best_threshold(y[tr], oof)
                    pb, pw = _mean(base), _mean(wtd)
                    use = pb if needs_verdicts(sw) else pw
                    rec = {"combo": mode, "region": r, "seed": seed, "n": len(te), "pos": int(yt.sum()),
                           "ess_share": sw.ess_share, "domain_auc": sw.domain_auc,
                           "too_small": bool(needs_verdicts(sw)), "threshold": t}
                    for tag, p in (("base", pb), ("weighted", pw), ("adapt", use)):
                        rec[f"{tag}_auc"] = auc_score(yt, p)
                        rec[f"{tag}_f1"] = prf(yt, p, t)[0]
                        rec[f"{tag}_flagged"] = int((p >= t).sum())
                    rows.append(rec)
                    say(f"{mode} region {r} seed {seed}: n {len(te)} ({rec['pos']} pos), ESS {sw.ess_share:.0%}, "
                        f"domain AUC {sw.domain_auc:.2f}, t {t:.2f}; AUC {rec['base_auc']:.3f} -> "
                        f"{rec['weighted_auc']:.3f}, F1 {rec['base_f1']:.3f} -> {rec['weighted_f1']:.3f} "
                        f"({time.perf_counter() - t0:.0f} s)")
    return rows


def markdown(rows: list[dict], k: int, seeds) -> str:
    out = [f"K = {k} k-means pseudo-regions, seeds {', '.join(map(str, seeds))}, tree counts x {ROUNDS_SCALE:g}, "
           f"threshold by the package's rule ({CV_FOLDS}-fold OOF F1-optimal on the training regions). "
           "AUC / F1 on the held-out region, mean over seeds; ESS = effective sample size of the weights as a share "
           "of the training rows; 'flagged' = tiles flagged (landslide tiles in the region in brackets).", "",
           "| combination | region | patches (landslides) | ESS | domain AUC | AUC base | AUC weighted | "
           "F1 base | F1 weighted | F1 ADAPT_TO_SCENE | F1 flag all | flagged base / weighted |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    combos = list(dict.fromkeys(r["combo"] for r in rows))
    for c in combos:
        rc = [r for r in rows if r["combo"] == c]
        regs = sorted({r["region"] for r in rc})
        agg = []
        for g in regs:
            rr = [r for r in rc if r["region"] == g]
            m = {key: float(np.mean([r[key] for r in rr])) for key in rr[0] if isinstance(rr[0][key], (int, float))}
            m["too_small"] = any(r["too_small"] for r in rr)
            agg.append(m)
            prev = m["pos"] / m["n"]
            out.append(f"| `{c}` | {g} | {int(m['n'])} ({int(m['pos'])}) | {m['ess_share']:.0%} | {m['domain_auc']:.2f}"
                       f"{' (warns)' if m['too_small'] else ''} | {m['base_auc']:.3f} | {m['weighted_auc']:.3f} | "
                       f"{m['base_f1']:.3f} | {m['weighted_f1']:.3f} | {m['adapt_f1']:.3f} | {2 * prev / (1 + prev):.3f} | "
                       f"{m['base_flagged']:.0f} / {m['weighted_flagged']:.0f} |")
        mean = {key: float(np.mean([a[key] for a in agg])) for key in ("ess_share", "domain_auc", "base_auc",
                                                                       "weighted_auc", "base_f1", "weighted_f1",
                                                                       "adapt_f1")}
        out.append(f"| `{c}` | **mean** | | {mean['ess_share']:.0%} | {mean['domain_auc']:.2f} | "
                   f"**{mean['base_auc']:.3f}** | **{mean['weighted_auc']:.3f}** | **{mean['base_f1']:.3f}** | "
                   f"**{mean['weighted_f1']:.3f}** | **{mean['adapt_f1']:.3f}** | | |")
    return "\n".join(out) + "\n"


def refresh(path: Path, table: str) -> None:
    text = path.read_text(encoding="utf-8")
    if START not in text or END not in text:
        raise SystemExit(f"{path} has no scene-eval markers ({START} ... {END})")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    path.write_text(head + START + "\n" + table + END + tail, encoding="utf-8")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="scene_eval", description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=str(DEFAULT_BASE_FEATURES), help="train_features_7147.csv.gz")
    ap.add_argument("--k", type=int, default=K_REGIONS)
    ap.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS))
    ap.add_argument("--combos", nargs="+", default=list(COMBOS))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--doc", help="replace the table between the scene-eval markers of this Markdown file")
    a = ap.parse_args(argv)
    if not Path(a.data).is_file():
        raise SystemExit(f"no feature table at {a.data} (the real data lives in ../shared/data)")
    t0 = time.perf_counter()
    rows = evaluate(Path(a.data), a.k, a.seeds, a.combos, a.threads)
    table = markdown(rows, a.k, a.seeds)
    say(f"done in {time.perf_counter() - t0:.0f} s")
    if a.doc:
        refresh(Path(a.doc), table)
    sys.stdout.write(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
