"""Adapt a model package to a region from the analyst's verdicts (``landslide:adapt``).

1. Local examples: the grid's reviewed tiles (``review``: confirmed = 1, rejected = 0,
   unsure ignored) are cut again from the layers exactly as detect cuts them (the engine's
   ``TiledScene`` with the same options, then ``core.features.patch_features``), so their
   features are the ones detect scored.  The base package's ensemble scores them too.
   Earlier rounds' examples (``local_examples.csv`` of an adapted base package) are kept;
   a tile reviewed again takes its new verdict.
   Every input combination detect scored reviewed tiles with is handled on its own (features
   over its channels): the run's full combination is refitted with at least one verdict of each
   class, a fallback combination (e.g. ``desc+asc`` under cloud) with at least
   MIN_COMBO_PER_CLASS (5) of each; otherwise its base members and threshold are kept, the log
   says so and its verdicts are saved in ``local_examples.csv`` for a later round.  Steps 2-4
   run per refitted combination; the manifest records each (``history[-1].combinations``).
2. Gradient-boosting members of the mode (LightGBM + XGBoost, ``train_gbm``'s
   hyper-parameters and tree counts) are refitted on the base training features (the real
   table ``train_features_7147.csv.gz``; where it is absent, the local examples alone, with
   a warning) plus the local examples, each weighted
       w_local = LOCAL_SHARE / (1 - LOCAL_SHARE) * N_base / n_local    (LOCAL_SHARE = 0.3)
   so the local examples together weigh 30 % of the fit whatever their number (40 verdicts
   against 7147 rows: each counts ~77 times).
3. Networks are kept; with at least MIN_PER_CLASS verdicts of each class their weights are
   re-weighted by how well each ranks the local verdicts:
       w_net = w_net_base * clip(2 * AUC_local - 1, 0, 1)
   (a network no better than chance on this region stops voting).
4. Threshold: with at least MIN_PER_CLASS (10) verdicts of each class, the F1-optimal
   threshold (0.05..0.95, step 0.01; the middle of the best plateau) of the adapted
   ensemble's cross-validated probabilities of the local examples: stratified K-fold
   (K = min(4, smaller class)), each fold's GBMs refitted without that fold's examples and
   its network weights computed from the other folds.  With fewer verdicts the base
   package's threshold is kept.  The same cross-validated probabilities give the local
   metrics recorded in the manifest.
5. A new package folder: the base members copied, the mode's GBM files replaced, the
   manifest's provenance (``metrics.adaptation``: base package, grid, verdict counts,
   weights, local CV metrics) and checksums written, ``local_examples.csv`` for later rounds.
   The folder is assembled beside OUTPUT and moved into place only when complete.
"""
from __future__ import annotations

import csv
import datetime as _dt
import json
import os
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..core.channels import COMBINATION_BY_NAME
from ..core.errors import Cancelled, InputError
from ..core.features import feature_matrix, patch_features
from ..engine.detect import DetectOptions, TiledScene
from ..engine.verdicts import GridTiles, read_grid
from ..models.ensemble import Ensemble
from ..models.package import ModelPackage, PackageError, load_package, sha256_file, write_manifest
from .feature_table import load_feature_table
from .train_gbm import LGB_ROUNDS, THRESHOLDS, XGB_ROUNDS, auc_score, fit_lgb, fit_xgb, predict, prf

LOCAL_SHARE = 0.3
MIN_PER_CLASS = 10
MAX_FOLDS = 4
MIN_COMBO_PER_CLASS = 5
LOCAL_FILE = "local_examples.csv"
BASE_FEATURES_ENV = "SENTINEL_LANDSLIDE_BASE_FEATURES"
DEFAULT_BASE_FEATURES = Path(__file__).resolve().parents[2] / "shared" / "data" / "zindi" / "train_features_7147.csv.gz"
GBM_KINDS = ("lightgbm", "xgboost")
WEIGHT_RULE = ("local examples weigh LOCAL_SHARE = 0.3 of the fit: w_local = 0.3 / 0.7 * N_base / n_local "
               "(base rows weight 1); local examples alone: weight 1")
