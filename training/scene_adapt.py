"""Adapt a model package to the scene it is about to score, without verdicts (``ADAPT_TO_SCENE``).

1. Feature pre-pass (``scene_features``): the scene is cut into tiles exactly as detect cuts
   them (the engine's ``TiledScene``, same options), but only evenly spread tile rows are
   read, enough for about SCENE_TILE_CAP (3000) tiles; each valid tile's features are
   computed over the channels of the combination detect will score it with
   (``core.features.patch_features``).  Where a combination has more than the cap, an evenly
   spaced subsample of its tiles is kept.  Memory: one row of tiles at a time plus at most
   3000 x ~120 feature values.  No randomness: the same scene gives the same tiles.
2. Weights (``training.scene_shift.scene_weights``): for each combination with at least
   MIN_SCENE_TILES (50) scene tiles, the base training rows that have that combination's
   channels (as ``train_gbm`` trains them) are weighted so that they resemble the scene.
3. Refit (``adapt_to_scene``): that combination's LightGBM + XGBoost pair is refitted on the
   weighted rows with ``train_gbm``'s hyper-parameters and tree counts (the rows, seed and
   rounds the package's own pair was trained with); networks, ensemble weights and
   thresholds are kept.  Rules:
   - no base training table (``train_features_7147.csv.gz`` via ``--base-features``,
     SENTINEL_LANDSLIDE_BASE_FEATURES, the package's record or ../shared/data): nothing is
     refitted, the log says so, detection uses the base package;
   - ESS too small (``scene_shift.needs_verdicts``: ESS below 10 % of the rows, or a domain
     AUC of 0.97 or more): that combination is NOT refitted (weights that rest on a
     twentieth of the table, or that extrapolate beyond it, would only dress up a guess);
     the log says plainly that verdicts are needed and how many;
   - fewer than 50 scene tiles of a combination: its base pair is kept.
4. A new package folder: every member copied, the refitted GBM files replaced, the manifest's
   name / version marked ``+scene``, provenance in ``metrics.scene_adaptation`` (rule, ESS,
   domain AUC, scene tiles, seed per combination) and checksums written by the package
   writer; the folder is assembled beside its destination and moved into place complete.

``scene_adapted`` (a context manager) chains the three for detect, the command line and
cluster runs: it yields the package to score with (adapted, in a temporary folder removed
on exit, or the base one) and the log lines.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from ..core.channels import COMBINATION_BY_NAME
from ..core.errors import Cancelled
from ..core.features import feature_matrix, patch_features
from ..engine.detect import DetectOptions, TiledScene
from ..models import deps
from ..models.ensemble import MissingDependency, package_mode
from ..models.package import ModelPackage, load_package, write_manifest
from .adapt import base_features_path
from .feature_table import load_feature_table
from .scene_shift import SceneWeights, needs_verdicts, scene_weights
from .train_gbm import LGB_ROUNDS, XGB_ROUNDS, fit_lgb, fit_xgb, supported_rows

# The default of ADAPT_TO_SCENE in landslide:detect, the command line and cluster runs: the
# one home of that decision.  Evidence: docs/concepts/scene-adaptation.md (training/scene_eval.py).
ADAPT_TO_SCENE_DEFAULT = False
SCENE_TILE_CAP = 3000      # tiles read by the pre-pass (evenly spread rows, then evenly spaced tiles)
MIN_SCENE_TILES = 50       # a combination with fewer scene tiles keeps its base pair
SCENE_SEED = 42            # the seed train_gbm fits the bundled pairs with
GBM_KINDS = ("lightgbm", "xgboost")
SCENE_RULE = ("GBM pair of each combination the scene uses (>= 50 scene tiles) refitted on the base training rows "
              "that have its channels, weighted by the scene's density ratio (training/scene_shift.py); not "
              "refitted when the ESS is below 10 % of the rows or the domain AUC >= 0.97; networks, ensemble "
              "weights and thresholds kept")


@dataclass
class SceneAdaptResult:
    """What ``adapt_to_scene`` did: ``folder`` is the new package, or None when nothing was refitted."""

    folder: Path | None
    adapted: dict = field(default_factory=dict)   # combination -> provenance record (refitted)
    kept: dict = field(default_factory=dict)      # combination -> why its base pair was kept
    weights: dict = field(default_factory=dict)   # combination -> SceneWeights
    log: list = field(default_factory=list)
    seconds: float = 0.0


# ---------------------------------------------------------------- 1. the pre-pass
class _SampledRows(TiledScene):
    """A TiledScene that reads only the given tile rows (one row per batch)."""

    def __init__(self, opts: DetectOptions, pkg, log: list, cap: int):
        super().__init__(opts, pkg, log)
        n_rows, n_cols = self.n_rows, self.n_cols
        if n_rows * n_cols <= cap:
            self._rows = list(range(n_rows))
        else:
            k = max(1, min(n_rows, -(-cap // n_cols)))
            self._rows = sorted({int(round(v)) for v in np.linspace(0, n_rows - 1, k)})

    def starts(self) -> list[int]:
        return list(self._rows)


def _even(n: int, cap: int) -> np.ndarray:
    """``cap`` evenly spaced indices of ``range(n)`` (all when n <= cap)."""
    if n <= cap:
        return np.arange(n)
    return np.unique(np.round(np.linspace(0, n - 1, cap)).astype(np.int64))


def scene_features(opts: DetectOptions, pkg: ModelPackage, cap: int = SCENE_TILE_CAP, progress=None,
                   is_cancelled=None) -> tuple[dict, int]:
    """{combination: {feature: float32 array}} of at most ``cap`` valid scene tiles per
    combination, and the number of tiles read.  Deterministic (evenly spread rows and tiles)."""
    opts = replace(opts, rows_per_batch=1, tile_rows=None)
    tiles = _SampledRows(opts, pkg, [], cap)
    per: dict = {}
    n_read = 0
    for k, b in enumerate(tiles):
        if is_cancelled is not None and is_cancelled():
            raise Cancelled()
        n_read += len(b.patches)
        for name, (idx, valid) in b.groups.items():
            f = patch_features(b.patches[idx], valid, channels=COMBINATION_BY_NAME[name].channels)
            acc = per.setdefault(name, {})
            for n, v in f.items():
                acc.setdefault(n, []).append(np.asarray(v, dtype=np.float32))
        if progress is not None:
            progress((k + 1) / max(1, len(tiles)))
    out = {}
    for name, acc in per.items():
        cols = {n: np.concatenate(v) for n, v in acc.items()}
        keep = _even(len(next(iter(cols.values()))), cap)
        out[name] = {n: v[keep] for n, v in cols.items()}
    return out, n_read


# ---------------------------------------------------------------- 2-4. weights, refit, package
def _fit_save(kind: str, X, y, w, names, rounds: int, seed: int, path: Path) -> None:
    if kind == "lightgbm":
        fit_lgb(X, y, names, rounds, seed, 1, weight=w).save_model(str(path))
    else:
        fit_xgb(X, y, names, rounds, seed, 1, weight=w).save_model(str(path))


def _rounds(kind: str, mode: str, scale: float) -> int:
    r = (LGB_ROUNDS if kind == "lightgbm" else XGB_ROUNDS).get(mode, 300)
    return max(10, int(round(r * scale)))


def adapt_to_scene(pkg: ModelPackage, scene: dict, out_folder: str | Path, base_features=None, *,
                   seed: int = SCENE_SEED, threads: int = 1, rounds_scale: float = 1.0, is_cancelled=None,
                   n_scene_read: int | None = None) -> SceneAdaptResult:
    """Refit the GBM pair of every combination in ``scene`` ({combination: {feature: array}},
    as ``scene_features`` returns) on the base training rows weighted toward the scene, and
    write a new package to ``out_folder`` (new or empty).  Returns ``folder`` None (and
    writes nothing) when no combination was refitted; the log says why.
    ``rounds_scale`` < 1 shortens the fits (tests only)."""
    t0 = time.perf_counter()
    res = SceneAdaptResult(None)
    log = res.log
    cancelled = is_cancelled or (lambda: False)
    feat_path = base_features_path(base_features, pkg)
    if feat_path is None:
        log.append("Warning: scene adaptation skipped: the training feature table (train_features_7147.csv.gz) was "
                   "not found (give it with --base-features or SENTINEL_LANDSLIDE_BASE_FEATURES); the scene is "
                   f"scored with the base package {pkg.name} unchanged.")
        return res
    _, yb, table = load_feature_table(feat_path)
    jobs = []
    for name in sorted(scene, key=lambda n: list(COMBINATION_BY_NAME).index(n) if n in COMBINATION_BY_NAME else 99):
        feats = scene[name]
        n_scene = len(next(iter(feats.values()))) if feats else 0
        own = package_mode(pkg, name)
        gbms = [m for m in pkg.members_for(own) if m["kind"] in GBM_KINDS]
        if not gbms:
            res.kept[name] = "the package has no gradient-boosting member for it"
            continue
        if n_scene < MIN_SCENE_TILES:
            res.kept[name] = f"only {n_scene} scene tile(s) (at least {MIN_SCENE_TILES} needed)"
            log.append(f"Scene adaptation, {name}: base pair kept ({res.kept[name]}).")
            continue
        shared = [m["name"] for m in gbms if len(m["modes"]) > 1]
        if shared:
            res.kept[name] = f"its GBM members also serve other combinations ({', '.join(shared)})"
            log.append(f"Scene adaptation, {name}: base pair kept ({res.kept[name]}).")
            continue
        names = sorted({f for m in gbms for f in m["inputs"]["features"]})
        missing = [n for n in names if n not in table or n not in feats]
        if missing:
            res.kept[name] = f"features missing from the training table or the scene: {', '.join(missing[:4])}"
            log.append(f"Scene adaptation, {name}: base pair kept ({res.kept[name]}).")
            continue
        rows = np.flatnonzero(supported_rows(table, name))
        sw = scene_weights(feature_matrix(table, names)[rows], feature_matrix(feats, names), seed=seed,
                           threads=threads)
        res.weights[name] = sw
        log.append(f"{name}: {sw.note}")
        warn = needs_verdicts(sw)
        if warn:
            res.kept[name] = "effective sample size too small: verdicts needed"
            log.append(f"Warning: {name}: {warn} The base pair is kept (no refit on so few effective rows).")
            continue
        res.adapted[name] = {**sw.provenance(), "n_scene_tiles": n_scene, "rows": int(len(rows)),
                             "members": [m["name"] for m in gbms]}
        for m in gbms:
            jobs.append((name, m, rows, names, sw))
    if not jobs:
        log.append(f"Scene adaptation: nothing refitted; the scene is scored with the base package {pkg.name}.")
        res.seconds = time.perf_counter() - t0
        return res
    absent = deps.missing({deps.KIND_MODULES[m["kind"]] for _n, m, *_ in jobs})
    if absent:  # the refit needs what scoring the package needs anyway
        raise MissingDependency(deps.message(absent))

    out = Path(out_folder)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"the output folder '{out}' exists and is not empty")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".scene-", dir=str(out.parent)))
    try:
        for m in pkg.manifest["members"]:
            shutil.copy2(pkg.path(m), tmp / m["file"])
        man = json.loads(json.dumps(pkg.manifest))

        def job(j):
            name, m, rows, names, sw = j
            if cancelled():
                raise Cancelled()
            X = feature_matrix(table, list(m["inputs"]["features"]))[rows]
            t = time.perf_counter()
            _fit_save(m["kind"], X, yb[rows].astype(np.float64), sw.weights, list(m["inputs"]["features"]),
                      _rounds(m["kind"], name, rounds_scale), seed, tmp / m["file"])
            return m["name"], time.perf_counter() - t

        # one single-threaded fit per core, as adapt does (deterministic: each fit has its own seed and 1 thread)
        with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
            fit_s = dict(pool.map(job, jobs))
        refitted = {m["name"] for _n, m, *_ in jobs}
        for m in man["members"]:
            if m["name"] in refitted:
                m["description"] = m.get("description", "").split(" [scene-adapted")[0] + " [scene-adapted]"
        base_name, base_version = pkg.manifest["name"], pkg.manifest["version"]
        man["version"] = f"{base_version}+scene"
        for name, rec in res.adapted.items():  # no timings here: the same scene gives the same package, byte for byte
            rec["rounds"] = {m["name"]: _rounds(m["kind"], name, rounds_scale) for _n, m, *_ in jobs if _n == name}
        man.setdefault("metrics", {})["scene_adaptation"] = {
            "base_package": {"name": base_name, "version": base_version, "folder": str(pkg.folder)},
            "rule": SCENE_RULE, "base_features": str(feat_path), "seed": seed, "tile_cap": SCENE_TILE_CAP,
            "scene_tiles_read": n_scene_read, "combinations": res.adapted, "kept": res.kept}
        write_manifest(tmp, man)
        load_package(tmp)  # schema + checksums round trip
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    res.folder = out
    res.seconds = time.perf_counter() - t0
    log.append(f"Scene-adapted package: GBM pair of {', '.join(res.adapted)} refitted with the scene weights in "
               f"{res.seconds:.1f} s (fits: " + ", ".join(f"{k} {v:.1f} s" for k, v in fit_s.items())
               + "); networks, ensemble weights and thresholds kept.")
    return res


@contextlib.contextmanager
def scene_adapted(opts: DetectOptions, pkg: ModelPackage, *, base_features=None, seed: int = SCENE_SEED,
                  threads: int | None = None, progress=None, is_cancelled=None, tmp_root: str | None = None,
                  rounds_scale: float = 1.0):
    """Pre-pass, weights and refit for one detection: yields ``(package, log lines)``; the
    package is the scene-adapted one in a temporary folder (removed on exit) or, where
    nothing was refitted, ``pkg`` itself.  ``progress(fraction)`` covers the pre-pass.
    ``threads`` (default: 2, or 1 on one core) only sets how many single-threaded fits run at
    once: the package is the same whatever it is."""
    threads = threads or max(1, min(2, os.cpu_count() or 1))
    log = [f"Adapting the model to the scene (ADAPT_TO_SCENE): features of at most {SCENE_TILE_CAP} evenly "
           "spread tiles"]
    scene, n_read = scene_features(opts, pkg, progress=progress, is_cancelled=is_cancelled)
    log.append("Scene tiles for adaptation: " + ", ".join(
        f"{name} {len(next(iter(f.values())))}" for name, f in scene.items()) + f" (of {n_read} read)")
    work = Path(tempfile.mkdtemp(prefix="sentinel-scene-", dir=tmp_root))
    try:
        res = adapt_to_scene(pkg, scene, work / "package", base_features, seed=seed, threads=threads,
                             is_cancelled=is_cancelled, n_scene_read=n_read, rounds_scale=rounds_scale)
        log.extend(res.log)
        yield (load_package(res.folder) if res.folder is not None else pkg), log
    finally:
        shutil.rmtree(work, ignore_errors=True)


def weights_summary(weights: dict[str, SceneWeights]) -> str:
    """One line per combination: ESS and domain AUC (for reports)."""
    return "; ".join(f"{k}: ESS {w.ess:.0f}/{w.n_base}, AUC {w.domain_auc:.2f}" for k, w in weights.items())
