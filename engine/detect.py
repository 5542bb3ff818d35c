"""Scene-scale detection: align -> tile -> features -> ensemble -> tile records.

``run_detection`` is the engine behind ``landslide:detect``, the command line and the
benchmark.  It reads the aligned scene one band of whole patch rows at a time (the next
band is read by a background thread while the current one is scored), so memory is
bounded by the scene width, not its area.  It returns records; writing them is the
caller's job, which lets the QGIS algorithm create its output only once all succeeded.
"""
from __future__ import annotations

import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass, field, replace
from typing import Callable, Iterator, Protocol

import numpy as np

from ..core.channels import (
    GROUP_CHANNELS,
    MODE_SOURCES,
    N_CHANNELS,
    ORBITS,
    S1_ROLES,
    S2_ROLE,
    SOURCE_CHANNELS,
    mode_for_sources,
    mode_groups,
    s1_role,
)
from ..core.errors import Cancelled, InputError
from ..core.features import patch_features
from . import units
from .align import AlignedLayer, Grid, InputLayer, guess_s2_bands, plan_grid

PREFETCH = 2  # batches read ahead of the one being scored

__all__ = ["Cancelled", "InputError", "DetectOptions", "TileRecord", "DetectResult", "Scorer", "TiledScene",
           "run_detection", "S1_ROLES"]


class Scorer(Protocol):
    """What detection needs of a model: ``models.ensemble.Ensemble`` is one.  The engine
    receives a factory ``make_scorer(mode) -> Scorer`` and never imports a model runtime."""

    mode: str
    threshold: float

    @property
    def member_names(self) -> list[str]: ...

    def score_stream(self, batches: Iterator, timings: dict | None = None) -> Iterator: ...

    def close(self) -> None: ...


ScorerFactory = Callable[[str], Scorer]


@dataclass
class DetectOptions:
    s2: InputLayer | None = None
    s1: dict = field(default_factory=dict)  # role -> InputLayer
    extent: tuple | None = None  # xmin, ymin, xmax, ymax, crs_wkt
    threshold: float | None = None  # None: the package's threshold for the mode
    min_valid_fraction: float = 0.5
    s2_scale: str = "auto"
    s2_offset: str = "auto"
    sar_units: str = "auto"
    tta: bool = False
    rows_per_batch: int = 2  # patch rows per read window
    threads: int | None = None
    members: list | None = None  # restrict to these member names
    # a band of the scene: score only tile rows r0 <= row < r1 (a cluster task); None = all
    tile_rows: tuple | None = None
    # unit conventions decided once for the scene (role -> units.S2Convention / SarConvention,
    # as Scene.conventions returns them), so every band converts like the whole-scene run
    conventions: dict | None = None


@dataclass
class TileRecord:
    tile_id: int
    row: int
    col: int
    bounds: tuple  # xmin, ymin, xmax, ymax in the grid CRS
    valid_frac: float
    status: str  # ok | nodata
    prob: float | None
    flagged: bool | None
    members: dict


@dataclass
class DetectResult:
    grid: Grid
    mode: str
    members: list
    threshold: float
    records: list
    log: list
    timings: dict
    n_rows: int
    n_cols: int

    @property
    def flagged(self) -> int:
        return sum(1 for r in self.records if r.flagged)

    def summary(self) -> str:
        ok = sum(1 for r in self.records if r.status == "ok")
        total = self.timings.get("total", 0.0)
        rate = ok / total if total > 0 else 0.0
        return (f"{len(self.records)} tiles ({ok} scored, {len(self.records) - ok} nodata), "
                f"{self.flagged} flagged at threshold {self.threshold:.2f}, mode {self.mode}, "
                f"{total:.1f} s, {rate:.1f} patches/s")


