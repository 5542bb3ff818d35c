"""Scene-scale detection: align -> tile -> features -> ensemble -> tile records.

``run_detection`` is the engine behind ``landslide:detect``, the command line and the
benchmark.  It reads the aligned scene one band of whole patch rows at a time (the next
band is read by a background thread while the current one is scored), so memory is
bounded by the scene width, not its area.  It returns records; writing them is the
caller's job, which lets the QGIS algorithm create its output only once all succeeded.
"""
from __future__ import annotations

import os
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Optional, Protocol

import numpy as np

from ..core.channels import (
    COMBINATION_BY_NAME,
    COMBINATIONS,
    INPUT_ROLES,
    N_CHANNELS,
    ORBITS,
    ROLE_LABELS,
    S1_ROLES,
    S2_MASK_ROLE,
    S2_ROLE,
    SOURCE_CHANNELS,
    Combination,
    combination_groups,
    combination_name,
    combination_within,
    s1_role,
)
from ..core.errors import Cancelled, InputError
from ..core.features import patch_features
from ..core.rows import rows_of
from . import units
from .align import (
    AlignedLayer,
    Grid,
    InputLayer,
    bounded_gdal_cache,
    cache_bytes_for,
    decode_threads,
    guess_s2_bands,
    plan_grid,
    sample_windows,
)
from .masks import S2Mask, find_scl_band
from .uncertainty import batch_uncertainty

PREFETCH = 2  # batches read ahead of the one being scored
# the Sentinel-2 unit decision under a cloud mask needs at least this many clear sampled pixels
MIN_CLEAR_SAMPLE = 1000

__all__ = ["Cancelled", "InputError", "DetectOptions", "TileRecord", "DetectResult", "Scorer", "TiledScene",
           "run_detection", "S1_ROLES"]


class Scorer(Protocol):
    """What detection needs of a model: ``models.ensemble.Ensemble`` is one.  The engine
    receives a factory ``make_scorer(combination name) -> Scorer`` and never imports a
    model runtime."""

    mode: str
    threshold: float

    @property
    def member_names(self) -> list[str]: ...

    def submit(self, patches, valid, feats, timings: dict | None = None) -> Callable[[], dict]:
        """``patches``: (n, 12, ps, ps) float32, an ndarray or a ``core.rows.Rows`` (the
        group's tiles of a batch, not yet gathered): slice it, index it or ``np.asarray`` it."""
        ...

    def close(self) -> None: ...


ScorerFactory = Callable[[str], Scorer]


@dataclass
class DetectOptions:
    s2: InputLayer | None = None
    s1: dict = field(default_factory=dict)  # role -> InputLayer
    s2_mask: InputLayer | None = None  # SCL or 0/1 (1 = invalid); None: an SCL band of the S2 layer, if any
    extent: tuple | None = None  # xmin, ymin, xmax, ymax, crs_wkt
    threshold: float | None = None  # None: the package's threshold for each tile's combination
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
    # scoring (read by the scorer factory, models.ensemble.ensemble_for; docs/concepts/cascade.md):
    # every member on every tile, instead of the cascade that skips the networks where the
    # GBM pair already settles the flag
    full_ensemble: bool = False
    cascade_margin: float | None = None  # None: models.ensemble.DEFAULT_CASCADE_MARGIN
    execution_provider: str = "auto"  # auto | cpu | a provider (cuda, directml, coreml, or onnxruntime's name)


@dataclass
class TileRecord:
    tile_id: int
    row: int
    col: int
    bounds: tuple  # xmin, ymin, xmax, ymax in the grid CRS
    valid_frac: float  # valid pixels of the tile's combination (nodata tiles: of the run's)
    status: str  # ok | nodata
    prob: float | None
    flagged: bool | None
    members: dict
    mode: str | None = None  # the combination that scored the tile; None for nodata
    s2_valid: float | None = None  # fraction of valid (finite, unmasked) Sentinel-2 pixels; None: no S2 given
    sar_valid: float | None = None  # fraction of valid pixels in the tile's SAR channels; None: no SAR given
    uncertainty: float | None = None  # engine/uncertainty.py; None for nodata tiles
    scored_by: str | None = None  # full (every member ran) | gbm (the cascade skipped the networks); None for nodata