NET_RULE = ("networks kept; with >= 10 verdicts per class re-weighted w = w_base * clip(2 * AUC_local - 1, 0, 1) "
            "(AUC on the verdicts, from the base weights of the first round)")
COMBINATION_RULE = ("every input combination detect scored reviewed tiles with is refitted on the verdicts of its "
                    "own tiles (features over its channels): the run's full combination with at least one verdict "
                    "of each class, a fallback combination (e.g. desc+asc under cloud) with at least 5 of each; "
                    "else its base members and threshold are kept (its verdicts are saved for a later round)")
THRESHOLD_RULE = ("with >= 10 verdicts per class: F1-optimal threshold (0.05..0.95 step 0.01, middle of the best "
                  "plateau) of the stratified K-fold (K = min(4, smaller class)) cross-validated ensemble "
                  "probabilities of the local examples; else the base package's threshold")


@dataclass
class AdaptResult:
    folder: Path
    mode: str
    threshold: float
    n_confirmed: int
    n_rejected: int
    metrics: dict
    log: list = field(default_factory=list)
    seconds: float = 0.0
    combinations: dict = field(default_factory=dict)  # per package mode: adapted or kept, verdicts, metrics


def _key(bounds) -> str:
    """A tile's identity across grids of one region: its lower-left corner to the decimetre."""
    return f"{bounds[0]:.1f},{bounds[1]:.1f}"


# ---------------------------------------------------------------- local examples
def _verdict_tiles(grid: GridTiles) -> np.ndarray:
    lab = grid.labels
    idx = np.flatnonzero(np.isfinite(lab))
    if not len(idx):
        raise InputError("The grid has no verdicts: confirm or reject tiles in the review panel ('review' field: "
                         "confirmed = landslide, rejected = not) before adapting the model.")
    return idx


def _match(grid: GridTiles, idx: np.ndarray, tiles: TiledScene, tol: float) -> tuple[dict, list]:
    """{(row, col): grid index} of verdict tiles whose bounds match the layers' tiling; and the misfits."""
    found, misfits = {}, []
    for i in idx:
        r, c = int(grid.row[i]), int(grid.col[i])
        ok = 0 <= r < tiles.n_rows and 0 <= c < tiles.n_cols
        if ok:
            ok = np.allclose(tiles.tile_bounds(r, c), grid.bounds[i], atol=tol)
        (found.__setitem__((r, c), i) if ok else misfits.append(i))
    return found, misfits


