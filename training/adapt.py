"""Adapt a model package to a region from the analyst's verdicts (``landslide:adapt``).

1. Local examples: the grid's reviewed tiles (``review``: confirmed = 1, rejected = 0,
   unsure ignored) are cut again from the layers exactly as detect cuts them (the engine's
   ``TiledScene`` with the same options, then ``core.features.patch_features``), so their
   features are the ones detect scored.  The base package's ensemble scores them too.  The
   scene's tiles are read in the same pass: the features of every scored tile of the grid, or
   of a seeded random SCENE_TILES (2000) of them on larger grids.
   Earlier rounds' examples (``local_examples.csv`` of an adapted base package) are kept for
   training (they weigh 0 in the estimates: they are not part of this grid's sample); a tile
   reviewed again takes its new verdict.
   Every input combination detect scored reviewed tiles with is handled on its own (features
   over its channels): the run's full combination is adapted with at least one verdict of each
   class, a fallback combination (e.g. ``desc+asc`` under cloud) with at least
   MIN_COMBO_PER_CLASS (5) of each; otherwise its base members and threshold are kept, the log
   says so and its verdicts are saved in ``local_examples.csv`` for a later round.
2. The sample: ``engine.design`` gives each verdict its design weight (the grid's ``pick`` and
   ``stratum`` fields: random verdicts M_h / n_h, purposive ones 1) and estimates the region's
   landslide share and count with a 95 % interval (log, outputs, manifest).
3. Candidates (``adapt_rule.CANDIDATE_RULE``): the base members with a new threshold; the
   gradient-boosting members refitted on the base training features (the real table
   ``train_features_7147.csv.gz``) weighted toward the scene (``scene_shift.scene_weights``)
   without verdicts; and with the verdicts weighing 0.1, 0.3 or 0.5 of the fit (WEIGHT_RULE).
   Refits are cross-validated (stratified folds, each fold's GBMs refitted without it).
   Networks are kept with their weights (NET_RULE).
4. Threshold (``adapt_rule.THRESHOLD_RULE``): each candidate chooses the share of the region to
   flag from the design-weighted F1 of its cross-validated probabilities, shrunk toward the
   estimated landslide share with few random verdicts; the candidate with the best
   design-weighted F1 wins; its threshold flags that share of the scene's tiles under the final
   model.  Purposive verdicts only: the rule says it had no random sample and what it did.
5. A new package folder: the base members copied, the winner's GBM files replaced (if a refit
   won), the manifest's provenance (``metrics.adaptation``: base package, grid, verdict counts
   (random / purposive), share estimate, rules, candidates, scene weights) and checksums
   written, ``local_examples.csv`` for later rounds.  The folder is assembled beside OUTPUT and
   moved into place only when complete.
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
from ..engine.design import DESIGN_RULE, ShareEstimate, design_weights, estimate_share
from ..engine.detect import DetectOptions, TiledScene
from ..engine.verdicts import PICK_RANDOM, GridTiles, read_grid
from ..models.ensemble import Ensemble
from ..models.package import ModelPackage, PackageError, load_package, sha256_file, write_manifest
from . import adapt_rule as R
from .feature_table import load_feature_table
from .scene_shift import needs_verdicts, scene_weights
from .train_gbm import LGB_ROUNDS, XGB_ROUNDS, auc_score, load_saved, predict, prf

MIN_COMBO_PER_CLASS = 5
SCENE_TILES = 2000
LOCAL_FILE = "local_examples.csv"
BASE_FEATURES_ENV = "SENTINEL_LANDSLIDE_BASE_FEATURES"
DEFAULT_BASE_FEATURES = Path(__file__).resolve().parents[2] / "shared" / "data" / "zindi" / "train_features_7147.csv.gz"
GBM_KINDS = ("lightgbm", "xgboost")
WEIGHT_RULE = ("base rows weighted toward the scene (scene_shift.scene_weights, mean 1; not used, weights 1, when "
               "the weights say the scene is unlike the table: ESS share < 0.10 or domain AUC >= 0.97); the verdicts "
               "weigh a share s of the fit, s chosen among 0 / 0.1 / 0.3 / 0.5 by cross-validation: "
               "w_local = s / (1 - s) * sum(base weights) / n_local; local examples alone: weight 1")
NET_RULE = "networks kept with their base weights (a few dozen verdicts cannot re-weight them reliably)"
COMBINATION_RULE = ("every input combination detect scored reviewed tiles with is adapted on the verdicts of its "
                    "own tiles (features over its channels): the run's full combination with at least one verdict "
                    "of each class, a fallback combination (e.g. desc+asc under cloud) with at least 5 of each; "
                    "else its base members and threshold are kept (its verdicts are saved for a later round)")
THRESHOLD_RULE = R.THRESHOLD_RULE


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
    share: ShareEstimate | None = None  # the region's landslide share from the verdicts
    record: dict = field(default_factory=dict)  # this round's manifest record


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
                  is_cancelled=None, scene_tiles: int = 0) -> dict:
    """Features and base-ensemble member probabilities of the grid's reviewed tiles, per input
    combination detect scores them with: {combination: local examples}, the run's full
    combination first (``full`` True); with ``scene_tiles`` > 0 also the features of up to that
    many of the grid's scored tiles (``scene``: rows, features) per combination."""
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
    scene_at = scene_sample(grid, scene_tiles)
    scene: dict = {}
    try:
        for k, b in enumerate(tiles):
            if is_cancelled is not None and is_cancelled():
                raise Cancelled()
            if progress is not None:
                progress((k + 1) / len(tiles))
            for name, (gidx, gvalid) in b.groups.items():
                at = [n for n, j in enumerate(gidx) if (int(b.rows[j]), int(b.cols[j])) in scene_at]
                if at:  # the scene's tiles (features only): what the scene weights and thresholds see
                    sc = scene.setdefault(name, {"rows": [], "feats": {}})
                    f = patch_features(b.patches[gidx[at]], gvalid[at], channels=COMBINATION_BY_NAME[name].channels)
                    for n, v in f.items():
                        sc["feats"].setdefault(n, []).append(np.asarray(v, dtype=np.float32))
                    sc["rows"] += [scene_at[(int(b.rows[gidx[n]]), int(b.cols[gidx[n]]))] for n in at]
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
        sc = scene.get(name)
        if sc is not None:
            out[name]["scene"] = {"rows": np.array(sc["rows"], dtype=np.int64),
                                  "features": {n: np.concatenate(v) for n, v in sc["feats"].items()}}
    return out