@dataclass
class DetectResult:
    grid: Grid
    mode: str  # the run's combination (what the inputs give)
    members: list  # every member that scored a tile
    threshold: float  # the threshold of the run's combination
    records: list
    log: list
    timings: dict
    n_rows: int
    n_cols: int
    thresholds: dict = field(default_factory=dict)  # combination -> threshold used

    @property
    def flagged(self) -> int:
        return sum(1 for r in self.records if r.flagged)

    @property
    def mode_counts(self) -> dict:
        """{combination name or "nodata": tiles}, richest first."""
        counts: dict = {}
        for r in self.records:
            k = r.mode if r.status == "ok" and r.mode else "nodata"
            counts[k] = counts.get(k, 0) + 1
        order = {c.name: i for i, c in enumerate(COMBINATIONS)}
        return dict(sorted(counts.items(), key=lambda kv: (kv[0] == "nodata", -kv[1], order.get(kv[0], 99))))

    def summary(self) -> str:
        ok = sum(1 for r in self.records if r.status == "ok")
        total = self.timings.get("total", 0.0)
        rate = ok / total if total > 0 else 0.0
        per_mode = ", ".join(f"{k} {v}" for k, v in self.mode_counts.items())
        return (f"{len(self.records)} tiles ({ok} scored, {len(self.records) - ok} nodata), "
                f"{self.flagged} flagged at threshold {self.threshold:.2f}, mode {self.mode} "
                f"(tiles per mode: {per_mode}), {total:.1f} s, {rate:.1f} patches/s")


ORBIT_WORDS = {"DESC": "descending", "ASC": "ascending"}


def resolve_combination(opts: DetectOptions, log: list) -> tuple[Combination, dict]:
    """The run's combination and the {role: InputLayer} to read (every layer given)."""
    states = {}
    for orbit in ORBITS:
        post, pre = opts.s1.get(s1_role(orbit, "POST")), opts.s1.get(s1_role(orbit, "PRE"))
        if pre and not post:
            raise InputError(f"The Sentinel-1 {ORBIT_WORDS[orbit]} orbit has only a pre-event layer: give its "
                             "post-event layer too (the pre-event scene is used only for the post - pre change), "
                             "or leave the orbit out.")
        states[orbit] = "full" if post and pre else "post" if post else "none"
    if opts.s2 is None and all(v == "none" for v in states.values()):
        raise InputError("No input was given: provide a Sentinel-2 layer, or a post-event Sentinel-1 layer of at "
                         "least one orbit (with its pre-event layer for the change channels), or both.")
    combo = Combination(opts.s2 is not None, states["DESC"], states["ASC"])
    layers = {role: (opts.s2 if role == S2_ROLE else opts.s1[role]) for role in combo.roles}
    log.append(f"Inputs: combination {combo.name} ({'; '.join(ROLE_LABELS[r] for r in combo.roles)})")
    for orbit in ORBITS:
        if states[orbit] == "post":
            log.append(f"Sentinel-1 {ORBIT_WORDS[orbit]}: post-event only, no pre-event layer: its change "
                       "channels (post - pre) are absent and members that need them do not run.")
    return combo, layers


def offered_combinations(pkg, allowed_modes=None) -> list:
    """The combinations a package (or the ``allowed_modes`` list) can score, by name."""
    names = pkg.available_modes() if allowed_modes is None else allowed_modes
    return [c for c in COMBINATIONS if c.name in {combination_name(m) for m in names}]


def ranked_within(limit: Combination, offered) -> list:
    """The offered combinations within ``limit``, richest first (most channels, then S2)."""
    fits = [c for c in offered if combination_within(c, limit)]
    return sorted(fits, key=lambda c: (-len(c.channels), not c.s2, COMBINATIONS.index(c)))