def resolve_mode(opts: DetectOptions, log: list) -> tuple[str, dict]:
    """Which mode the given inputs allow; returns (mode, {role: InputLayer} to read)."""
    sources = set()
    if opts.s2 is not None:
        sources.add("S2")
    for orbit in ORBITS:
        post, pre = opts.s1.get(s1_role(orbit, "POST")), opts.s1.get(s1_role(orbit, "PRE"))
        if post and pre:
            sources.add(f"S1_{orbit}")
        elif post or pre:
            log.append(f"Warning: the Sentinel-1 {orbit.lower()} orbit needs both a post- and a pre-event "
                       f"layer to form the change channels; the one given is ignored.")
    mode = mode_for_sources(sources)
    if mode is None:
        if opts.s2 is None and not any(opts.s1.values()):
            raise InputError("No input was given: provide a Sentinel-2 layer, or Sentinel-1 post- and "
                             "pre-event layers for both orbits, or both.")
        raise InputError("The inputs are not enough for any mode: give a Sentinel-2 layer, or Sentinel-1 "
                         "post- and pre-event layers for both the descending and the ascending orbit.")
    if mode == "optical" and "S1_DESC" in sources or mode == "optical" and "S1_ASC" in sources:
        log.append("Warning: SAR is used only when both orbits are complete; running optical-only.")
    layers = {}
    if S2_ROLE in MODE_SOURCES[mode]:
        layers[S2_ROLE] = opts.s2
    for orbit in ORBITS:
        if f"S1_{orbit}" in MODE_SOURCES[mode]:
            for when in ("POST", "PRE"):
                layers[s1_role(orbit, when)] = opts.s1[s1_role(orbit, when)]
    return mode, layers


class Scene:
    """The aligned inputs of one run, read as 12-channel windows in package convention."""

    def __init__(self, layers: dict, grid: Grid, pkg_offset: float, opts: DetectOptions, log: list):
        self.grid = grid
        self.pkg_offset = pkg_offset
        self.aligned = {role: AlignedLayer.open(lyr, grid) for role, lyr in layers.items()}
        for al in self.aligned.values():
            log.append(f"{al.layer.label}: resampling {al.resampling}")
        self.s2conv = None
        self.sarconv = {}
        given = opts.conventions or {}
        self.conventions = {}  # role -> the convention decided from the layer (before averaging)
        try:
            if "S2" in self.aligned:
                self.s2conv = given.get("S2") or units.decide_s2(self.aligned["S2"].sample(), opts.s2_scale,
                                                                 opts.s2_offset)
                self.conventions["S2"] = self.s2conv
                log.append(f"Sentinel-2 convention: {self.s2conv.note}")
            for role in S1_ROLES:
                if role in self.aligned:
                    al = self.aligned[role]
                    conv = given.get(role) or units.decide_sar(al.sample(), opts.sar_units, al.layer.label)
                    self.conventions[role] = conv
                    if al.average_linear_power(conv.scale):
                        conv = conv.averaged_as_power()
                    self.sarconv[role] = conv
                    log.append(f"{al.layer.label} units: {conv.note}")
        except ValueError as exc:
            raise InputError(str(exc)) from None

    def read(self, row0: int, nrows: int) -> np.ndarray:
        """(12, nrows, width) float32, NaN where a used channel has no data."""
        g = self.grid
        nrows = max(0, min(nrows, g.height - row0))
        shape = (N_CHANNELS, nrows, g.width)
        complete = S2_ROLE in self.aligned and all(s1_role(o, "POST") in self.aligned for o in ORBITS)
        out = np.empty(shape, dtype=np.float32) if complete else np.full(shape, np.nan, dtype=np.float32)
        # each layer is read straight into its channels and converted in place
        if S2_ROLE in self.aligned:
            c = SOURCE_CHANNELS["S2"]
            self.s2conv.to_package(self.aligned[S2_ROLE].read(row0, nrows, out=out[c[0]:c[-1] + 1]),
                                   self.pkg_offset, inplace=True)
        for orbit in ORBITS:
            post_role, pre_role = s1_role(orbit, "POST"), s1_role(orbit, "PRE")
            base = SOURCE_CHANNELS[f"S1_{orbit}"][0]  # VV, VH, dVV, dVH
            if post_role in self.aligned:
                post, diff = out[base:base + 2], out[base + 2:base + 4]
                self.sarconv[post_role].to_db(self.aligned[post_role].read(row0, nrows, out=post), inplace=True)
                pre = self.sarconv[pre_role].to_db(self.aligned[pre_role].read(row0, nrows, out=diff), inplace=True)
                np.subtract(post, pre, out=diff)  # post - pre, dB
        return out


