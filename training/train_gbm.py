"""Train the gradient-boosting members (LightGBM + XGBoost per input combination) on the
REAL per-patch feature table and write them into a model package.

    python -m sentinel_landslide.training.train_gbm \
        --data ../shared/data/zindi/train_features_7147.csv.gz --out models/bundled

For each of the 17 input combinations (core/channels.py COMBINATIONS: "s2", "s2+desc",
"desc_post", ...; the legacy names "combined", "optical", "sar" are accepted for
"s2+desc+asc", "s2", "desc+asc"): the features whose channels the combination has
(core/features.py feature_names), K-fold StratifiedKFold (shuffled, seeded) out-of-fold
(OOF) probabilities for both models, metrics per member and for the averaged pair at
the threshold that maximises the pair's OOF F1 (sklearn.metrics), then both models
refitted on all rows and saved as LightGBM text / XGBoost JSON (never pickles).  The
manifest's GBM members and ``metrics["gbm_real_features"]`` are replaced; every other
member (the neural ones) and metric is kept, and each network's ``modes`` become every
combination that has all its input channels.  OOF probabilities go to a CSV so a later
script can choose the whole-ensemble threshold.

Hyper-parameters start from the paper's (../shared/method.md, GBM section) with the
tree counts cut and the learning rates raised so that the six saved models stay small
(a few MB in all) and the whole run takes minutes on two cores; the numbers of trees
are fixed (chosen by cross-validation on other fold seeds than the reported one), so
the script has no early stopping and is reproducible.
"""
from __future__ import annotations

import argparse
import csv
import datetime as _dt
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from ..core.channels import COMBINATION_BY_NAME, LEGACY_MODE_NAMES, combination_name, combinations_having
from ..core.features import feature_matrix, feature_names
from ..models.package import load_package, member_channels, migrate_manifest, new_manifest, write_manifest
from .feature_table import load_feature_table
from .metrics import auc_score, prf

MODES = tuple(COMBINATION_BY_NAME)  # the 17 input combinations
THRESHOLD_SOURCE = "OOF F1-optimal of the averaged GBM pair on the real features (train_gbm.py)"
DEFAULT_OOF = Path(__file__).resolve().parents[2] / "build" / "oof" / "gbm_oof.csv"
THRESHOLDS = np.round(np.arange(0.05, 0.9501, 0.01), 2)

# Paper (method.md): LightGBM 24 leaves, depth 12, lr 0.005, 12,000 trees, subsample
# 0.6, colsample 0.5, scale_pos_weight 1.5, L2 0.3; XGBoost lr 0.02, 4,000 trees,
# subsample 0.8, colsample 0.8, scale_pos_weight 1.5, lambda 1.2 (default depth 6).
# Kept: LightGBM's tree shape and every sampling / weighting / L2 setting.  Changed:
# fewer trees at a higher learning rate, and XGBoost with depth-3 trees, because file
# size is linear in trees x leaves (~115 bytes per LightGBM leaf, ~1.2 kB per depth-3
# XGBoost tree in text / JSON).  Tree counts were chosen by 5-fold CV on fold seeds 7
# and 11 (not the reported seed 42) under a ~5.5 MB budget for the six files: OOF AUC
# and F1 keep rising slowly well past the log-loss optimum, so more trees would still
# help a little; at equal size 8-, 12- and 24-leaf LightGBM and depth-3/4/5 XGBoost
# were within noise of each other.
LGB_PARAMS = {
    "objective": "binary",
    "learning_rate": 0.03,
    "num_leaves": 24,
    "max_depth": 12,
    "bagging_fraction": 0.6,
    "bagging_freq": 1,
    "feature_fraction": 0.5,
    "scale_pos_weight": 1.5,
    "lambda_l2": 0.3,
    "min_data_in_leaf": 20,
}
XGB_PARAMS = {
    "objective": "binary:logistic",
    "tree_method": "hist",
    "eta": 0.08,
    "max_depth": 3,
    "subsample": 0.8,
    "colsample_bytree": 0.8,
    "scale_pos_weight": 1.5,
    "lambda": 1.2,
}
# number of boosting rounds per combination: the three of earlier versions keep the
# counts chosen for them by CV ("s2+desc+asc" gets most of the size budget); the other
# fourteen get fixed, smaller counts by the size budget of the plugin zip (not tuned per
# combination): 400 / 600 with Sentinel-2 and SAR, 200 / 300 SAR alone
LGB_ROUNDS = {"s2+desc+asc": 600, "s2": 300, "desc+asc": 250}
XGB_ROUNDS = {"s2+desc+asc": 900, "s2": 450, "desc+asc": 400}
for _c in COMBINATION_BY_NAME.values():
    LGB_ROUNDS.setdefault(_c.name, 400 if _c.s2 else 200)
    XGB_ROUNDS.setdefault(_c.name, 600 if _c.s2 else 300)