def collect_local(grid: GridTiles, opts: DetectOptions, pkg: ModelPackage, log: list, progress=None,
                  is_cancelled=None) -> dict:
    """Features and base-ensemble member probabilities of the grid's reviewed tiles, per input
    combination detect scores them with: {combination: local examples}, the run's full
    combination first (``full`` True)."""
    idx = _verdict_tiles(grid)
    tiles = TiledScene(opts, pkg, log)
    tol = 0.05 * pkg.patch_size * tiles.grid.res
    found, misfits = _match(grid, idx, tiles, tol)
    if misfits and opts.extent is None:  # detect may have run on an extent: plan that grid instead
        b = grid.bounds
        retry = DetectOptions(**{**opts.__dict__, "extent": (float(np.nanmin(b[:, 0])), float(np.nanmin(b[:, 1])),
                                                             float(np.nanmax(b[:, 2])), float(np.nanmax(b[:, 3])),
                                                             grid.crs_wkt)})
        try:
            alt_log: list = []
            alt = TiledScene(retry, pkg, alt_log)
            alt_found, alt_misfits = _match(grid, idx, alt, tol)
            if len(alt_found) > len(found):
                tiles, found, misfits, opts = alt, alt_found, alt_misfits, retry
                log.extend(alt_log)
        except InputError:
            pass
    if not found:
        raise InputError("The grid's reviewed tiles do not lie on the tiles of these layers: the grid comes from "
                         "another scene, other layers or another extent. Give the layers detect used for this grid.")
    if misfits:
        log.append(f"Warning: {len(misfits)} reviewed tile(s) are not tiles of these layers and are ignored.")
    # every combination detect scores the reviewed tiles with (the run's full one, and fallbacks
    # such as desc+asc under cloud): features over that combination's channels, as detect computes them
    target = tiles.scored_as.name
    ensembles: dict = {}
    per: dict = {}
    seen, unusable = 0, 0
    try:
        for k, b in enumerate(tiles):
            if is_cancelled is not None and is_cancelled():
                raise Cancelled()
            if progress is not None:
                progress((k + 1) / len(tiles))
            for name, (gidx, gvalid) in b.groups.items():
                sel = [n for n, j in enumerate(gidx) if (int(b.rows[j]), int(b.cols[j])) in found]
                seen += len(sel)
                if not sel:
                    continue
                if name not in ensembles:
                    try:
                        ensembles[name] = ens = Ensemble(pkg, name, threads=opts.threads,
                                                         provider=opts.execution_provider)
                        if ens.needs_pixels:  # EXECUTION_PROVIDER: where the networks actually run
                            log.append(f"Mode {name}: networks run on {ens.provider_line()}")
                            log.extend(ens.warnings)
                    except PackageError:
                        ensembles[name] = None
                ens = ensembles[name]
                if ens is None:
                    unusable += len(sel)
                    continue
                acc = per.setdefault(name, {
                    "names": sorted({f for s in ens.specs if s["kind"] in GBM_KINDS for f in s["inputs"]["features"]}),
                    "rows": [], "feats": {}, "members": {m: [] for m in ens.member_names}})
                px, valid = b.patches[gidx[sel]], gvalid[sel]
                f = patch_features(px, valid, channels=COMBINATION_BY_NAME[name].channels)
                probs = ens.predict(px, valid, f)
                for n in acc["names"]:
                    acc["feats"].setdefault(n, []).append(np.asarray(f[n], dtype=np.float32))
                for m in ens.member_names:
                    acc["members"][m].append(probs[m])
                acc["rows"] += [found[(int(b.rows[gidx[n]]), int(b.cols[gidx[n]]))] for n in sel]
    finally:
        for ens in ensembles.values():
            if ens is not None:
                ens.close()
    nodata = len(found) - seen
    if nodata:
        log.append(f"Warning: {nodata} reviewed tile(s) have too little valid data in these layers and are ignored.")
    if unusable:
        log.append(f"Warning: {unusable} reviewed tile(s) are scored by an input combination the package has no "
                   "members for and are not used.")
    if not per:
        raise InputError(f"None of the reviewed tiles is covered by these layers ({target}): the grid comes "
                         "from another scene, or the layers do not overlap it.")
    out = {}
    for name in sorted(per, key=lambda n: (n != target, n)):
        acc = per[name]
        rows = np.array(acc["rows"])
        out[name] = {"mode": ensembles[name].package_mode, "rows": rows,
                     "labels": grid.labels[rows].astype(np.int64), "keys": [_key(grid.bounds[i]) for i in rows],
                     "features": {n: np.concatenate(v) for n, v in acc["feats"].items()},
                     "members": {m: np.concatenate(v) for m, v in acc["members"].items()}, "combination": name,
                     "full": name == target}
    return out


def _read_local_csv(path: Path, mode: str):
    if not path.is_file():
        return None
    with open(path, newline="", encoding="utf-8") as fh:
        rows = [r for r in csv.DictReader(fh) if r.get("mode") == mode]
    if not rows:
        return None
    return rows