def scene_sample(grid: GridTiles, limit: int = SCENE_TILES) -> dict:
    """{(row, col): grid index} of the scene's tiles adapt reads: every scored tile, or a
    seeded random ``limit`` of them on larger grids (memory and time stay bounded)."""
    if limit <= 0:
        return {}
    idx = np.flatnonzero(grid.scored)
    if len(idx) > limit:
        idx = np.sort(np.random.default_rng(0).choice(idx, size=limit, replace=False))
    return {(int(grid.row[i]), int(grid.col[i])): int(i) for i in idx}


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
    return R.stratified_folds(y, k, seed)


def choose_threshold(y: np.ndarray, p: np.ndarray) -> float:
    """Version 0.4's F1-optimal threshold in 0.05..0.95 (step 0.01, middle of the best plateau),
    every verdict weight 1 (kept for the benchmark: ``adapt_rule.legacy_threshold``)."""
    return R.legacy_threshold(y, p, 0.5, 0)


def base_features_path(explicit, pkg: ModelPackage) -> Path | None:
    for cand in (explicit, os.environ.get(BASE_FEATURES_ENV),
                 pkg.manifest.get("metrics", {}).get("adaptation", {}).get("base_features"), DEFAULT_BASE_FEATURES):
        if cand and Path(cand).is_file():
            return Path(cand)
    return None


