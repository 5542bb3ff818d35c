"""What a cluster worker runs, without importing dask: plan a scene, score a band of its
tile rows.  Arguments and results are plain dataclasses (options, grid, unit conventions,
tile records): nothing unpicklable crosses the wire, and the model travels as its folder
path plus the SHA-256 of its manifest, never as bytes.

Each worker process loads a package once (checksums verified) and keeps its ensembles'
onnxruntime sessions between tasks (``_PACKAGES``, ``_SCORERS``)."""
from __future__ import annotations

import hashlib
import os
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path

from ..core.errors import InputError
from ..engine.detect import (
    DetectOptions,
    DetectResult,
    TiledScene,
    cascade_line,
    cloud_mask_line,
    no_valid_tile_error,
    tiles_per_mode_line,
)
from ..models.package import ModelPackage, PackageError, load_package

_LOCK = threading.Lock()
_PACKAGES: dict = {}  # (folder, digest) -> ModelPackage
_SCORERS: dict = {}  # (folder, digest, mode, threads, tta, members, cascade, provider) -> [idle Ensemble, ...]
STATS = {"package_loads": 0, "scorer_loads": 0, "tasks": 0}  # per process, for tests and the bench


def manifest_digest(folder: str | Path) -> str:
    """SHA-256 of the package's manifest.json, which lists every member file's SHA-256:
    the package's identity on the wire and in done-markers."""
    return hashlib.sha256((Path(folder) / "manifest.json").read_bytes()).hexdigest()


def package(folder: str, digest: str) -> ModelPackage:
    """The package at ``folder`` on this worker, loaded and checksum-verified once per
    process; a different package there than the client's is an error, not a silent mix."""
    key = (folder, digest)
    with _LOCK:
        pkg = _PACKAGES.get(key)
        if pkg is None:
            try:
                found = manifest_digest(folder)
            except OSError as exc:
                raise PackageError(f"the worker on {os.uname().nodename} cannot read the model package "
                                   f"'{folder}' ({exc}); the package folder must be on a path every "
                                   "worker sees (shared file system)") from None
            if found != digest:
                raise PackageError(f"the model package at '{folder}' on worker {os.uname().nodename} differs "
                                   "from the client's (manifest checksums differ): install the same package "
                                   "on every worker")
            pkg = load_package(folder)  # verifies every member file's checksum
            _PACKAGES[key] = pkg
            STATS["package_loads"] += 1
    return pkg


class _Borrowed:
    """A cached ensemble lent to one task: ``close`` gives it back instead of closing it,
    so its sessions serve the next task in this process."""

    def __init__(self, key, ens):
        self._key, self._ens, self._lent = key, ens, True

    def __getattr__(self, name):  # mode, threshold, member_names, score_stream ...
        return getattr(self._ens, name)

    def close(self) -> None:
        if self._lent:
            self._lent = False
            with _LOCK:
                _SCORERS.setdefault(self._key, []).append(self._ens)


def _scorer_factory(pkg: ModelPackage, folder: str, digest: str, opts: DetectOptions):
    """``mode -> scorer`` drawing on the per-process cache (one ensemble per concurrently
    running task: a worker with several threads never shares one between tasks)."""
    from ..models.ensemble import ensemble_for

    def make(mode: str):
        key = (folder, digest, mode, opts.threads, opts.tta, tuple(opts.members or ()), opts.full_ensemble,
               opts.cascade_margin, opts.threshold, opts.execution_provider)
        with _LOCK:
            idle = _SCORERS.get(key)
            ens = idle.pop() if idle else None
        if ens is None:
            ens = ensemble_for(pkg, mode, opts)
            with _LOCK:
                STATS["scorer_loads"] += 1
        return _Borrowed(key, ens)

    return make


@dataclass
class Plan:
    """What the client needs to cut a scene into bands, decided once for the scene."""

    mode: str
    n_rows: int
    n_cols: int
    conventions: dict  # role -> units convention, passed to every band
    log: list
    seconds: float


def plan_scene(opts: DetectOptions, folder: str, digest: str) -> Plan:
    """Resolve the mode, plan the grid and decide the units (one sample of each layer)."""
    t0 = time.perf_counter()
    pkg = package(folder, digest)
    log: list = []
    tiles = TiledScene(replace(opts, tile_rows=None, conventions=None), pkg, log)
    return Plan(tiles.mode, tiles.n_rows, tiles.n_cols, dict(tiles.scene.conventions), log,
                time.perf_counter() - t0)


def score_band(opts: DetectOptions, folder: str, digest: str, conventions: dict, r0: int, r1: int) -> DetectResult:
    """Detection on tile rows r0 <= row < r1 with the scene's conventions."""
    pkg = package(folder, digest)
    band = replace(opts, tile_rows=(r0, r1), conventions=conventions)
    from ..engine.detect import run_detection

    res = run_detection(band, pkg, make_scorer=_scorer_factory(pkg, folder, digest, band))
    with _LOCK:
        STATS["tasks"] += 1
    res.timings["pid"] = os.getpid()
    return res


def worker_stats() -> dict:
    return dict(STATS, pid=os.getpid())


def bands_of(n_rows: int, band_rows: int) -> list[tuple[int, int]]:
    step = max(1, int(band_rows))
    return [(r, min(r + step, n_rows)) for r in range(0, n_rows, step)]


def assemble(plan: Plan, bands: list[DetectResult], seconds: float, min_valid_fraction: float) -> DetectResult:
    """The bands (any order) as one scene result, records in the single-process order."""
    if not bands:
        raise InputError("the scene has no tile rows")
    bands = sorted(bands, key=lambda b: min((r.row for r in b.records), default=0))
    first = bands[0]
    records = [r for b in bands for r in b.records]
    if not any(r.status == "ok" for r in records):
        raise no_valid_tile_error(min_valid_fraction)
    timings: dict = {}
    for b in bands:
        for k, v in b.timings.items():
            if isinstance(v, (int, float)) and k != "pid":
                timings[k] = timings.get(k, 0.0) + v
    timings["task_seconds"] = timings.pop("total", 0.0)
    timings["total"] = seconds
    timings["bands"] = len(bands)
    # what bands log beyond the plan: members and thresholds of the combinations each met
    # (union, in first-seen order); the scene-wide counts are recomputed below
    per_scene = ("Cloud mask: ", "Tiles per mode: ", "Cascade: ")
    log, seen = list(plan.log), set(plan.log)
    for b in bands:
        for line in b.log:
            if line not in seen and not line.startswith(per_scene):
                seen.add(line)
                log.append(line)
    thresholds: dict = {}
    for b in bands:
        thresholds.update(b.thresholds)
    if "mask_total_px" in timings:
        log.append(cloud_mask_line(int(timings["mask_masked_px"]), int(timings["mask_total_px"])))
    if timings.get("tiles_gbm"):
        log.append(cascade_line(int(timings.get("tiles_full", 0)), int(timings["tiles_gbm"])))
    result = replace(first, records=records, log=log, timings=timings, n_rows=plan.n_rows, n_cols=plan.n_cols,
                     thresholds=thresholds)
    log.append(tiles_per_mode_line(result))
    return result

