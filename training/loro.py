"""Leave-one-region-out benchmark of verdict adaptation on the REAL 7147-patch feature table.

    python -m sentinel_landslide.training.loro [--data .../train_features_7147.csv.gz]
        [--regions 6] [--seeds 2] [--verdicts 20,40,80] [--rounds-scale 0.15] [--threads 2]
        [--quick] [--write docs/concepts/verdict-adaptation.md]

* Pseudo-regions: k-means (k-means++, seeded) on the patches' optical and SAR statistics (the
  mean and standard deviation of every channel, standardised).  REGIONS = 6 by default: each
  held-out region then keeps several hundred patches and tens of landslides (enough for F1 on
  the tiles nobody reviewed after 80 verdicts), and six folds fit in the time budget.
* Per held-out region: the GBM pair of the full combination (s2+desc+asc, every feature;
  ``train_gbm``'s hyper-parameters, tree counts x ``--rounds-scale``: shortened for the
  benchmark's time budget) is fitted on the other regions; its threshold is the F1-optimal one
  of 3-fold out-of-fold probabilities on those regions (as the bundled package's was).  The
  networks cannot run on a feature table (they need the patches' pixels): the benchmark
  measures the GBM pair only.
* The analyst: ``engine.review_select.next_batch`` on the base model's probabilities (strata:
  flagged / not at the base threshold), batches of 20 (10 random + 10 informative, random
  ones first, as the panel offers them), K = 20, 40, 80 verdicts (nested), several seeds;
  verdicts are the patches' labels.
* Compared on the held-out region's patches NOT reviewed: base; ADAPT_TO_SCENE (the pair
  refitted with ``scene_shift.scene_weights``, base threshold); today's adapt (version 0.4:
  local share 0.3, threshold re-chosen only with >= 10 verdicts per class, ``adapt_rule.
  legacy_threshold``); the new adapt (``adapt_rule.evaluate`` + ``final_fit``); and "flag
  everything" (the trivial F1 = 2 pi / (1 + pi)).  AUC, F1, and flagged / true landslide tiles.
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from .doc_blocks import replace_between

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "zindi" / "train_features_7147.csv.gz"
MODE = "s2+desc+asc"
BATCH = 20
README_HEADING = "## In short"
README_START, README_END = "<!-- loro:start -->", "<!-- loro:end -->"


def kmeans(Z: np.ndarray, k: int, seed: int, iters: int = 60) -> np.ndarray:
    """Labels of a seeded k-means++ / Lloyd clustering."""
    rng = np.random.default_rng(seed)
    centres = [Z[rng.integers(len(Z))]]
    for _ in range(1, k):
        d = np.min([((Z - c) ** 2).sum(1) for c in centres], axis=0)
        centres.append(Z[rng.choice(len(Z), p=d / d.sum())])
    C = np.array(centres)
    lab = np.zeros(len(Z), dtype=np.int64)
    for _ in range(iters):
        d = ((Z[:, None, :] - C[None]) ** 2).sum(-1)
        new = d.argmin(1)
        if (new == lab).all() and _ > 0:
            break
        lab = new
        C = np.array([Z[lab == j].mean(0) if (lab == j).any() else C[j] for j in range(k)])
    return lab


def regions_of(table: dict, k: int, seed: int = 0) -> np.ndarray:
    cols = sorted(c for c in table if c.startswith("band") and c.endswith(("_mean", "_std")))
    X = np.column_stack([np.asarray(table[c], dtype=np.float64) for c in cols])
    X = np.where(np.isfinite(X), X, np.nanmedian(X, axis=0))
    Z = (X - X.mean(0)) / np.where(X.std(0) > 0, X.std(0), 1)
    Z = np.clip(Z, -5, 5)
    return kmeans(Z, k, seed)


def _metrics(y, p, t):
    from .metrics import auc_score, prf

    flagged = int((p >= t).sum())
    return {"auc": auc_score(y, p), "f1": prf(y, p, t)[0], "ratio": flagged / max(1, int(y.sum()))}


def run(data: Path, n_regions: int = 6, seeds: int = 3, ks=(20, 40, 80), rounds_scale: float = 0.2,
        threads: int = 2, quick: bool = False, log=print) -> dict:
    from ..core.features import feature_matrix, feature_names
    from ..engine.design import design_weights, estimate_share
    from ..engine.review_select import next_batch
    from ..engine.verdicts import PICK_RANDOM
    from . import adapt_rule as R
    from .feature_table import load_feature_table
    from .scene_shift import scene_weights
    from .train_gbm import LGB_ROUNDS, XGB_ROUNDS, predict

    t0 = time.perf_counter()
    _, y_all, table = load_feature_table(data)
    names = list(feature_names(MODE))
    X_all = feature_matrix(table, names)
    region = regions_of(table, n_regions)
    if quick:  # a test: a stratified third of the patches, two regions held out
        keep = np.sort(np.random.default_rng(0).choice(len(y_all), size=len(y_all) // 3, replace=False))
        X_all, y_all, region = X_all[keep], y_all[keep], region[keep]
    held_regions = list(range(n_regions))[: (2 if quick else n_regions)]
    gbms = [("lgbm", "lightgbm"), ("xgb", "xgboost")]
    rounds = {"lightgbm": max(10, int(LGB_ROUNDS[MODE] * rounds_scale)),
              "xgboost": max(10, int(XGB_ROUNDS[MODE] * rounds_scale))}
    pool = ThreadPoolExecutor(max_workers=max(1, threads))
    rows: list = []
    info = []
    try:
        for r in held_regions:
            tr, te = np.flatnonzero(region != r), np.flatnonzero(region == r)
            Xb, yb, Xs, ys = X_all[tr], y_all[tr], X_all[te], y_all[te]
            info.append({"region": r, "patches": len(te), "landslides": int(ys.sum()), "share": float(ys.mean())})

            def fit_pair(X, y, w, seed=0):
                return list(pool.map(lambda g: R.fit_member(g[1], X, y, w, names, rounds[g[1]], seed, 1, 20), gbms))

            def pair_prob(models, X):
                return np.mean([predict(kind, m, X, 1) for m, (_, kind) in zip(models, gbms)], axis=0)

            # base pair and its threshold (3-fold OOF on the training regions, as the package's)
            base = fit_pair(Xb, yb.astype(float), np.ones(len(yb)))
            fold = R.stratified_folds(yb, 3, 0)
            oof = np.zeros(len(yb))
            for f in range(3):
                m = fit_pair(Xb[fold != f], yb[fold != f].astype(float), np.ones(int((fold != f).sum())))
                oof[fold == f] = pair_prob(m, Xb[fold == f])
            base_t = R.legacy_threshold(yb, oof, 0.5, 0)
            p_base = pair_prob(base, Xs)
            sw = scene_weights(Xb, Xs, seed=0, threads=threads)
            scene = fit_pair(Xb, yb.astype(float), sw.weights)
            p_scene = pair_prob(scene, Xs)
            base_member = {n: predict(kind, m, Xs, 1) for m, (n, kind) in zip(base, gbms)}
            log(f"[loro] region {r}: {len(te)} patches, {int(ys.sum())} landslides; base threshold {base_t:.2f}; "
                f"scene ESS share {sw.ess_share:.2f}, domain AUC {sw.domain_auc:.2f} "
                f"({time.perf_counter() - t0:.0f} s)")
            info[-1].update({"ess_share": sw.ess_share, "domain_auc": sw.domain_auc, "base_t": base_t})
            stratum = (p_base >= base_t).astype(np.int64)
            scored = np.ones(len(te), dtype=bool)
            for seed in range(seeds):
                reviewed = np.zeros(len(te), dtype=bool)
                in_random = np.zeros(len(te), dtype=bool)
                picks = [""] * len(te)
                order: list = []
                for K in ks:
                    while len(order) < K:
                        idx, pk = next_batch(p_base, stratum, scored, reviewed, Xs, min(BATCH, K - len(order)),
                                             threshold=base_t, seed=1000 * seed + len(order), in_random=in_random)
                        if not len(idx):
                            break
                        for i, p in zip(idx, pk):
                            reviewed[i] = True
                            in_random[i] |= p == PICK_RANDOM
                            picks[i] = p
                        order += idx.tolist()
                    rev = np.array(order)
                    rest = np.flatnonzero(~reviewed)
                    yl = ys[rev]
                    if (yl == 1).sum() == 0 or (yl == 0).sum() == 0:
                        continue
                    labels = np.full(len(te), np.nan)
                    labels[rev] = yl
                    share = estimate_share(labels, picks, stratum, scored)
                    w_all = design_weights(labels, picks, stratum, scored)
                    yr = ys[rest]
                    row = {"region": r, "seed": seed, "K": K, "n_pos": int(yl.sum()), "true_rest": int(yr.sum()),
                           "share_true": float(ys.mean()), "share_est": share.share,
                           "share_in_ci": bool(share.lo <= ys.mean() <= share.hi)}
                    row["base"] = _metrics(yr, p_base[rest], base_t)
                    row["scene"] = _metrics(yr, p_scene[rest], base_t)
                    # today's adapt (0.4): share 0.3, unweighted base rows, CV with K = min(4, smaller class)
                    c_old = R.Combo(names, gbms, {"lgbm": 1.0, "xgb": 1.0}, Xb, yb, np.ones(len(yb)), Xs[rev], yl,
                                    w_all[rev], np.array([picks[i] == PICK_RANDOM for i in rev]), Xs,
                                    {n: base_member[n][rev] for n, _ in gbms}, base_member, lambda kd: rounds[kd],
                                    scene_weighted=False)
                    k_old = min(4, int(yl.sum()), int((yl == 0).sum()))
                    old_t = base_t
                    if k_old >= 2 and min(int(yl.sum()), int((yl == 0).sum())) >= 10:
                        fo = R.stratified_folds(yl, k_old, 42)
                        p_cv = np.zeros(len(yl))
                        for f in range(k_old):
                            X, yy, ww = R.design(c_old, 0.3, local_rows=np.flatnonzero(fo != f))
                            m = fit_pair(X, yy, ww, 42 + f)
                            p_cv[fo == f] = pair_prob(m, Xs[rev][fo == f])
                        old_t = R.legacy_threshold(yl, p_cv, base_t)
                    X, yy, ww = R.design(c_old, 0.3)
                    p_old = pair_prob(fit_pair(X, yy, ww, 42), Xs)
                    row["old"] = _metrics(yr, p_old[rest], old_t)
                    # the new adapt
                    use_sw = not sw.too_small  # as training/adapt.py: weights that extrapolate are not used
                    c_new = R.Combo(names, gbms, {"lgbm": 1.0, "xgb": 1.0}, Xb, yb,
                                    sw.weights if use_sw else np.ones(len(yb)), Xs[rev], yl,
                                    w_all[rev], np.array([picks[i] == PICK_RANDOM for i in rev]), Xs,
                                    {n: base_member[n][rev] for n, _ in gbms}, base_member, lambda kd: rounds[kd],
                                    scene_weighted=use_sw)
                    best, cands = R.evaluate(c_new, share, seed=seed, threads=threads, map_fn=pool.map,
                                             base_threshold=base_t)
                    if best.share is None:
                        p_new = p_base
                    else:
                        X, yy, ww = R.design(c_new, best.share)
                        p_new = pair_prob(fit_pair(X, yy, ww, seed), Xs)
                    new_t = (base_t if best.name == R.BASE_CANDIDATE
                             else R.threshold_for_fraction(p_new, best.choice.fraction))
                    row["new"] = _metrics(yr, p_new[rest], new_t)
                    row["new"]["candidate"] = best.name
                    pi = float(yr.mean())
                    row["all"] = {"auc": 0.5, "f1": 2 * pi / (1 + pi), "ratio": len(rest) / max(1, int(yr.sum()))}
                    rows.append(row)
                    log(f"[loro] region {r} seed {seed} K {K}: F1 base {row['base']['f1']:.3f} scene "
                        f"{row['scene']['f1']:.3f} old {row['old']['f1']:.3f} new {row['new']['f1']:.3f} "
                        f"({best.name}, f={best.choice.fraction:.3f}, true share {ys.mean():.3f}, est "
                        f"{share.share:.3f}) all {row['all']['f1']:.3f} ({time.perf_counter() - t0:.0f} s)")
    finally:
        pool.shutdown()
    return {"rows": rows, "regions": info, "seconds": time.perf_counter() - t0, "n_regions": n_regions,
            "seeds": seeds, "ks": list(ks), "rounds_scale": rounds_scale, "quick": quick}


METHODS = (("base", "base package (GBM pair)"), ("scene", "scene weights, forced (ADAPT_TO_SCENE warns and keeps base here)"),
           ("old", "today's adapt (0.4)"), ("new", "new adapt"), ("all", "flag everything"))


def table(res: dict) -> str:
    rows = res["rows"]
    out = ["| K verdicts | method | F1 mean (sd) | AUC mean (sd) | flagged / true landslides mean (sd) |",
           "|---|---|---|---|---|"]
    for K in res["ks"]:
        sel = [r for r in rows if r["K"] == K]
        if not sel:
            continue
        for key, label in METHODS:
            f1 = np.array([r[key]["f1"] for r in sel])
            auc = np.array([r[key]["auc"] for r in sel])
            ratio = np.array([r[key]["ratio"] for r in sel])
            out.append(f"| {K} | {label} | {f1.mean():.3f} ({f1.std():.3f}) | "
                       + ("-" if key == "all" else f"{np.nanmean(auc):.3f} ({np.nanstd(auc):.3f})")
                       + f" | {ratio.mean():.2f} ({ratio.std():.2f}) |")
    return "\n".join(out)


def summary(res: dict) -> str:
    rows = res["rows"]
    lines = []
    sel = [r for r in rows if r["K"] == 40]
    if sel:
        new = np.mean([r["new"]["f1"] for r in sel])
        old = np.mean([r["old"]["f1"] for r in sel])
        ratio = np.mean([r["new"]["ratio"] for r in sel])
        lines.append(f"At K = 40: new adapt F1 {new:.3f} vs today's {old:.3f} "
                     f"({'beats' if new > old else 'does NOT beat'} it); flagged / true {ratio:.2f} "
                     f"({'within' if 0.5 <= ratio <= 2 else 'OUTSIDE'} 0.5-2).")
    cov = [r["share_in_ci"] for r in rows]
    if cov:
        lines.append(f"The share estimate's 95 % interval held the region's true share in {100 * np.mean(cov):.0f} % "
                     f"of {len(cov)} runs.")
    cands: dict = {}
    for r in rows:
        cands[r["new"]["candidate"]] = cands.get(r["new"]["candidate"], 0) + 1
    lines.append("New adapt's chosen candidate: " + ", ".join(f"{k} {v}" for k, v in sorted(cands.items())) + ".")
    regs = ", ".join(f"{i['region']}: {i['patches']} patches, {100 * i['share']:.0f} % landslides, ESS share "
                     f"{i.get('ess_share', math.nan):.2f}" for i in res["regions"])
    evaluated = sorted({r["region"] for r in rows})
    skipped = [i["region"] for i in res["regions"] if i["region"] not in evaluated]
    lines.append(f"Regions ({res['n_regions']} by k-means; held out in turn: {len(res['regions'])}; evaluated: "
                 f"{len(evaluated)}" + (f"; region(s) {', '.join(map(str, skipped))} skipped: their verdicts never "
                                        "hold both classes (adapt needs a landslide and a non-landslide)"
                                        if skipped else "") + f"): {regs}.")
    lines.append(f"{res['seeds']} seeds x {len(res['ks'])} verdict counts per region; GBM tree counts x "
                 f"{res['rounds_scale']:g}; {res['seconds'] / 60:.1f} min.")
    return "\n".join(lines)


def write_block(path: Path, res: dict, command: str) -> None:
    block = (f"{README_HEADING}\n\n"
             "Leave-one-region-out benchmark on the real 7147-patch features (GBM pair; tiles not reviewed; "
             "mean and standard deviation over held-out regions and seeds):\n\n"
             f"{table(res)}\n\n{summary(res)}\n\nReproduce: `{command}`\n")
    text = path.read_text(encoding="utf-8") if path.is_file() else ""
    if README_HEADING in text:
        head, rest = text.split(README_HEADING, 1)
        nxt = rest.find("\n## ")
        text = head + block + (rest[nxt:] if nxt >= 0 else "")
    elif text.startswith("# "):  # under the page's title
        title, _, body = text.partition("\n")
        text = title + "\n\n" + block + "\n" + body.lstrip("\n")
    else:
        text = block + "\n" + text
    path.write_text(text, encoding="utf-8")


def write_readme(path: Path, page: Path) -> None:
    """Copy the benchmark block of the docs ``page`` (its table and summary, as the last run wrote
    them) between the README's markers, so the README carries the table from one source."""
    text = page.read_text(encoding="utf-8")
    block = text.split(README_HEADING, 1)[1]
    nxt = block.find("\n## ")
    block = (block[:nxt] if nxt >= 0 else block).strip()
    # the README keeps the table, the verdict on the targets and the command; the regions and
    # the candidates' counts stay on the page
    keep = ("|", "At K = 40", "The share estimate", "Reproduce")
    lines = [ln for ln in block.splitlines() if ln.startswith(keep)]
    rows = [ln for ln in lines if ln.startswith("|")]
    text_lines = [ln for ln in lines if not ln.startswith("|")]
    block = "\n".join(rows) + ("\n\n" + "\n\n".join(text_lines) if text_lines else "")
    replace_between(path, README_START, README_END, block + "\n", "loro")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=str(DEFAULT_DATA))
    ap.add_argument("--regions", type=int, default=6)
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--verdicts", default="20,40,80")
    ap.add_argument("--rounds-scale", type=float, default=0.15)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="a third of the patches, 2 regions held out (tests)")
    ap.add_argument("--write", default=None, help="write the table under '## In short' of this Markdown file")
    ap.add_argument("--readme", default=None, help="then copy that block between the loro markers of this README")
    a = ap.parse_args(argv)
    if not Path(a.data).is_file():
        print(f"The feature table {a.data} was not found.", file=sys.stderr)
        return 2
    res = run(Path(a.data), a.regions, a.seeds, tuple(int(k) for k in a.verdicts.split(",")), a.rounds_scale,
              a.threads, a.quick, log=lambda m: print(m, file=sys.stderr, flush=True))
    print(table(res))
    print(summary(res))
    if a.write:
        args = list(argv if argv is not None else sys.argv[1:])
        repo = Path(__file__).resolve().parents[1]
        target = Path(a.write).resolve()
        if target.is_relative_to(repo):  # the command as run from the repository's root
            args = [str(target.relative_to(repo)) if x == a.write else x for x in args]
        write_block(Path(a.write), res, "python -m sentinel_landslide.training.loro " + " ".join(args))
        if a.readme:
            write_readme(Path(a.readme), Path(a.write))
    return 0


if __name__ == "__main__":
    sys.exit(main())