def _design_of(grid: GridTiles, log: list):
    """Region-level design: per-tile design weights, random flags and the share estimate."""
    labels, picks, stratum, scored = grid.labels, grid.pick, grid.stratum, grid.scored
    share = estimate_share(labels, picks, stratum, scored)
    w = design_weights(labels, picks, stratum, scored)
    is_random = np.array([p == PICK_RANDOM for p in picks], dtype=bool)
    flagged = int((grid.flagged & scored).sum())
    log.append(share.text())
    if np.isfinite(share.share):
        log.append(f"The map flags {flagged} of {share.n_scored} scored tiles; the verdicts imply about "
                   f"{share.count:.0f} ({share.count_lo:.0f} - {share.count_hi:.0f}) landslide tiles."
                   + (" It flags far fewer than the sample implies." if flagged < 0.5 * share.count_lo else ""))
    else:
        log.append("Warning: no verdict comes from the random sample (all were chosen, e.g. the most uncertain "
                   "tiles): the threshold is chosen from the purposive verdicts alone and the region's landslide "
                   "share is unknown. Draw random tiles ('Next tiles to review' or landslide:sample) and review them.")
    return share, w, is_random


def adapt(grid_path: str, opts: DetectOptions, base_folder: str | None, out_folder: str, base_features=None,
          threads: int = 2, seed: int = 42, progress=None, is_cancelled=None, rounds_scale: float = 1.0,
          folds: int = R.MAX_FOLDS, scene_tiles: int = SCENE_TILES) -> AdaptResult:
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
    locs = collect_local(grid, opts, pkg, log, lambda f: prog("features", f), cancelled, scene_tiles=scene_tiles)
    n_prev = {}
    for name in list(locs):
        n_here = len(locs[name]["labels"])
        locs[name], n_prev[name] = merge_previous(locs[name], pkg.folder, log)
        locs[name]["n_here"] = n_here
    tot_pos = sum(int((lo["labels"] == 1).sum()) for lo in locs.values())
    tot_neg = sum(int((lo["labels"] == 0).sum()) for lo in locs.values())
    if tot_pos == 0 or tot_neg == 0:
        raise InputError(f"The verdicts hold one class only ({tot_pos} confirmed, {tot_neg} rejected): the model "
                         "needs both landslides (confirmed) and other tiles (rejected) to learn from.")
    share, w_design, is_random = _design_of(grid, log)
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
    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        for k_mode, lo in enumerate(chosen):
            plans.append(_plan_mode(pkg, grid, lo, n_prev[lo["combination"]], base_table, prev, share, w_design,
                                    is_random, seed, threads, rounds_scale, folds, cancelled,
                                    lambda f, k=k_mode: prog("cross-validation", (k + f) / len(chosen)), log,
                                    pool.map))

    tmp = Path(tempfile.mkdtemp(prefix=".adapt-", dir=str(out.parent if out.parent.exists() else Path.cwd())))
    try:
        for m in pkg.manifest["members"]:
            shutil.copy2(pkg.path(m), tmp / m["file"])
        man = json.loads(json.dumps(pkg.manifest))
        jobs = [(pl, s) for pl in plans if pl["refit"] for s in pl["gbms"]]

        def final_job(job):
            pl, s = job
            if cancelled():
                raise Cancelled()
            b = R.final_fit(pl["combo"], pl["share"], s["kind"], seed, 1)
            b.save_model(str(tmp / s["file"]))
            return pl["mode"], s["name"], predict(s["kind"], b, pl["combo"].Xs, 1)

        scene_new: dict = {}
        with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
            for i, (mode, name, p) in enumerate(pool.map(final_job, jobs)):
                scene_new.setdefault(mode, {})[name] = p
                prog("fit", (i + 1) / max(1, len(jobs)))
        prog("fit", 1.0)
        for pl in plans:
            c = pl["combo"]
            gp = scene_new.get(pl["mode"]) or {n: c.base_scene[n] for n, _ in c.gbms}
            p_scene = c.ensemble(gp, c.fixed_scene())
            pl["threshold"] = (pl["base_t"] if pl["record"]["chosen"] == R.BASE_CANDIDATE
                               else round(R.threshold_for_fraction(p_scene, pl["fraction"]), 4))
            pl["record"]["threshold"] = pl["threshold"]
            pl["record"]["scene_flagged_share"] = round(float((p_scene >= pl["threshold"]).mean()), 4)
        for pl in plans:
            mode = pl["mode"]
            for m in man["members"]:
                if pl["refit"] and m["kind"] in GBM_KINDS and m["name"] in dict(pl["combo"].gbms):
                    m["description"] = (m.get("description", "").split(" [adapted")[0]
                                        + f" [adapted to {pl['n_local']} local verdicts, local share {pl['share']:g}"
                                          f"{', scene-weighted base rows' if pl['combo'].scene_weighted else ''}]")
            man["modes"][mode] = {**man["modes"].get(mode, {}), "threshold": pl["threshold"], "threshold_source": (
                f"re-chosen by landslide:adapt ({pl['record']['chosen']}): " + R.THRESHOLD_RULE)}
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
                                               "from_earlier_rounds": pl["n_prev"], "random": pl["n_random"],
                                               "purposive": pl["n_purposive"]},
                                  "base_rows": pl["base_rows"], "threshold": pl["threshold"],
                                  "local_cv": pl["metrics"], **pl["record"],
                                  "members_refitted": [s["name"] for s in pl["gbms"]] if pl["refit"] else []}
        history = list(prev.get("history", []))
        record = {
            "round": rnd, "date": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "base_package": {"name": pkg.name, "folder": str(pkg.folder)},
            "grid": str(Path(grid_path).resolve()), "mode": main["mode"],
            "verdicts": {"confirmed": main["n_pos"], "rejected": main["n_neg"], "from_earlier_rounds": main["n_prev"],
                         "random": main["n_random"], "purposive": main["n_purposive"]},
            "share_estimate": share.as_dict(), "weight_rule": WEIGHT_RULE, "net_rule": NET_RULE,
            "threshold_rule": R.THRESHOLD_RULE, "candidate_rule": R.CANDIDATE_RULE, "design_rule": DESIGN_RULE,
            "combination_rule": COMBINATION_RULE, "chosen": main["record"]["chosen"],
            "threshold_choice": main["record"]["threshold_choice"], "candidates": main["record"]["candidates"],
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
        ch = pl["record"]["threshold_choice"]
        log.append(f"Adapted {pl['mode']} ({pl['n_pos']} confirmed, {pl['n_neg']} rejected; {pl['n_random']} random, "
                   f"{pl['n_purposive']} purposive): {pl['record']['chosen']} wins; threshold {pl['threshold']:.3f} "
                   f"(base {pl['base_t']:.3f}) flags {100 * pl['record']['scene_flagged_share']:.1f} % of the scene "
                   f"(target {100 * ch['fraction']:.1f} %: "
                   + ("the base package's own threshold" if ch["f_share"] is None and ch["random_sample"] else
                      f"{ch['lam']:.2f} x F1 part {100 * ch['f_f1']:.1f} % + {1 - ch['lam']:.2f} x the share the estimate "
                      f"implies for this model {100 * ch['f_share']:.1f} %" if ch["random_sample"] else
                      f"no random sample: F1-optimal share of the purposive verdicts {100 * ch['f_f1']:.1f} %")
                   + f"); design-weighted CV F1 {ch['f1_design']:.3f}")
        if pl["record"]["chosen"] == R.BASE_CANDIDATE:
            log.append(f"Note ({pl['mode']}): on these verdicts no change measured better than the base package within "
                       "one standard error, so its members and threshold are kept; more verdicts (random ones "
                       "above all) can tell a real improvement from noise.")
    log.append(f"Adapted package written to {out}.")
    return AdaptResult(out, main["mode"], main["threshold"], sum(pl["n_pos"] for pl in plans),
                       sum(pl["n_neg"] for pl in plans), main["metrics"], log, time.perf_counter() - t0,
                       combinations=combos, share=share, record=record)


def _load_gbm(pkg: ModelPackage, spec: dict, threads: int):
    return load_saved(spec["kind"], pkg.path(spec), threads)


def _plan_mode(pkg, grid, local, n_prev, base_table, prev, share, w_grid, random_grid, seed, threads, rounds_scale,
               folds, cancelled, prog, log, map_fn) -> dict:
    """One combination's candidates (adapt_rule.evaluate): which wins, the share of the scene to
    flag; the final GBM fits are left to the caller (``combo``, ``share``)."""
    mode, y = local["mode"], local["labels"]
    n_pos, n_neg = int((y == 1).sum()), int((y == 0).sum())
    log.append(f"Mode {mode}: {n_pos} confirmed and {n_neg} rejected local example(s)"
               + (f" ({n_prev} from earlier rounds)" if n_prev else ""))
    specs = [s for s in pkg.members_for(mode) if s["name"] in local["members"]]
    gbms = [s for s in specs if s["kind"] in GBM_KINDS]
    if not gbms:
        raise InputError(f"The package '{pkg.name}' has no gradient-boosting member in {mode} mode to adapt.")
    base_w = {s["name"]: float(prev.get("original_weights", {}).get(s["name"], s["weight"])) for s in specs}
    names = list(gbms[0]["inputs"]["features"])
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
    n_here = int(local.get("n_here", n_local))
    # design weights of this grid's verdicts; earlier rounds' examples train but weigh 0 in the estimate
    rows = local["rows"]
    w_d = np.zeros(n_local)
    w_d[:n_here] = w_grid[rows]
    rnd = np.zeros(n_local, dtype=bool)
    rnd[:n_here] = random_grid[rows] & (w_grid[rows] > 0)
    n_random = int(rnd.sum())
    n_purposive = int(((w_d > 0) & ~rnd).sum())
    Xl = feature_matrix(local["features"], names)
    sc = local.get("scene")
    if sc is not None and len(sc["rows"]):
        Xs, scene_rows = feature_matrix(sc["features"], names), sc["rows"]
    else:  # no scene features (scene_tiles = 0): the verdict tiles stand in for the scene
        Xs, scene_rows = Xl[:n_here], rows
    Xb = feature_matrix(table, names) if table is not None else np.zeros((0, len(names)), np.float32)
    wb = np.ones(len(yb))
    scene_note = None
    if len(yb) and len(Xs) >= 10:
        sw = scene_weights(Xb, Xs, seed=seed, threads=threads)
        log.append(f"Scene weights ({mode}): {sw.note}")
        warn = needs_verdicts(sw)
        if warn:
            log.append("Warning: " + warn)
        if sw.too_small:  # weights that extrapolate from the table's edge: not used (SCENE_RULE)
            log.append(f"Scene weights ({mode}) left out: the scene is unlike the training table; the refits "
                       "weigh the training rows equally and rely on the verdicts.")
        else:
            wb = sw.weights
        scene_note = {**sw.provenance(), "used": not sw.too_small}
    # base members on the verdicts (cut by collect_local) and on the scene's tiles
    base_local = {s["name"]: np.asarray(local["members"][s["name"]], dtype=np.float64) for s in specs}
    base_scene = {}
    for s in gbms:
        b = _load_gbm(pkg, s, 1)
        base_scene[s["name"]] = predict(s["kind"], b, Xs, 1)
    nets = [s for s in specs if s["kind"] not in GBM_KINDS]
    weights = {s["name"]: base_w[s["name"]] for s in gbms}
    if nets:
        # the networks as one fixed member: on the verdicts their weighted mean; on the scene's tiles
        # recovered from the grid's ensemble probability minus the GBMs' part (when the grid was scored
        # by this package, checked on the verdicts), else the GBMs' mean stands in (logged)
        w_n = sum(base_w[s["name"]] for s in nets)
        weights["networks"] = w_n
        base_local["networks"] = sum(base_w[s["name"]] * base_local[s["name"]] for s in nets) / w_n
        W = sum(base_w.values())
        gb_l = sum(base_w[s["name"]] * base_local[s["name"]] for s in gbms)
        ok_rows = np.isfinite(grid.prob[rows[:n_here]])
        recon_l = (W * grid.prob[rows[:n_here]] - gb_l[:n_here]) / w_n
        if ok_rows.all() and np.max(np.abs(recon_l - base_local["networks"][:n_here])) < 0.02:
            gb_s = sum(base_w[s["name"]] * base_scene[s["name"]] for s in gbms)
            base_scene["networks"] = np.clip((W * grid.prob[scene_rows] - gb_s) / w_n, 0, 1)
        else:
            base_scene["networks"] = np.mean([base_scene[s["name"]] for s in gbms], axis=0)
            log.append(f"Note ({mode}): the grid was not scored by this package; the networks' share of the "
                       "scene's probabilities is approximated by the gradient-boosting members'.")
        for s in nets:
            base_local.pop(s["name"])

    def rounds(kind: str) -> int:
        r = (LGB_ROUNDS if kind == "lightgbm" else XGB_ROUNDS).get(mode, 300)
        return max(10, int(r * rounds_scale))

    min_leaf = 20 if len(yb) else max(2, min(20, n_local // 10))
    combo = R.Combo(names, [(s["name"], s["kind"]) for s in gbms], weights, Xb, yb, wb, Xl, y, w_d, rnd, Xs,
                    base_local, base_scene, rounds, min_leaf,
                    scene_weighted=scene_note is not None and bool(scene_note["used"]))
    base_t = pkg.threshold(mode)
    best, cands = R.evaluate(combo, share, seed=seed, threads=threads, folds=folds, map_fn=map_fn,
                             cancelled=cancelled, progress=prog, base_threshold=base_t)
    ch = best.choice
    base_p = combo.ensemble({n: base_local[n] for n, _ in combo.gbms}, combo.fixed_local())
    k = min(folds, n_pos, n_neg)
    metrics = {"n_confirmed": n_pos, "n_rejected": n_neg, "folds": k if k >= 2 else 0,
               "base_auc": round(auc_score(y, base_p), 4), "base_f1": round(prf(y, base_p, base_t)[0], 4),
               "base_threshold": base_t, "cv_auc": round(auc_score(y, best.p_local), 4),
               "cv_f1": round(ch.f1_design, 4), "cv_f1_weighting": "design-weighted" if ch.random_sample else
               "purposive verdicts, weight 1 each (no random sample)", "candidate": best.name}
    record = {"chosen": best.name, "local_share": best.share, "fraction": round(ch.fraction, 4),
              "threshold_choice": {"fraction": round(ch.fraction, 4), "lam": round(ch.lam, 4), "f_f1": round(ch.f_f1, 4),
                                   "f_share": None if not np.isfinite(ch.f_share) else round(ch.f_share, 4),
                                   "random_sample": ch.random_sample, "f1_design": round(ch.f1_design, 4),
                                   "t_cv": ch.t_cv, **ch.detail,
                                   "note": None if ch.random_sample else
                                   "no random verdict: the share of the region is unknown; the threshold is the "
                                   "F1-optimal one of the purposive verdicts (weight 1 each), not a sample estimate"},
              "candidates": [{"name": cd.name, "f1_design": round(cd.choice.f1_design, 4),
                              "fraction": round(cd.choice.fraction, 4), "lam": round(cd.choice.lam, 4)}
                             for cd in cands],
              "scene_weights": scene_note, "scene_tiles": int(len(Xs))}
    if not ch.random_sample:
        log.append(f"Threshold rule ({mode}): no random verdict, so no sample of the region: the threshold flags the "
                   "share of the scene at which the purposive verdicts' cross-validated F1 peaks (weight 1 each; "
                   "not an estimate for the region). Review random tiles for an honest threshold.")
    return {"mode": mode, "combination": local["combination"], "gbms": gbms, "combo": combo, "share": best.share,
            "refit": best.share is not None, "fraction": ch.fraction, "base_t": base_t, "metrics": metrics,
            "record": record, "n_local": n_local, "n_pos": n_pos, "n_neg": n_neg, "n_prev": n_prev,
            "n_random": n_random, "n_purposive": n_purposive, "base_rows": int(len(yb)), "base_w": base_w,
            "threshold": base_t}