def _write_local_csv(path: Path, locals_: list, grid_name: str, carried: list | None = None) -> None:
    """One row per local example of every refitted combination (``mode`` column), plus
    ``carried`` rows (dicts of an earlier round's file, for combinations not refitted now)."""
    names = sorted({n for lo in locals_ for n in lo["features"]} | {k for r in carried or [] for k in r
                                                                    if k not in ("key", "mode", "label", "grid")
                                                                    and not k.startswith("p_")})
    mem = sorted({m for lo in locals_ for m in lo["members"]} | {k[2:] for r in carried or [] for k in r
                                                                 if k.startswith("p_")})
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["key", "mode", "label", "grid"] + names + [f"p_{m}" for m in mem])
        for lo in locals_:
            feats, members = lo["features"], lo["members"]
            for i, k in enumerate(lo["keys"]):
                w.writerow([k, lo["mode"], int(lo["labels"][i]), grid_name]
                           + [f"{feats[n][i]:.7g}" if n in feats else "" for n in names]
                           + [f"{members[m][i]:.7g}" if m in members else "" for m in mem])
        for r in carried or []:
            w.writerow([r.get("key", ""), r.get("mode", ""), r.get("label", ""), r.get("grid", "")]
                       + [r.get(n, "") or "" for n in names] + [r.get(f"p_{m}", "") or "" for m in mem])


def _read_all_local_csv(path: Path) -> list:
    if not path.is_file():
        return []
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def merge_previous(local: dict, base_folder: Path, log: list) -> tuple[dict, int]:
    """Add an adapted base package's earlier local examples (same mode; the new verdict wins)."""
    prev = _read_local_csv(base_folder / LOCAL_FILE, local["mode"])
    if not prev:
        return local, 0
    have = set(local["keys"])
    keep = [r for r in prev if r["key"] not in have]
    if not keep:
        return local, 0
    names, mems = list(local["features"]), list(local["members"])
    if any(n not in keep[0] for n in names) or any(f"p_{m}" not in keep[0] for m in mems):
        log.append("Warning: the base package's earlier local examples do not fit this mode's members; ignored.")
        return local, 0
    out = dict(local)
    out["keys"] = local["keys"] + [r["key"] for r in keep]
    out["labels"] = np.concatenate([local["labels"], np.array([int(r["label"]) for r in keep])])
    out["features"] = {n: np.concatenate([local["features"][n], np.array([float(r[n]) for r in keep], np.float32)])
                       for n in names}
    out["members"] = {m: np.concatenate([local["members"][m], np.array([float(r[f"p_{m}"]) for r in keep])])
                      for m in mems}
    log.append(f"{len(keep)} local example(s) of earlier rounds kept from the base package.")
    return out, len(keep)