def to_patches(block: np.ndarray, ps: int, n_cols: int) -> np.ndarray:
    """(C, k*ps, W) -> (k*n_cols, C, ps, ps), padding the right edge with NaN."""
    c, h, w = block.shape
    k, full = h // ps, min(n_cols, w // ps)  # patch rows; whole patch columns
    out = np.empty((k, n_cols, c, ps, ps), dtype=np.float32)
    # one copy: the block is not padded first (that was a second copy of every batch)
    out[:, :full] = block[:, :k * ps, :full * ps].reshape(c, k, ps, full, ps).transpose(1, 3, 0, 2, 4)
    if full < n_cols:  # right edge: a partial patch column, the rest NaN
        out[:, full:] = np.nan
        rem = min(w - full * ps, ps)
        if rem > 0:
            out[:, full, :, :, :rem] = block[:, :k * ps, full * ps:full * ps + rem].reshape(c, k, ps, rem).transpose(1, 0, 2, 3)
    return out.reshape(k * n_cols, c, ps, ps)


@dataclass
class Batch:
    """Whole patch rows of the scene: patches (n, 12, ps, ps) float32 in package
    convention (NaN = no data), their valid-pixel masks and grid positions."""

    row0: int
    patches: np.ndarray
    valid: np.ndarray
    valid_frac: np.ndarray
    rows: np.ndarray
    cols: np.ndarray
    read_seconds: float
    read_cpu_seconds: float = 0.0  # the reader thread's CPU time (contention-free cost)
    prepared: object = None  # what TiledScene.prepare returned for this batch (reader thread)