for _old, _new in LEGACY_MODE_NAMES.items():  # older callers (bench/standin.py) use the old names
    LGB_ROUNDS[_old], XGB_ROUNDS[_old] = LGB_ROUNDS[_new], XGB_ROUNDS[_new]
# --quick (tests): few, bigger steps
QUICK_ROUNDS = 30
QUICK_LR = {"lightgbm": 0.1, "xgboost": 0.15}


def log(msg: str) -> None:
    print(f"[train_gbm {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- metrics (training/metrics.py)
def best_threshold(y: np.ndarray, p: np.ndarray) -> float:
    """The threshold in 0.05..0.95 (step 0.01) maximising F1 (the lowest one on ties)."""
    y = np.asarray(y).astype(bool)
    pred = np.asarray(p)[None, :] >= THRESHOLDS[:, None]  # the same F1 as prf, all thresholds at once
    tp = (pred & y).sum(axis=1)
    f1s = 2 * tp / np.maximum(pred.sum(axis=1) + y.sum(), 1)
    return float(THRESHOLDS[int(np.argmax(f1s))])


def metrics_at(y: np.ndarray, p: np.ndarray, t: float) -> dict:
    f1, prec, rec = prf(y, p, t)
    return {
        "oof_f1": round(f1, 4),
        "oof_precision": round(prec, 4),
        "oof_recall": round(rec, 4),
        "oof_auc": round(auc_score(y, p), 4),
        "oof_f1_at_0.5": round(prf(y, p, 0.5)[0], 4),
    }


# ---------------------------------------------------------------- models
def min_data_in_leaf(n_rows: int) -> int:
    """LightGBM's minimum leaf size: the paper's 20, scaled down for small tables (an
    analyst's own inventory of a few dozen patches), where 20 rows a leaf allows no split
    at all and the member would predict a constant: n / 10, at least 5, below 200 rows."""
    return min(int(LGB_PARAMS["min_data_in_leaf"]), max(5, int(n_rows) // 10))


def fit_lgb(X, y, names, rounds, seed, threads, quick=False, weight=None, min_leaf=None):
    """``weight``: per-row sample weights; ``min_leaf``: overrides the size-based leaf minimum."""
    import lightgbm as lgb

    params = dict(LGB_PARAMS, **({"learning_rate": QUICK_LR["lightgbm"]} if quick else {}))
    params["min_data_in_leaf"] = min_data_in_leaf(len(y)) if min_leaf is None else min_leaf
    params.update(seed=seed, num_threads=threads, verbose=-1, deterministic=True,
                  force_col_wise=True)
    ds = lgb.Dataset(X, label=y, weight=weight, feature_name=list(names), free_raw_data=True)
    return lgb.train(params, ds, num_boost_round=rounds)


def fit_xgb(X, y, names, rounds, seed, threads, quick=False, weight=None):
    import xgboost as xgb

    params = dict(XGB_PARAMS, **({"eta": QUICK_LR["xgboost"]} if quick else {}))
    params.update(seed=seed, nthread=threads)
    d = xgb.DMatrix(X, label=y, weight=weight, missing=np.nan, feature_names=list(names))
    return xgb.train(params, d, num_boost_round=rounds)


def predict(kind: str, booster, X: np.ndarray, threads: int) -> np.ndarray:
    if kind == "lightgbm":
        return np.asarray(booster.predict(X, num_threads=threads), dtype=np.float64)
    return np.asarray(booster.inplace_predict(X, missing=np.nan), dtype=np.float64)


def load_saved(kind: str, path: Path, threads: int):
    if kind == "lightgbm":
        import lightgbm as lgb

        return lgb.Booster(model_file=str(path))
    import xgboost as xgb

    b = xgb.Booster()
    b.load_model(str(path))
    b.set_param({"nthread": threads})
    return b


def supported_rows(table: dict, mode: str) -> np.ndarray:
    """Which rows (patches) have data in every channel of the combination: a channel's
    mean is NaN only when the patch has no valid pixel of it, which is how exported
    patches carry a source that was not given (or masked out, e.g. optics under a cloud).
    Per patch this is its export ``mode`` and every combination within it."""
    n = len(next(iter(table.values())))
    ok = np.ones(n, dtype=bool)
    for c in COMBINATION_BY_NAME[combination_name(mode)].channels:
        ok &= np.isfinite(np.asarray(table[f"band{c + 1}_mean"], dtype=np.float64))
    return ok


def stratified_subsample(y: np.ndarray, limit: int, seed: int) -> np.ndarray:
    """Indices of about ``limit`` rows keeping the class ratio (sorted)."""
    rng = np.random.default_rng(seed)
    keep = []
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        k = max(2, round(limit * len(idx) / len(y)))
        keep.append(rng.choice(idx, size=min(k, len(idx)), replace=False))
    return np.sort(np.concatenate(keep))


# ---------------------------------------------------------------- manifest
GBM_KINDS = ("lightgbm", "xgboost")
SAME_PAIR_KEYS = ("oof_f1", "oof_precision", "oof_recall", "oof_auc", "threshold")


def _member_mode(key: str) -> str:
    """"lgbm_s2+desc" -> "s2+desc"; legacy "xgb_combined" -> "s2+desc+asc"."""
    return combination_name(key.split("_", 1)[1]) if "_" in key else key


def merge_manifest(out: Path, members: list[dict], thresholds: dict, metrics: dict) -> dict:
    """The package's manifest (migrated to combination names) with our GBM members in
    place of the ones of the combinations trained.

    A threshold another script set (the whole-ensemble one of train_nn / quantize) is kept
    only if this run reproduced the GBM pair's OOF record it was computed with; the GBM
    members in that script's ensemble record are then renamed to ours.  Networks run in
    every combination the package defines that has all their input channels."""
    mpath = out / "manifest.json"
    if mpath.exists():
        man = migrate_manifest(json.loads(mpath.read_text(encoding="utf-8")))
    else:
        man = new_manifest(
            "sentinel-landslide-default", "0.1.0",
            "Landslide patch classifier after Nasios (2026): LightGBM + XGBoost on per-patch "
            "statistics, plus multi-encoder vision-transformer members where present; trained "
            "on the Zindi/ITU landslide patches.")
    trained = set(thresholds)
    removed = [m for m in man.get("members", []) if m.get("kind") in GBM_KINDS and trained & set(m.get("modes", []))]
    man["members"] = [m for m in man.get("members", []) if m not in removed] + members
    rename = {o["name"]: n["name"] for o in removed for n in members
              if n["kind"] == o["kind"] and n["modes"] == o["modes"] and n["name"] != o["name"]}
    stale = {o["file"] for o in removed} - {m["file"] for m in man["members"]}
    for f in sorted(stale):  # files of GBM members we no longer ship
        p = out / f
        if p.is_file() and p.suffix in (".txt", ".json") and p.name != "manifest.json":
            p.unlink()
            log(f"removed {f} (replaced)")
    man.setdefault("modes", {})
    man.setdefault("metrics", {})
    old = man["metrics"].get("gbm_real_features")
    old_ens = old.get("ensembles", {}) if isinstance(old, dict) else {}
    proxy = man["metrics"].get("nn_proxy") if isinstance(man["metrics"].get("nn_proxy"), dict) else None
    for mode, t in thresholds.items():
        spec = man["modes"].get(mode)
        if spec is not None and "threshold" in spec and "train_gbm" not in str(spec.get("threshold_source", "")):
            before, now = old_ens.get(mode, {}), metrics["ensembles"][mode]
            if all(before.get(k) == now.get(k) for k in SAME_PAIR_KEYS):
                log(f"mode {mode}: GBM pair OOF reproduced; keeping threshold {spec['threshold']} "
                    f"({spec.get('threshold_source', '?')})")
                rec = (proxy or {}).get("ensembles", {}).get(mode)
                if isinstance(rec, dict) and isinstance(rec.get("members"), list):
                    rec["members"] = [rename.get(n, n) for n in rec["members"]]
                continue
            log(f"mode {mode}: the GBM pair changed, so the threshold {spec['threshold']} (set with the old pair) "
                f"is replaced by the pair's own")
            rec = (proxy or {}).get("ensembles", {}).pop(mode, None)
            if rec is not None:
                proxy.setdefault("stale_ensembles", {})[mode] = dict(
                    rec, stale="computed with GBM members since retrained (train_gbm.py); rerun train_nn or quantize")
        man["modes"][mode] = {"threshold": t, "threshold_source": THRESHOLD_SOURCE}
    for m in man["members"]:
        if m.get("kind") == "onnx":
            m["modes"] = [c for c in combinations_having(member_channels(m)) if c in man["modes"]]
    if proxy is not None and isinstance(proxy.get("total_flops_per_patch"), dict):
        proxy["total_flops_per_patch"] = {
            mode: int(sum(m.get("flops_per_patch", 0) for m in man["members"] if m["kind"] == "onnx" and mode in m["modes"]))
            for mode in MODES if mode in man["modes"]}
    if isinstance(old, dict) and trained != set(MODES):
        # a partial run (--modes): keep the other combinations' records
        metrics["members"] = {**{k: v for k, v in old.get("members", {}).items() if _member_mode(k) not in trained},
                              **metrics["members"]}
        metrics["ensembles"] = {**{k: v for k, v in old_ens.items() if k not in trained}, **metrics["ensembles"]}
    man["metrics"]["gbm_real_features"] = metrics
    return man


# ---------------------------------------------------------------- main
def run(args) -> dict:
    import lightgbm as lgb
    import xgboost as xgb
    from sklearn.model_selection import StratifiedKFold

    t_start = time.perf_counter()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    threads = max(1, int(args.threads))
    folds = args.folds if args.folds else (2 if args.quick else 5)
    limit = args.limit if args.limit else (600 if args.quick else 0)

    ids, y, table = load_feature_table(args.data)
    ids = np.asarray(ids)
    if limit and limit < len(y):
        keep = stratified_subsample(y, limit, args.seed)
        ids, y = ids[keep], y[keep]
        table = {k: v[keep] for k, v in table.items()}
    modes = list(dict.fromkeys(combination_name(m) for m in args.modes))
    unknown = [m for m in modes if m not in COMBINATION_BY_NAME]
    if unknown:
        raise ValueError(f"unknown combination(s) {unknown}; known: {', '.join(MODES)}")
    log(f"{len(y)} rows ({int(y.sum())} positive) from {args.data}; {len(modes)} combinations, {folds} folds, seed {args.seed}, "
        f"{threads} threads{' (QUICK)' if args.quick else ''}")

    n_min = int(min(np.sum(y == 1), np.sum(y == 0)))
    if n_min < folds:
        raise ValueError(f"{folds}-fold cross-validation needs at least {folds} patches of each class; "
                         f"the table has {int(np.sum(y == 1))} landslide and {int(np.sum(y == 0))} other patches")
    zindi = Path(args.data).name == "train_features_7147.csv.gz"
    data_desc = ("train_features_7147.csv.gz (real Zindi per-patch features, 7147 labelled patches)" if zindi
                 else f"{Path(args.data).name} ({len(y)} labelled patches)")
    skf = StratifiedKFold(n_splits=folds, shuffle=True, random_state=args.seed)
    splits = list(skf.split(np.zeros(len(y)), y))
    fold_of = np.empty(len(y), dtype=np.int64)
    for k, (_, va) in enumerate(splits):
        fold_of[va] = k

    members, thresholds, boosters = [], {}, {}
    member_metrics, ensemble_metrics, oof_cols, timings = {}, {}, {}, {}
    rounds_used, skipped = {}, {}
    for mode in modes:
        t_mode = time.perf_counter()
        names = list(feature_names(mode))
        sup = supported_rows(table, mode)
        rows = np.flatnonzero(sup)
        mode_splits = splits
        if not sup.all():  # patches lacking some of its channels (NaN): train on the others only
            n_pos, n_neg = int(np.sum(y[rows] == 1)), int(np.sum(y[rows] == 0))
            if min(n_pos, n_neg) < folds:
                skipped[mode] = (f"{len(rows)} of {len(y)} patches have all its channels "
                                 f"({n_pos} landslide, {n_neg} other; {folds}-fold CV needs {folds} of each)")
                log(f"{mode}: skipped: {skipped[mode]}")
                continue
            mode_splits = list(StratifiedKFold(n_splits=folds, shuffle=True, random_state=args.seed)
                               .split(np.zeros(len(rows)), y[rows]))
            log(f"{mode}: {len(rows)} of {len(y)} patches have all its channels ({n_pos} landslide)")
        ym = y[rows]
        X = feature_matrix(table, names)[rows]
        kinds = (("lightgbm", "lgbm", fit_lgb, QUICK_ROUNDS if args.quick else LGB_ROUNDS[mode]),
                 ("xgboost", "xgb", fit_xgb, QUICK_ROUNDS if args.quick else XGB_ROUNDS[mode]))
        oof = {}
        for kind, short, fit, rounds in kinds:
            p = np.full(len(y), np.nan, dtype=np.float64)  # NaN: patches the combination cannot score
            pm = np.zeros(len(rows), dtype=np.float64)
            for k, (tr, va) in enumerate(mode_splits):
                t0 = time.perf_counter()
                b = fit(X[tr], ym[tr], names, rounds, args.seed + k, threads, args.quick)
                pm[va] = predict(kind, b, X[va], threads)
                log(f"{mode:22s} {kind:8s} fold {k + 1}/{folds}: {rounds} trees, "
                    f"fold AUC {auc_score(ym[va], pm[va]):.4f} ({time.perf_counter() - t0:.1f}s)")
            p[rows] = pm
            oof[short] = pm
            # final model on every row the combination can score
            t0 = time.perf_counter()
            b = fit(X, ym, names, rounds, args.seed, threads, args.quick)
            fname = f"{short}_{mode}.{'txt' if kind == 'lightgbm' else 'json'}"
            path = out / fname
            b.save_model(str(path))
            # the saved file must reproduce the in-memory model
            mem = predict(kind, b, X, threads)
            disk = predict(kind, load_saved(kind, path, threads), X, threads)
            if not np.allclose(mem, disk, rtol=0, atol=1e-6):
                raise RuntimeError(f"{fname}: reloaded model disagrees with the trained one "
                                   f"(max |diff| {np.abs(mem - disk).max():.3g})")
            log(f"{mode:22s} {kind:8s} final fit on {len(ym)} rows -> {fname} "
                f"({path.stat().st_size / 1e6:.2f} MB, {time.perf_counter() - t0:.1f}s)")
            rounds_used[f"{short}_{mode}"] = rounds
            boosters[f"{short}_{mode}"] = b
            oof_cols[f"{short}_{mode}"] = p
            members.append({
                "name": f"{short}_{mode}", "kind": kind, "file": fname, "modes": [mode], "weight": 1.0,
                "inputs": {"features": names},
                "description": (f"{'LightGBM' if kind == 'lightgbm' else 'XGBoost'} on {len(names)} per-patch "
                                f"statistics (combination {mode}), {rounds} trees, trained on "
                                + ("the real Zindi feature table" if zindi else Path(args.data).name)
                                + f" ({len(ym)} patches)"),
            })
        pair = (oof["lgbm"] + oof["xgb"]) / 2.0
        t = best_threshold(ym, pair)
        thresholds[mode] = t
        for short in ("lgbm", "xgb"):
            member_metrics[f"{short}_{mode}"] = metrics_at(ym, oof[short], t)
        ensemble_metrics[mode] = dict(metrics_at(ym, pair, t), threshold=t,
                                      members=[f"lgbm_{mode}", f"xgb_{mode}"],
                                      corr_members=round(float(np.corrcoef(oof["lgbm"], oof["xgb"])[0, 1]), 4))
        if len(rows) < len(y):
            ensemble_metrics[mode]["rows_used"] = int(len(rows))
        timings[mode] = round(time.perf_counter() - t_mode, 1)
        log(f"{mode}: pair OOF F1 {ensemble_metrics[mode]['oof_f1']:.4f} at {t:.2f} "
            f"(AUC {ensemble_metrics[mode]['oof_auc']:.4f}) in {timings[mode]:.0f}s")

    if not thresholds:
        raise ValueError("no input combination has enough labelled patches with all its channels to train on: "
                         + "; ".join(f"{m}: {r}" for m, r in skipped.items()))
    # OOF probabilities for the whole-ensemble threshold (empty where a combination lacks channels)
    oof_path = Path(args.oof_out)
    oof_path.parent.mkdir(parents=True, exist_ok=True)
    cols = list(oof_cols)
    with open(oof_path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["ID", "label", "fold"] + cols)
        for i in range(len(y)):
            vals = [oof_cols[c][i] for c in cols]
            w.writerow([ids[i], int(y[i]), int(fold_of[i])] + ["" if np.isnan(v) else f"{v:.6f}" for v in vals])

    total = round(time.perf_counter() - t_start, 1)
    metrics = {
        "provenance": {
            "data": data_desc,
            "rows_used": len(y),
            "command": getattr(args, "command", None)
                       or "./build.sh train (python -m sentinel_landslide.training.train_gbm ...)",
            "arguments": {"folds": folds, "seed": args.seed, "quick": bool(args.quick), "limit": limit or None,
                          "modes": modes},
            "folds": folds,
            "cv": f"StratifiedKFold shuffle seed {args.seed}",
            "seed": args.seed,
            "date": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "lightgbm": lgb.__version__,
            "xgboost": xgb.__version__,
            "hyperparameters": {"lightgbm": dict(LGB_PARAMS, **({"learning_rate": QUICK_LR["lightgbm"]} if args.quick else {})),
                                "xgboost": dict(XGB_PARAMS, **({"eta": QUICK_LR["xgboost"]} if args.quick else {})),
                                "rounds": rounds_used},
            "threshold_rule": "maximises OOF F1 of the mean of the two members' probabilities, "
                              "searched over 0.05..0.95 step 0.01, per combination",
            "features": "per combination, every per-patch statistic whose channels it has (core/features.py "
                        "feature_names): a post-event-only orbit has its VV / VH statistics, no change-channel ones",
            "metrics": "sklearn.metrics (precision_recall_fscore_support, roc_auc_score) on the OOF probabilities",
            "ensemble_basis": "GBM pair only (mean of LightGBM and XGBoost); where networks join a combination, "
                              "the whole-ensemble record is metrics.nn_proxy.ensembles when its networks' OOF was "
                              "available, else the GBM pair's figures stand for it (see the README table)",
            "train_seconds": total,
            "mode_seconds": timings,
            "note": "metrics are out-of-fold over the rows used; the saved models are refits on all rows",
        },
        "members": member_metrics,
        "ensembles": ensemble_metrics,
    }
    if set(thresholds) != set(MODES):
        metrics["provenance"]["modes_trained"] = list(thresholds)
    if skipped:
        metrics["provenance"]["modes_skipped"] = skipped
    if len(y) < 200 * folds / max(folds - 1, 1):
        metrics["provenance"]["hyperparameters"]["lightgbm_small_table"] = (
            "min_data_in_leaf = max(5, rows / 10) below 200 training rows (train_gbm.min_data_in_leaf)")
    man = merge_manifest(out, members, thresholds, metrics)
    missing = [m["file"] for m in man["members"] if not (out / m["file"]).exists()]
    if missing:
        raise RuntimeError(f"manifest lists member files missing from {out}: {missing}")
    write_manifest(out, man)
    load_package(out)  # round trip: schema + checksums

    sizes = {m["file"]: (out / m["file"]).stat().st_size for m in members}
    print_table(member_metrics, ensemble_metrics, sizes, total, oof_path, out)
    return {"metrics": metrics, "thresholds": thresholds, "sizes": sizes, "seconds": total,
            "boosters": boosters, "ids": ids, "labels": y, "table": table}


def print_table(member_metrics, ensemble_metrics, sizes, total, oof_path, out) -> None:
    hdr = f"{'model':36s} {'thr':>5s} {'F1':>7s} {'prec':>7s} {'recall':>7s} {'AUC':>7s} {'F1@0.5':>7s}"
    print(hdr)
    print("-" * len(hdr))
    for mode, e in ensemble_metrics.items():
        rows = [(f"lgbm_{mode}", member_metrics[f"lgbm_{mode}"]), (f"xgb_{mode}", member_metrics[f"xgb_{mode}"]),
                (f"mean pair ({mode})", e)]
        for name, m in rows:
            print(f"{name:36s} {e['threshold']:5.2f} {m['oof_f1']:7.4f} {m['oof_precision']:7.4f} "
                  f"{m['oof_recall']:7.4f} {m['oof_auc']:7.4f} {m['oof_f1_at_0.5']:7.4f}")
    mb = sum(sizes.values()) / 1e6
    print(f"GBM files: {mb:.2f} MB in {len(sizes)} files ("
          + ", ".join(f"{k} {v / 1e6:.2f}" for k, v in sizes.items()) + ")")
    print(f"total {total:.0f}s; package {out}; OOF {oof_path}")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="train_gbm", description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True, help="train_features_7147.csv.gz")
    ap.add_argument("--out", required=True, help="model package folder (manifest merged if present)")
    ap.add_argument("--folds", type=int, default=0, help="CV folds (default 5; 2 with --quick)")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--quick", action="store_true", help="tiny fast configuration for tests")
    ap.add_argument("--limit", type=int, default=0, help="stratified subsample of N rows (default all; 600 with --quick)")
    ap.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES) + list(LEGACY_MODE_NAMES),
                    metavar="COMBINATION", help="combinations to train (default all 17: " + ", ".join(MODES) + ")")
    ap.add_argument("--threads", type=int, default=int(os.environ.get("SENTINEL_LANDSLIDE_THREADS", "2")))
    ap.add_argument("--oof-out", default=str(DEFAULT_OOF), help="CSV of out-of-fold probabilities")
    return ap


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