# ---------------------------------------------------------------- fitting
def _folds(y: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Stratified fold number per example (shuffled, seeded)."""
    rng = np.random.default_rng(seed)
    fold = np.empty(len(y), dtype=np.int64)
    for c in (0, 1):
        idx = rng.permutation(np.flatnonzero(y == c))
        fold[idx] = np.arange(len(idx)) % k
    return fold


def _fit(kind: str, X, y, w, names, rounds: int, seed: int, threads: int, min_leaf: int):
    """train_gbm's fit with the local examples' weights."""
    if kind == "lightgbm":
        return fit_lgb(X, y, names, rounds, seed, threads, weight=w, min_leaf=min_leaf)
    return fit_xgb(X, y, names, rounds, seed, threads, weight=w)


def _net_weights(specs: list, base_w: dict, members: dict, y: np.ndarray, reweight: bool) -> dict:
    out = {}
    for s in specs:
        w = base_w[s["name"]]
        if s["kind"] == "onnx" and reweight and len(s["modes"]) == 1:  # shared nets keep their weight
            auc = auc_score(y, members[s["name"]])
            w = w * float(np.clip(2 * auc - 1, 0.0, 1.0)) if np.isfinite(auc) else w
        out[s["name"]] = w
    return out


def _combine(specs, weights: dict, probs: dict) -> np.ndarray:
    tot = sum(weights[s["name"]] for s in specs)
    if tot <= 0:
        raise InputError("Every member's weight would be zero after re-weighting.")
    return sum(weights[s["name"]] * probs[s["name"]] for s in specs) / tot


def choose_threshold(y: np.ndarray, p: np.ndarray) -> float:
    """F1-optimal threshold in 0.05..0.95 (step 0.01): the middle of the best plateau."""
    f1 = np.array([prf(y, p, t)[0] for t in THRESHOLDS])
    best = np.flatnonzero(f1 >= f1.max() - 1e-12)
    return float(THRESHOLDS[best[len(best) // 2]])


def base_features_path(explicit, pkg: ModelPackage) -> Path | None:
    for cand in (explicit, os.environ.get(BASE_FEATURES_ENV),
                 pkg.manifest.get("metrics", {}).get("adaptation", {}).get("base_features"), DEFAULT_BASE_FEATURES):
        if cand and Path(cand).is_file():
            return Path(cand)
    return None


def adapt(grid_path: str, opts: DetectOptions, base_folder: str | None, out_folder: str, base_features=None,
          threads: int = 2, seed: int = 42, progress=None, is_cancelled=None, rounds_scale: float = 1.0,
          folds: int = MAX_FOLDS) -> AdaptResult:
    """Adapt the package in ``base_folder`` (None: bundled) to the verdicts of ``grid_path``
    (scored from the layers in ``opts``); write the new package to ``out_folder``.
    ``progress(stage, fraction)``; ``rounds_scale`` < 1 shortens the fits (tests only)."""
    t0 = time.perf_counter()
    log: list = []
    prog = progress or (lambda stage, frac: None)
    cancelled = is_cancelled or (lambda: False)
    out = Path(out_folder)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InputError(f"The output folder '{out}' exists and is not empty: choose a new folder.")
    pkg = load_package(base_folder)
    grid = read_grid(grid_path)
    _verdict_tiles(grid)
    opts = DetectOptions(**{**opts.__dict__, "threads": threads})
    prog("features", 0.0)
    locs = collect_local(grid, opts, pkg, log, lambda f: prog("features", f), cancelled)
    n_prev = {}
    for name in list(locs):
        locs[name], n_prev[name] = merge_previous(locs[name], pkg.folder, log)
    tot_pos = sum(int((lo["labels"] == 1).sum()) for lo in locs.values())
    tot_neg = sum(int((lo["labels"] == 0).sum()) for lo in locs.values())
    if tot_pos == 0 or tot_neg == 0:
        raise InputError(f"The verdicts hold one class only ({tot_pos} confirmed, {tot_neg} rejected): the model "
                         "needs both landslides (confirmed) and other tiles (rejected) to learn from.")
    chosen, kept = [], {}
    for lo in locs.values():
        p, n = int((lo["labels"] == 1).sum()), int((lo["labels"] == 0).sum())
        need = 1 if lo["full"] else MIN_COMBO_PER_CLASS
        if p >= need and n >= need:
            chosen.append(lo)
            continue
        why = (f"{p} confirmed and {n} rejected verdict(s) on its tiles; refitting "
               + ("the run's combination needs both classes" if lo["full"] else
                  f"a fallback combination needs at least {MIN_COMBO_PER_CLASS} of each"))
        kept[lo["mode"]] = {"adapted": False, "verdicts": {"confirmed": p, "rejected": n}, "reason": why}
        log.append(f"Combination {lo['mode']}: base members kept ({why}). Its verdicts are saved for a later round.")
    if not chosen:
        raise InputError("No input combination has enough verdicts to refit: the run's combination needs both "
                         f"classes, a fallback one at least {MIN_COMBO_PER_CLASS} of each. "
                         + " ".join(f"{m}: {v['verdicts']['confirmed']} confirmed, {v['verdicts']['rejected']} "
                                    "rejected." for m, v in kept.items()))

    feat_path = base_features_path(base_features, pkg)
    base_table = None
    if feat_path is not None:
        _, yb_all, table_all = load_feature_table(feat_path)
        base_table = (yb_all, table_all)
        log.append(f"Base training features: {feat_path} ({len(yb_all)} rows)")
    else:
        log.append("Warning: the base training features (train_features_7147.csv.gz) were not found: the "
                   "gradient-boosting members are fitted on the local examples alone.")
    prev = pkg.manifest.get("metrics", {}).get("adaptation", {})
    plans = []
    for k_mode, lo in enumerate(chosen):
        plans.append(_plan_mode(pkg, lo, n_prev[lo["combination"]], base_table, prev, seed, threads, rounds_scale,
                                folds, cancelled, lambda f, k=k_mode: prog("cross-validation", (k + f) / len(chosen)),
                                log))

    tmp = Path(tempfile.mkdtemp(prefix=".adapt-", dir=str(out.parent if out.parent.exists() else Path.cwd())))
    try:
        for m in pkg.manifest["members"]:
            shutil.copy2(pkg.path(m), tmp / m["file"])
        man = json.loads(json.dumps(pkg.manifest))
        jobs = [(pl, s) for pl in plans for s in pl["gbms"]]

        def final_job(job):
            pl, s = job
            if cancelled():
                raise Cancelled()
            X, yy, ww, names = pl["design"](s)
            _fit(s["kind"], X, yy, ww, names, pl["rounds"](s), seed, 1, pl["min_leaf"]).save_model(str(tmp / s["file"]))

        with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
            for i, _ in enumerate(pool.map(final_job, jobs)):
                prog("fit", (i + 1) / len(jobs))
        for pl in plans:
            mode, weights = pl["mode"], pl["weights"]
            for m in man["members"]:
                if m["name"] in weights and mode in m["modes"]:
                    if m["kind"] in GBM_KINDS:
                        m["description"] = (m.get("description", "").split(" [adapted")[0]
                                            + f" [adapted to {pl['n_local']} local verdicts, weight "
                                              f"{pl['w_local']:.1f} each]")
                    elif len(m["modes"]) == 1:
                        m["weight"] = round(weights[m["name"]], 6)
                    elif weights[m["name"]] != m["weight"]:
                        log.append(f"Note: {m['name']} also runs in other modes; its weight is kept there and here.")
            man["modes"][mode] = {**man["modes"].get(mode, {}), "threshold": pl["threshold"], "threshold_source": (
                "re-chosen by landslide:adapt: " + THRESHOLD_RULE if pl["threshold"] != pl["base_t"] or pl["enough"]
                else f"kept from the base package ({pkg.name})")}
        man["name"] = pkg.manifest["name"].split("+")[0] + "+adapted"
        rnd = int(prev.get("round", 0)) + 1
        man["version"] = f"{pkg.manifest['version'].split('+')[0]}+adapt{rnd}"
        done_modes = {lo["mode"] for lo in locs.values()}
        old = _read_all_local_csv(pkg.folder / LOCAL_FILE)
        _write_local_csv(tmp / LOCAL_FILE, list(locs.values()), Path(grid_path).name,
                         [r for r in old if r.get("mode") not in done_modes])
        main = plans[0]
        combos = dict(kept)
        for pl in plans:
            combos[pl["mode"]] = {"adapted": True, "combination": pl["combination"],
                                  "verdicts": {"confirmed": pl["n_pos"], "rejected": pl["n_neg"],
                                               "from_earlier_rounds": pl["n_prev"]},
                                  "local_weight": round(pl["w_local"], 3), "base_rows": pl["base_rows"],
                                  "threshold": pl["threshold"], "local_cv": pl["metrics"],
                                  "net_weights": {k2: round(v, 4) for k2, v in pl["weights"].items()},
                                  "members_refitted": [s["name"] for s in pl["gbms"]]}
        history = list(prev.get("history", []))
        record = {
            "round": rnd, "date": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "base_package": {"name": pkg.name, "folder": str(pkg.folder)},
            "grid": str(Path(grid_path).resolve()), "mode": main["mode"],
            "verdicts": {"confirmed": main["n_pos"], "rejected": main["n_neg"], "from_earlier_rounds": main["n_prev"]},
            "local_weight": round(main["w_local"], 3), "weight_rule": WEIGHT_RULE, "net_rule": NET_RULE,
            "threshold_rule": THRESHOLD_RULE, "combination_rule": COMBINATION_RULE,
            "net_weights": {k2: round(v, 4) for k2, v in main["weights"].items()},
            "base_features": str(feat_path) if feat_path else None, "base_rows": main["base_rows"],
            "local_cv": main["metrics"], "combinations": combos, "seconds": None,
        }
        history.append(record)
        base_w_all = dict(prev.get("original_weights") or {})
        for pl in plans:
            for k2, v in pl["base_w"].items():
                base_w_all.setdefault(k2, v)
        man.setdefault("metrics", {})["adaptation"] = {
            "round": rnd, "base_features": str(feat_path) if feat_path else prev.get("base_features"),
            "original_weights": base_w_all,
            "local_examples": {"file": LOCAL_FILE, "sha256": sha256_file(tmp / LOCAL_FILE)},
            "history": history}
        record["seconds"] = round(time.perf_counter() - t0, 1)
        write_manifest(tmp, man)
        load_package(tmp)  # schema + checksums round trip
        if out.exists():
            out.rmdir()  # empty (checked above)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for pl in plans:
        log.append(f"Adapted {pl['mode']} ({pl['n_pos']} confirmed, {pl['n_neg']} rejected): threshold "
                   f"{pl['threshold']:.3f} (base {pl['base_t']:.3f}); local "
                   + ", ".join(f"{k2} {v}" for k2, v in pl["metrics"].items()
                               if k2.startswith(("cv_", "base_auc", "base_f1"))))
    log.append(f"Adapted package written to {out}.")
    return AdaptResult(out, main["mode"], main["threshold"], sum(pl["n_pos"] for pl in plans),
                       sum(pl["n_neg"] for pl in plans), main["metrics"], log, time.perf_counter() - t0,
                       combinations=combos)


def _plan_mode(pkg, local, n_prev, base_table, prev, seed, threads, rounds_scale, folds, cancelled, prog, log) -> dict:
    """Cross-validation, network weights and threshold of one combination's refit; the final
    GBM fits are returned as ``design`` / ``rounds`` for the caller to run."""
    mode, y = local["mode"], local["labels"]
    n_pos, n_neg = int((y == 1).sum()), int((y == 0).sum())
    log.append(f"Mode {mode}: {n_pos} confirmed and {n_neg} rejected local example(s)"
               + (f" ({n_prev} from earlier rounds)" if n_prev else ""))
    specs = [s for s in pkg.members_for(mode) if s["name"] in local["members"]]
    gbms = [s for s in specs if s["kind"] in GBM_KINDS]
    if not gbms:
        raise InputError(f"The package '{pkg.name}' has no gradient-boosting member in {mode} mode to adapt.")
    base_w = {s["name"]: float(prev.get("original_weights", {}).get(s["name"], s["weight"])) for s in specs}
    yb, table = np.zeros(0, np.int64), None
    if base_table is not None:
        missing = sorted({f for s in gbms for f in s["inputs"]["features"] if f not in base_table[1]})
        if missing:
            log.append(f"Warning: the base training features lack {', '.join(missing[:5])}"
                       f"{'...' if len(missing) > 5 else ''}: the {mode} members are fitted on the local examples "
                       "alone.")
        else:
            yb, table = base_table
    n_local = len(y)
    w_local = LOCAL_SHARE / (1 - LOCAL_SHARE) * len(yb) / n_local if len(yb) else 1.0
    min_leaf = 20 if len(yb) else max(2, min(20, n_local // 10))

    def design(spec, rows=None):
        names = list(spec["inputs"]["features"])
        Xl = feature_matrix(local["features"], names)
        yl, wl = y, np.full(n_local, w_local)
        if rows is not None:
            Xl, yl, wl = Xl[rows], yl[rows], wl[rows]
        if table is None:
            return Xl, yl.astype(np.float64), wl, names
        Xb = feature_matrix(table, names)
        return (np.vstack([Xb, Xl]), np.concatenate([yb, yl]).astype(np.float64),
                np.concatenate([np.ones(len(yb)), wl]), names)

    def rounds(spec):
        r = (LGB_ROUNDS if spec["kind"] == "lightgbm" else XGB_ROUNDS).get(mode, 300)
        return max(10, int(r * rounds_scale))

    enough = n_pos >= MIN_PER_CLASS and n_neg >= MIN_PER_CLASS
    k = min(folds, n_pos, n_neg)
    # cross-validated probabilities of the local examples (GBMs refitted per fold)
    oof = {s["name"]: np.array(local["members"][s["name"]], dtype=np.float64) for s in specs}
    oof_w = np.zeros((n_local, len(specs)))
    cv_done = k >= 2
    if cv_done:
        fold = _folds(y, k, seed)
        jobs = [(f, s) for f in range(k) for s in gbms]

        def cv_job(job):
            f, s = job
            if cancelled():
                raise Cancelled()
            tr, va = np.flatnonzero(fold != f), np.flatnonzero(fold == f)
            X, yy, ww, names = design(s, tr)
            b = _fit(s["kind"], X, yy, ww, names, rounds(s), seed + f, 1, min_leaf)
            return va, s["name"], predict(s["kind"], b, feature_matrix(local["features"], names)[va], 1)

        # one single-threaded fit per core (LightGBM / XGBoost release the GIL): OpenMP teams
        # of 2 threads on 2 busy cores ran XGBoost 5x slower than one thread each
        with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
            for n_done, (va, name, p) in enumerate(pool.map(cv_job, jobs)):
                oof[name][va] = p
                prog((n_done + 1) / len(jobs))
        for f in range(k):
            tr, va = np.flatnonzero(fold != f), np.flatnonzero(fold == f)
            wts = _net_weights(specs, base_w, {m: local["members"][m][tr] for m in local["members"]}, y[tr], enough)
            oof_w[va] = [wts[s["name"]] for s in specs]
        tot = oof_w.sum(axis=1)
        p_cv = (oof_w * np.stack([oof[s["name"]] for s in specs], axis=1)).sum(axis=1) / np.where(tot > 0, tot, 1)
    else:
        p_cv = None
        log.append("Warning: fewer than 2 verdicts in a class: no cross-validation; the base threshold is kept.")

    # final fit on everything
    weights = _net_weights(specs, base_w, local["members"], y, enough)
    base_t = pkg.threshold(mode)
    threshold = choose_threshold(y, p_cv) if (enough and p_cv is not None) else base_t
    if not enough:
        log.append(f"Threshold kept at the base package's {base_t:.3f}: re-choosing it needs at least "
                   f"{MIN_PER_CLASS} confirmed and {MIN_PER_CLASS} rejected verdicts.")
    base_p = _combine(specs, {s["name"]: float(s["weight"]) for s in specs}, local["members"])
    local_metrics = {"n_confirmed": n_pos, "n_rejected": n_neg, "folds": k if cv_done else 0,
                     "base_auc": round(auc_score(y, base_p), 4), "base_f1": round(prf(y, base_p, base_t)[0], 4),
                     "base_threshold": base_t}
    if p_cv is not None:
        f1, pr, rc = prf(y, p_cv, threshold)
        local_metrics.update({"cv_auc": round(auc_score(y, p_cv), 4), "cv_f1": round(f1, 4), "cv_precision": round(pr, 4),
                              "cv_recall": round(rc, 4), "threshold": threshold})
    return {"mode": mode, "combination": local["combination"], "gbms": gbms, "weights": weights,
            "threshold": threshold, "base_t": base_t, "enough": enough, "metrics": local_metrics,
            "design": design, "rounds": rounds, "min_leaf": min_leaf, "w_local": w_local, "n_local": n_local,
            "n_pos": n_pos, "n_neg": n_neg, "n_prev": n_prev, "base_rows": int(len(yb)), "base_w": base_w}