class TiledScene:
    """The inputs of one run on their common 10 m grid, cut into patches.

    Shared by detection and patch export; iterating yields ``Batch`` objects while a
    background thread reads and warps the next band of rows (GDAL releases the GIL)."""

    def __init__(self, opts: DetectOptions, pkg, log: list, allowed_modes=None):
        self.mode, layers = resolve_mode(opts, log)
        if "S2" in layers and layers["S2"].bands is None:  # not given: from the band names, else 1-4
            bands, note = guess_s2_bands(layers["S2"].path)
            layers["S2"] = replace(layers["S2"], bands=bands)
            log.append(note)
        allowed = pkg.available_modes() if allowed_modes is None else allowed_modes
        if self.mode not in allowed:
            raise InputError(f"The model package '{pkg.name}' cannot run in {self.mode} mode "
                             f"(it offers: {', '.join(allowed)}).")
        ordered = [layers[r] for r in ("S2",) + S1_ROLES if r in layers]
        self.grid = plan_grid(ordered, opts.extent, pkg.manifest["pixel_size_m"])
        self.ps = ps = pkg.patch_size
        g = self.grid
        self.n_rows, self.n_cols = -(-g.height // ps), -(-g.width // ps)
        log.append(f"Grid: {g.width} x {g.height} px at {g.res:g} m, {self.n_rows} x {self.n_cols} tiles of {ps} px")
        self.scene = Scene(layers, g, pkg.s2_offset, opts, log)
        self.groups = mode_groups(self.mode)
        self.channels = sorted({c for grp in self.groups for c in GROUP_CHANNELS[grp]})
        self.step = max(1, opts.rows_per_batch)
        self.tile_rows = opts.tile_rows
        # optional per-batch work done in the reader thread too (detection: the features),
        # so it overlaps with the scoring of the previous batch
        self.prepare = None

    def tile_bounds(self, row: int, col: int) -> tuple:
        g, ps = self.grid, self.ps
        x0 = g.x0 + col * ps * g.res
        y1 = g.y0 - row * ps * g.res
        return (x0, max(y1 - ps * g.res, g.y0 - g.height * g.res), min(x0 + ps * g.res, g.x0 + g.width * g.res), y1)

    def _load(self, r0: int) -> Batch:
        t0, c0 = time.perf_counter(), time.thread_time()
        ps, k = self.ps, min(self.step, self.row_range()[1] - r0)
        block = self.scene.read(r0 * ps, k * ps)
        if block.shape[1] < k * ps:  # bottom edge: pad with NaN to whole patches
            pad = np.full((N_CHANNELS, k * ps - block.shape[1], self.grid.width), np.nan, np.float32)
            block = np.concatenate([block, pad], axis=1)
        patches = to_patches(block, ps, self.n_cols)
        used = patches if len(self.channels) == N_CHANNELS else patches[:, self.channels]
        valid = np.isfinite(used).all(axis=1)
        idx = np.arange(len(patches))
        batch = Batch(r0, patches, valid, valid.reshape(len(patches), -1).mean(axis=1),
                      r0 + idx // self.n_cols, idx % self.n_cols, time.perf_counter() - t0,
                      time.thread_time() - c0)
        if self.prepare is not None:
            batch.prepared = self.prepare(batch)
        return batch

    def row_range(self) -> tuple[int, int]:
        """The tile rows this run covers: all, or the band ``DetectOptions.tile_rows``."""
        if self.tile_rows is None:
            return 0, self.n_rows
        r0, r1 = self.tile_rows
        return max(0, min(int(r0), self.n_rows)), max(0, min(int(r1), self.n_rows))

    def starts(self) -> list[int]:
        r0, r1 = self.row_range()
        return list(range(r0, r1, self.step))

    def __len__(self) -> int:
        return len(self.starts())

    def __iter__(self):
        starts = self.starts()
        self.wait_seconds = 0.0  # time the consumer spent blocked on reads (not overlapped)
        # one reader thread (GDAL datasets are not thread-safe) working up to PREFETCH
        # batches ahead: a batch that reads slowly (it shares the cores with the scoring)
        # then does not stall the scoring lanes
        with ThreadPoolExecutor(max_workers=1) as pool:
            queue = deque(pool.submit(self._load, s) for s in starts[:PREFETCH])
            for i in range(len(starts)):
                t0 = time.perf_counter()
                batch = queue.popleft().result()
                self.wait_seconds += time.perf_counter() - t0
                if i + PREFETCH < len(starts):
                    queue.append(pool.submit(self._load, starts[i + PREFETCH]))
                yield batch


def run_detection(opts: DetectOptions, pkg, progress=None, is_cancelled=None, ensemble: Scorer | None = None,
                  make_scorer: ScorerFactory | None = None) -> DetectResult:
    """Score the inputs with a model.  ``progress(stage, fraction, msg)``.

    ``pkg`` describes the model (modes, patch size, S2 convention); ``make_scorer(mode)``
    builds its scorer (``pipeline.run_detection`` passes the package's ensemble), or
    ``ensemble`` is one already open for the right mode."""
    if ensemble is None and make_scorer is None:
        raise TypeError("run_detection needs a scorer: pass make_scorer or ensemble (see pipeline.run_detection)")

    t_start = time.perf_counter()
    log: list = []
    timings = {"read": 0.0, "features": 0.0, "read_cpu": 0.0, "features_cpu": 0.0}
    prog = progress or (lambda stage, frac, msg="": None)
    cancelled = is_cancelled or (lambda: False)

    prog("align", 0.0, "planning the 10 m grid")
    # the members' sessions are created while the grid is planned and the units detected
    # (both mostly wait on onnxruntime / GDAL, which release the GIL)
    loading = None
    if ensemble is None:
        try:
            early_mode = resolve_mode(opts, [])[0]  # TiledScene reports any problem itself
        except InputError:
            early_mode = None
        if early_mode in pkg.available_modes():
            loading = ThreadPoolExecutor(max_workers=1)
            pending = loading.submit(make_scorer, early_mode)
    try:
        tiles = TiledScene(opts, pkg, log)
        if loading is not None:
            ensemble = pending.result()
    finally:
        if loading is not None:
            loading.shutdown(wait=True)
    mode = tiles.mode
    own_ensemble = ensemble is None or loading is not None
    if ensemble is None or (loading is not None and ensemble.mode != mode):
        if ensemble is not None:
            ensemble.close()
        assert make_scorer is not None
        ensemble = make_scorer(mode)
    threshold = ensemble.threshold if opts.threshold is None else float(opts.threshold)
    log.append(f"Mode {mode}: members {', '.join(ensemble.member_names)}; threshold {threshold:.3f}")

    def prepare(b: Batch):
        """Reader thread: the scored patches of a batch and their features."""
        ok = b.valid_frac >= opts.min_valid_fraction
        if not ok.any():
            return ok, None, None, None, (0.0, 0.0)
        t0, c0 = time.perf_counter(), time.thread_time()
        patches, valid = (b.patches, b.valid) if ok.all() else (b.patches[ok], b.valid[ok])
        feats = patch_features(patches, valid, tiles.groups)
        return ok, patches, valid, feats, (time.perf_counter() - t0, time.thread_time() - c0)

    tiles.prepare = prepare
    records: list = []
    timings_members: dict = {}

    def finish(b: Batch, ok: np.ndarray, probs: dict, i: int) -> None:
        """Turn a batch's scores into tile records."""
        pos = {j: n for n, j in enumerate(np.flatnonzero(ok))}
        for j in range(len(b.patches)):
            row, col = int(b.rows[j]), int(b.cols[j])
            tid, bounds, vf = row * tiles.n_cols + col, tiles.tile_bounds(row, col), float(b.valid_frac[j])
            if j in pos:
                p = float(probs["prob"][pos[j]])
                records.append(TileRecord(tid, row, col, bounds, vf, "ok", p, p >= threshold,
                                          {m: float(probs[m][pos[j]]) for m in ensemble.member_names}))
            else:
                records.append(TileRecord(tid, row, col, bounds, vf, "nodata", None, None, {}))
        last = min(b.row0 + tiles.step, tiles.row_range()[1])
        prog("predict", (i + 1) / len(tiles), f"tile rows {b.row0 + 1}-{last} of {tiles.n_rows}")

    def scored_batches():
        batches = iter(tiles)
        try:
            for i, b in enumerate(batches):
                if cancelled():
                    raise Cancelled()
                ok, patches, valid, feats, (t_feat, c_feat) = b.prepared
                timings["read"] += b.read_seconds
                timings["read_cpu"] += b.read_cpu_seconds
                timings["features"] += t_feat  # in the reader thread, overlapped with scoring
                timings["features_cpu"] += c_feat
                yield (b, ok, i), patches, valid, feats
        finally:  # stop the reader thread now, not when a traceback lets go of this frame
            close = getattr(batches, "close", None)
            if close is not None:
                close()

    try:
        # two batches in flight (Ensemble.score_stream): no core idles at batch boundaries
        with closing(scored_batches()) as source, closing(ensemble.score_stream(source, timings_members)) as scored:
            for (b, ok, i), probs in scored:
                if cancelled():
                    raise Cancelled()
                finish(b, ok, probs, i)
    finally:
        if own_ensemble:
            ensemble.close()
    if opts.tile_rows is None and not any(r.status == "ok" for r in records):  # a band may be all nodata
        raise InputError(
            "No tile has enough valid data "
            f"(at least {opts.min_valid_fraction:.0%} of its pixels in every input): the area is all nodata "
            "or the inputs barely overlap.")
    timings["read_wait"] = tiles.wait_seconds
    timings.update({f"member:{k}": v for k, v in timings_members.items()})
    timings["total"] = time.perf_counter() - t_start
    return DetectResult(tiles.grid, mode, ensemble.member_names, threshold, records, log, timings,
                        tiles.n_rows, tiles.n_cols)