class Scene:
    """The aligned inputs of one run, read as 12-channel windows in package convention
    (NaN in the channels the combination lacks, and in the optical channels where the
    Sentinel-2 mask says invalid)."""

    def __init__(self, layers: dict, grid: Grid, pkg_offset: float, opts: DetectOptions, log: list,
                 mask: InputLayer | None = None):
        self.grid = grid
        self.pkg_offset = pkg_offset
        # the reader decodes each window's compressed blocks on the run's threads
        with decode_threads(opts.threads or os.cpu_count()):
            self.aligned = {role: AlignedLayer.open(lyr, grid) for role, lyr in layers.items()}
            for al in self.aligned.values():
                log.append(f"{al.layer.label}: resampling {al.resampling}")
            # its masked share counts the S2 footprint only
            self.mask = (S2Mask(mask, grid, log, layers[S2_ROLE]) if mask is not None and S2_ROLE in self.aligned
                         else None)
        self.s2conv: Optional[units.S2Convention] = None
        self.sarconv = {}
        given = opts.conventions or {}
        self.conventions = {}  # role -> the convention decided from the layer (before averaging)
        try:
            if "S2" in self.aligned:
                if given.get("S2"):
                    self.s2conv = given["S2"]
                else:
                    sample, how = self._s2_sample()
                    s2c = units.decide_s2(sample, opts.s2_scale, opts.s2_offset)
                    # the sample's story travels with the decision: band tasks given it log the same line
                    self.s2conv = replace(s2c, note=s2c.note + how)
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

    def _s2_sample(self) -> tuple[np.ndarray, str]:
        """The Sentinel-2 pixels the unit decision looks at, and how they were chosen.
        Without a mask: the layer's own decimated sample.  With one: windows of the grid
        (engine.align.sample_windows) with the masked pixels left out, since a bright cloud
        raises the percentiles the decision reads; the unmasked sample if too few are clear."""
        al = self.aligned[S2_ROLE]
        if self.mask is None:
            return al.sample(), ""
        parts, bad = [], []
        for x0, y0, w, h in sample_windows(self.grid):
            parts.append(al.read_window(x0, y0, w, h).reshape(len(al.layer.band_list), -1))
            bad.append(self.mask.invalid_window(x0, y0, w, h).ravel())
        px, masked = np.concatenate(parts, axis=1), np.concatenate(bad)
        clear = px[:, ~masked & np.isfinite(px).all(axis=0)]
        if clear.shape[1] < MIN_CLEAR_SAMPLE:
            return al.sample(), (f"; the cloud mask leaves only {clear.shape[1]} clear pixels in the sample "
                                 f"(fewer than {MIN_CLEAR_SAMPLE}): decided on every pixel, clouds included")
        return clear, (f"; on the {clear.shape[1]} sampled pixels the cloud mask leaves clear "
                       f"({masked.mean():.0%} of the sample masked)")

    def read(self, row0: int, nrows: int) -> np.ndarray:
        """(12, nrows, width) float32, NaN where a channel has no data or is absent."""
        g = self.grid
        nrows = max(0, min(nrows, g.height - row0))
        shape = (N_CHANNELS, nrows, g.width)
        complete = S2_ROLE in self.aligned and all(s1_role(o, "PRE") in self.aligned for o in ORBITS)
        out = np.empty(shape, dtype=np.float32) if complete else np.full(shape, np.nan, dtype=np.float32)
        # each layer is read straight into its channels and converted in place
        if S2_ROLE in self.aligned:
            c = SOURCE_CHANNELS["S2"]
            opt = out[c[0]:c[-1] + 1]
            assert self.s2conv is not None, "decided when the S2 layer was opened"
            self.s2conv.to_package(self.aligned[S2_ROLE].read(row0, nrows, out=opt), self.pkg_offset, inplace=True)
            if self.mask is not None and nrows:
                np.copyto(opt, np.float32(np.nan), where=self.mask.invalid(row0, nrows)[None])
        for orbit in ORBITS:
            post_role, pre_role = s1_role(orbit, "POST"), s1_role(orbit, "PRE")
            base = SOURCE_CHANNELS[f"S1_{orbit}"][0]  # VV, VH, dVV, dVH
            if post_role in self.aligned:
                post, diff = out[base:base + 2], out[base + 2:base + 4]
                self.sarconv[post_role].to_db(self.aligned[post_role].read(row0, nrows, out=post), inplace=True)
                if pre_role in self.aligned:  # post only: the change channels stay NaN
                    pre = self.sarconv[pre_role].to_db(self.aligned[pre_role].read(row0, nrows, out=diff), inplace=True)
                    np.subtract(post, pre, out=diff)  # post - pre, dB
        if g.area is not None and nrows:  # the grid's whole tiles beyond the processing area: no data
            c0, r0, c1, r1 = g.area
            out[:, :, :c0] = np.nan
            out[:, :, c1:] = np.nan
            out[:, :max(0, min(nrows, r0 - row0))] = np.nan
            out[:, max(0, min(nrows, r1 - row0)):] = np.nan
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
    convention (NaN = no data), their valid-pixel masks and grid positions.

    ``valid`` / ``valid_frac``: every channel of the run's combination valid.  Per tile,
    ``modes`` holds the combination that scores it (the richest offered one whose sources
    are valid there; None: nothing valid) and ``groups`` {combination: (patch indices,
    valid pixels of that combination)}; ``tile_valid`` the valid fraction of the tile's
    combination; ``s2_valid`` / ``sar_valid`` the sources' valid fractions (None when the
    run has no such source)."""

    row0: int
    patches: np.ndarray
    valid: np.ndarray
    valid_frac: np.ndarray
    rows: np.ndarray
    cols: np.ndarray
    read_seconds: float
    read_cpu_seconds: float = 0.0  # the reader thread's CPU time (contention-free cost)
    prepared: object = None  # what TiledScene.prepare returned for this batch (reader thread)
    modes: list = field(default_factory=list)
    groups: dict = field(default_factory=dict)
    tile_valid: np.ndarray | None = None
    s2_valid: np.ndarray | None = None
    sar_valid: np.ndarray | None = None


def _orbit_sources(orbit: str) -> tuple[str, str]:
    return f"{orbit.lower()}_post", f"{orbit.lower()}_change"


class TiledScene:
    """The inputs of one run on one 10 m grid over the union of their extents, cut into patches.

    Shared by detection and patch export; iterating yields ``Batch`` objects while a
    background thread reads and warps the next band of rows (GDAL releases the GIL).
    ``allowed_modes``: the combinations tiles may be scored as (default: the package's)."""

    def __init__(self, opts: DetectOptions, pkg, log: list, allowed_modes=None):
        self.combination, layers = resolve_combination(opts, log)
        self.mode = self.combination.name
        mask = opts.s2_mask
        if "S2" in layers:
            if layers["S2"].bands is None:  # not given: from the band names, else 1-4
                bands, note = guess_s2_bands(layers["S2"].path)
                layers["S2"] = replace(layers["S2"], bands=bands)
                log.append(note)
            if mask is None:
                scl = find_scl_band(layers["S2"].path)
                if scl is not None:
                    mask = InputLayer(S2_MASK_ROLE, layers["S2"].path, [scl])
                    log.append(f"Sentinel-2 band {scl} is described as SCL: used as the cloud mask")
            if mask is None:
                log.append("Warning: no Sentinel-2 cloud mask (S2_MASK) was given and the Sentinel-2 layer has no "
                           "SCL band: clouds were not masked, and a bright cloud looks like bare soil to the models.")
        elif mask is not None:
            log.append("Warning: a Sentinel-2 cloud mask was given without a Sentinel-2 layer; it is not used.")
        self.offered = offered_combinations(pkg, allowed_modes)
        ranked = ranked_within(self.combination, self.offered)
        if not ranked:
            raise InputError(f"The model package '{pkg.name}' cannot score {self.mode} inputs, nor any part of them "
                             f"(it offers: {', '.join(c.name for c in self.offered) or 'nothing'}).")
        self.scored_as = ranked[0]
        if self.scored_as != self.combination:
            log.append(f"The model package has no members for {self.mode}: tiles where all of it is valid are scored "
                       f"as {self.scored_as.name}, the richest combination it offers within the inputs.")
        ordered = [layers[r] for r in INPUT_ROLES if r in layers]
        self.ps = ps = pkg.patch_size
        # the union of the inputs; tiles start where today's common-area grid started
        self.grid = plan_grid(ordered, opts.extent, pkg.manifest["pixel_size_m"], tile_px=ps,
                              min_reach=opts.min_valid_fraction)
        g = self.grid
        self.n_rows, self.n_cols = -(-g.height // ps), -(-g.width // ps)
        log.append(f"Grid: {g.width} x {g.height} px at {g.res:g} m, {self.n_rows} x {self.n_cols} tiles of {ps} px")
        self.scene = Scene(layers, g, pkg.s2_offset, opts, log, mask if "S2" in layers else None)
        self.groups = combination_groups(self.combination)
        self.channels = list(self.combination.channels)
        self.min_valid = opts.min_valid_fraction
        self.step = max(1, opts.rows_per_batch)
        self._ranked: dict = {}
        self.tile_rows = opts.tile_rows
        # optional per-batch work done in the reader thread too (detection: the features),
        # so it overlaps with the scoring of the previous batch
        self.prepare: Optional[Callable[[Batch], Any]] = None  # run_detection: the reader thread's work

    @property
    def mask(self) -> S2Mask | None:
        return self.scene.mask

    def tile_bounds(self, row: int, col: int) -> tuple:
        g, ps = self.grid, self.ps
        x0 = g.x0 + col * ps * g.res
        y1 = g.y0 - row * ps * g.res
        a = g.area_bounds  # clipped to the processing area (the grid may reach beyond it in whole tiles)
        return (max(x0, a[0]), max(y1 - ps * g.res, a[1]), min(x0 + ps * g.res, a[2]), min(y1, a[3]))

    def _source_masks(self, patches: np.ndarray) -> dict:
        """{source: (n, ps*ps) bool}: s2, desc_post, desc_change, asc_post, asc_change
        (the sources the run has); change = post and pre valid."""
        n = len(patches)
        c = self.combination
        out = {}
        if c.s2:
            o = SOURCE_CHANNELS["S2"]
            out["s2"] = np.isfinite(patches[:, o[0]:o[-1] + 1]).all(axis=1).reshape(n, -1)
        for orbit, state in (("DESC", c.desc), ("ASC", c.asc)):
            base = SOURCE_CHANNELS[f"S1_{orbit}"][0]
            post, change = _orbit_sources(orbit)
            if state != "none":
                out[post] = np.isfinite(patches[:, base:base + 2]).all(axis=1).reshape(n, -1)
            if state == "full":  # the change is NaN wherever post or pre is
                out[change] = np.isfinite(patches[:, base + 2:base + 4]).all(axis=1).reshape(n, -1)
        return out

    @staticmethod
    def _joint(combo: Combination, src: dict, sel) -> np.ndarray:
        """Pixels where every source of ``combo`` is valid, for the patches ``sel``."""
        keys = (["s2"] if combo.s2 else []) + [
            k for orbit, state in (("DESC", combo.desc), ("ASC", combo.asc)) if state != "none"
            for k in _orbit_sources(orbit)[:1 if state == "post" else 2]]
        out = src[keys[0]][sel]
        for k in keys[1:]:
            out = out & src[k][sel]
        return out

    def _assign(self, src: dict, n: int):
        """Each tile's combination: per source valid fraction >= min_valid gives the
        tile's sources; then the richest offered combination within them whose joint
        valid fraction is >= min_valid too.  Returns (modes, groups, tile_valid)."""
        mv, c = self.min_valid, self.combination
        frac = {k: m.mean(axis=1) for k, m in src.items()}
        s2_ok = frac["s2"] >= mv if c.s2 else np.zeros(n, bool)
        ranks = []
        for orbit, state in (("DESC", c.desc), ("ASC", c.asc)):
            post, change = _orbit_sources(orbit)
            r = np.zeros(n, np.int8)
            if state != "none":
                r[frac[post] >= mv] = 1
            if state == "full":
                r[(r == 1) & (frac[change] >= mv)] = 2
            ranks.append(r)
        key = s2_ok.astype(np.int8) * 9 + ranks[0] * 3 + ranks[1]
        modes: list = [None] * n
        groups: dict = {}
        tile_valid = np.zeros(n, np.float64)
        states = ("none", "post", "full")
        for k in np.unique(key):
            sel = np.flatnonzero(key == k)
            k = int(k)
            limit = Combination(bool(k // 9), states[(k // 3) % 3], states[k % 3])
            if limit.name not in self._ranked:
                self._ranked[limit.name] = ranked_within(limit, self.offered) if limit.name else []
            for cand in self._ranked[limit.name]:
                if not len(sel):
                    break
                joint = self._joint(cand, src, sel)
                jf = joint.mean(axis=1)
                ok = jf >= mv
                if ok.any():
                    idx = sel[ok]
                    prev = groups.get(cand.name)
                    v = joint[ok]
                    groups[cand.name] = (idx, v) if prev is None else (
                        np.concatenate([prev[0], idx]), np.concatenate([prev[1], v]))
                    tile_valid[idx] = jf[ok]
                    for j in idx:
                        modes[j] = cand.name
                sel = sel[~ok]
        # patch order inside each group (the scorer returns probabilities in that order)
        for name, (idx, v) in list(groups.items()):
            order = np.argsort(idx, kind="stable")
            groups[name] = (idx[order], v[order].reshape(len(idx), self.ps, self.ps))
        return modes, groups, tile_valid

    def _load(self, r0: int) -> Batch:
        t0, c0 = time.perf_counter(), time.thread_time()
        ps, k = self.ps, min(self.step, self.row_range()[1] - r0)
        block = self.scene.read(r0 * ps, k * ps)
        if block.shape[1] < k * ps:  # bottom edge: pad with NaN to whole patches
            pad = np.full((N_CHANNELS, k * ps - block.shape[1], self.grid.width), np.nan, np.float32)
            block = np.concatenate([block, pad], axis=1)
        patches = to_patches(block, ps, self.n_cols)
        n = len(patches)
        src = self._source_masks(patches)
        run_valid = self._joint(self.combination, src, slice(None))
        modes, groups, tile_valid = self._assign(src, n)
        c = self.combination
        s2_valid = src["s2"].mean(axis=1) if c.s2 else None
        sar_valid = None
        if c.desc != "none" or c.asc != "none":
            sar_only = Combination(False, c.desc, c.asc)
            sar_valid = self._joint(sar_only, src, slice(None)).mean(axis=1)
            for name, (idx, _v) in groups.items():  # the SAR channels the tile is scored with
                g = COMBINATION_BY_NAME[name]
                if (g.desc, g.asc) != (c.desc, c.asc) and (g.desc != "none" or g.asc != "none"):
                    sar_valid[idx] = self._joint(Combination(False, g.desc, g.asc), src, idx).mean(axis=1)
        idx = np.arange(n)
        batch = Batch(r0, patches, run_valid.reshape(n, ps, ps), run_valid.mean(axis=1),
                      r0 + idx // self.n_cols, idx % self.n_cols, time.perf_counter() - t0,
                      time.thread_time() - c0, modes=modes, groups=groups, tile_valid=tile_valid,
                      s2_valid=s2_valid, sar_valid=sar_valid)
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


def score_groups_stream(batches, get_scorer: Callable[[str], Scorer], timings: dict | None = None, depth: int = 2):
    """Score ``(key, [(combination, patches, valid, feats), ...])`` batches, each group by
    its combination's scorer, with ``depth`` batches in flight (as ``Ensemble.score_stream``:
    the lanes start on the next batch while the last slices of this one finish).  Yields
    ``(key, {combination: probs})`` in input order.  Closing it early waits for what is queued."""
    in_flight: deque = deque()
    try:
        for key, groups in batches:
            collects = [(name, get_scorer(name).submit(p, v, f, timings)) for name, p, v, f in groups]
            in_flight.append((key, collects))
            while len(in_flight) >= max(1, depth):
                key0, cs = in_flight.popleft()
                yield key0, {name: c() for name, c in cs}
        while in_flight:
            key0, cs = in_flight.popleft()
            yield key0, {name: c() for name, c in cs}
    finally:
        for _key, cs in in_flight:
            for _name, c in cs:
                try:
                    c()
                except Exception:  # noqa: BLE001 - the first error is already propagating
                    pass


def run_detection(opts: DetectOptions, pkg, progress=None, is_cancelled=None, ensemble: Scorer | None = None,
                  make_scorer: ScorerFactory | None = None) -> DetectResult:
    """Score the inputs with a model.  ``progress(stage, fraction, msg)``.

    ``pkg`` describes the model (combinations, patch size, S2 convention);
    ``make_scorer(combination)`` builds a scorer (``pipeline.run_detection`` passes the
    package's ensemble), or ``ensemble`` is one already open for the run's combination.
    Each tile is scored by the richest combination valid in it (see ``TiledScene``); the
    scorers are made once per combination met.  GDAL's block cache is bounded for the run
    (align.bounded_gdal_cache, to align.cache_bytes_for the inputs)."""
    if ensemble is None and make_scorer is None:
        raise TypeError("run_detection needs a scorer: pass make_scorer or ensemble (see pipeline.run_detection)")
    with bounded_gdal_cache(run_cache_bytes(opts)):
        return _run_detection(opts, pkg, progress, is_cancelled, ensemble, make_scorer)


def run_cache_bytes(opts: DetectOptions) -> int:
    """GDAL's block-cache bound for a run on these inputs (align.cache_bytes_for)."""
    try:
        layers = list(resolve_combination(opts, [])[1].values()) + ([opts.s2_mask] if opts.s2_mask else [])
    except InputError:  # reported by the run itself
        layers = []
    return cache_bytes_for(layers)


def _run_detection(opts: DetectOptions, pkg, progress, is_cancelled, ensemble: Scorer | None,
                   make_scorer: ScorerFactory | None) -> DetectResult:
    t_start = time.perf_counter()
    log: list = []
    timings = {"read": 0.0, "features": 0.0, "read_cpu": 0.0, "features_cpu": 0.0}
    prog = progress or (lambda stage, frac, msg="": None)
    cancelled = is_cancelled or (lambda: False)

    prog("align", 0.0, "planning the 10 m grid")
    # the run combination's members are loaded while the grid is planned and the units
    # detected (both mostly wait on onnxruntime / GDAL, which release the GIL)
    loading = pending = None
    early = None
    if ensemble is None:
        assert make_scorer is not None  # checked on entry
        try:
            ranked = ranked_within(resolve_combination(opts, [])[0], offered_combinations(pkg))
            early = ranked[0].name if ranked else None
        except InputError:  # TiledScene reports any problem itself
            early = None
        if early is not None:
            loading = ThreadPoolExecutor(max_workers=1)
            pending = loading.submit(make_scorer, early)
    scorers: dict = {}
    try:
        try:
            tiles = TiledScene(opts, pkg, log)
            if pending is not None:
                scorers[early] = pending.result()
        finally:
            if loading is not None:
                loading.shutdown(wait=True)
                if pending is not None and early not in scorers and pending.done() and not pending.exception():
                    pending.result().close()  # TiledScene failed: nothing will use it
        if ensemble is not None:
            scorers[combination_name(ensemble.mode)] = ensemble
        return _detect(opts, tiles, scorers, make_scorer, ensemble, log, timings, prog, cancelled, t_start)
    finally:
        for sc in scorers.values():
            if sc is not ensemble:
                sc.close()


def _detect(opts, tiles: TiledScene, scorers: dict, make_scorer, ensemble, log, timings, prog, cancelled,
            t_start) -> DetectResult:
    members: list = []
    thresholds: dict = {}

    def get_scorer(name: str) -> Scorer:
        sc = scorers.get(name)
        if sc is None:
            if make_scorer is None:
                raise InputError(f"Tiles need the {name} combination but only an ensemble for "
                                 f"{ensemble.mode} was given.")
            sc = scorers[name] = make_scorer(name)
        if name not in thresholds:
            thresholds[name] = sc.threshold if opts.threshold is None else float(opts.threshold)
            members.extend(m for m in sc.member_names if m not in members)
            note = f"Mode {name}: members {', '.join(sc.member_names)}; threshold {thresholds[name]:.3f}"
            skipped = getattr(sc, "skipped", [])
            if skipped:
                note += f"; not run (they need channels {name} lacks): {', '.join(skipped)}"
            if not getattr(sc, "needs_pixels", True):
                note += "; no network applies: the GBMs alone score it"
            cascade = getattr(sc, "cascade", None)
            if cascade is not None:
                note += (f"; cascade: networks only where the GBM pair leaves the flag open or within "
                         f"{cascade.margin:g} of the threshold")
            log.append(note)
            providers = getattr(sc, "provider_line", None)
            if providers is not None and getattr(sc, "needs_pixels", False):
                log.append(f"Mode {name}: networks run on {providers()}")
            log.extend(getattr(sc, "warnings", []))
        return sc

    get_scorer(tiles.scored_as.name)  # the run's own combination is logged first

    def prepare(b: Batch):
        """Reader thread: per combination met in the batch, its patches and features."""
        t0, c0 = time.perf_counter(), time.thread_time()
        out = []
        for name, (idx, valid) in b.groups.items():
            # the group's tiles are not copied out of the batch: features gather them a few at
            # a time, the networks only the tiles the cascade leaves open
            patches = rows_of(b.patches, idx)
            feats = patch_features(b.patches, valid, channels=COMBINATION_BY_NAME[name].channels,
                                   index=None if patches is b.patches else idx)
            out.append((name, idx, patches, valid, feats))
        return out, (time.perf_counter() - t0, time.thread_time() - c0)

    tiles.prepare = prepare
    records: list = []
    timings_members: dict = {}
    scored_by: dict = {}  # full | gbm -> tiles

    def finish(b: Batch, groups: list, probs: dict, i: int) -> None:
        """Turn a batch's scores into tile records."""
        assert b.tile_valid is not None  # set by TiledScene._load
        where = {}
        unc = {name: batch_uncertainty(probs[name], scorers[name].member_names,
                                       getattr(scorers[name], "weights", None), thresholds[name]) for name in probs}
        for name, idx, *_ in groups:
            for n, j in enumerate(idx):
                where[int(j)] = (name, n)
        for j in range(len(b.patches)):
            row, col = int(b.rows[j]), int(b.cols[j])
            tid, bounds = row * tiles.n_cols + col, tiles.tile_bounds(row, col)
            s2v = None if b.s2_valid is None else round(float(b.s2_valid[j]), 4)
            sarv = None if b.sar_valid is None else round(float(b.sar_valid[j]), 4)
            if j in where:
                name, n = where[j]
                pr = probs[name]
                p = float(pr["prob"][n])
                how = str(pr["scored_by"][n]) if "scored_by" in pr else "full"
                scored_by[how] = scored_by.get(how, 0) + 1
                # a member the cascade did not run on the tile (NaN) has no probability there
                records.append(TileRecord(tid, row, col, bounds, float(b.tile_valid[j]), "ok", p,
                                          p >= thresholds[name],
                                          {m: float(pr[m][n]) for m in scorers[name].member_names
                                           if np.isfinite(pr[m][n])},
                                          name, s2v, sarv, float(unc[name][n]), how))
            else:
                records.append(TileRecord(tid, row, col, bounds, float(b.valid_frac[j]), "nodata", None, None, {},
                                          None, s2v, sarv))
        last = min(b.row0 + tiles.step, tiles.row_range()[1])
        prog("predict", (i + 1) / len(tiles), f"tile rows {b.row0 + 1}-{last} of {tiles.n_rows}")

    def scored_batches():
        batches = iter(tiles)
        try:
            for i, b in enumerate(batches):
                if cancelled():
                    raise Cancelled()
                groups, (t_feat, c_feat) = b.prepared
                timings["read"] += b.read_seconds
                timings["read_cpu"] += b.read_cpu_seconds
                timings["features"] += t_feat  # in the reader thread, overlapped with scoring
                timings["features_cpu"] += c_feat
                for name, *_ in groups:
                    get_scorer(name)
                yield (b, groups, i), [(name, p, v, f) for name, _idx, p, v, f in groups]
        finally:  # stop the reader thread now, not when a traceback lets go of this frame
            close = getattr(batches, "close", None)
            if close is not None:
                close()

    # two batches in flight: no core idles at batch boundaries
    with closing(scored_batches()) as source, \
            closing(score_groups_stream(source, get_scorer, timings_members)) as scored:
        for (b, groups, i), probs in scored:
            if cancelled():
                raise Cancelled()
            finish(b, groups, probs, i)
    if tiles.mask is not None:  # counts, not the fraction: bands of a cluster run add up
        timings["mask_masked_px"], timings["mask_total_px"] = tiles.mask.masked, tiles.mask.total
        log.append(cloud_mask_line(tiles.mask.masked, tiles.mask.total))
    if opts.tile_rows is None and not any(r.status == "ok" for r in records):  # a band may be all nodata
        raise no_valid_tile_error(opts.min_valid_fraction)
    timings["read_wait"] = tiles.wait_seconds
    timings["tiles_full"], timings["tiles_gbm"] = scored_by.get("full", 0), scored_by.get("gbm", 0)
    if scored_by.get("gbm"):
        log.append(cascade_line(scored_by.get("full", 0), scored_by["gbm"]))
    timings.update({f"member:{k}": v for k, v in timings_members.items()})
    timings["total"] = time.perf_counter() - t_start
    result = DetectResult(tiles.grid, tiles.mode, members, thresholds[tiles.scored_as.name], records, log, timings,
                          tiles.n_rows, tiles.n_cols, thresholds)
    log.append(tiles_per_mode_line(result))
    return result


def no_valid_tile_error(min_valid_fraction: float) -> InputError:
    return InputError(
        "No tile has enough valid data "
        f"(at least {min_valid_fraction:.0%} of its pixels in some input the model package can score): the "
        "area is all nodata or cloud, or the inputs barely overlap.")


def cascade_line(full: int, gbm: int) -> str:
    """The cascade's share (counts: bands of a cluster run add up)."""
    return (f"Cascade: the networks ran on {full} of {full + gbm} scored tiles ({full / max(1, full + gbm):.1%}); "
            f"the GBM pair settled the flag of the other {gbm} (scored_by = gbm)")


def cloud_mask_line(masked: int, total: int) -> str:
    return f"Cloud mask: {masked / total if total else 0.0:.1%} of the area masked (not valid Sentinel-2 pixels)"


def tiles_per_mode_line(result: DetectResult) -> str:
    return "Tiles per mode: " + ", ".join(f"{k} {v}" for k, v in result.mode_counts.items())
