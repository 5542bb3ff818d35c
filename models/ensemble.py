"""Ensemble runtime: loads a package's members for one mode and averages their
probabilities.  Needs onnxruntime / lightgbm / xgboost only (imported lazily, and only
for the member kinds the mode uses); never torch."""
from __future__ import annotations

import importlib
import os
from collections import deque
from dataclasses import dataclass, replace

import numpy as np

from ..core.channels import CHANNEL_NAMES, COMBINATION_BY_NAME, LEGACY_MODE_NAMES, OPTICAL
from ..core.features import feature_channels, feature_matrix
from ..core.indices import compute_indices
from . import deps
from .package import ModelPackage, PackageError


class MissingDependency(ImportError):
    """A Python package needed to run a member is not installed."""


def require(module: str):
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependency(f"{deps.message([module])}\n(import error: {exc})") from exc


# Parallelism: a batch is split into sub-batches scored concurrently by ``lanes`` worker
# threads (onnxruntime, LightGBM and XGBoost release the GIL), each member running
# single-threaded inside a lane.  Tiny nets parallelise poorly inside one operator (64-wide
# matmuls, many small ops), but perfectly across slices.  Override with the environment
# variable SENTINEL_LANDSLIDE_LANES (1 = the members' own intra-op threads instead).
_MIN_LANE_PATCHES = 16
_SUB_BATCH = 40
_GPU_SUB_BATCH = 256  # on an accelerator a pass costs a launch, not cache misses: larger sub-batches
# onnxruntime session options (session_options), from bench/ort_options.py on 2 cores
# (bench/results.md "onnxruntime session options"): lanes of one intra-op thread each beat
# one lane of two threads (0.83x) and the parallel executor (0.52x); spinning pool threads
# cost 2.7x; "all" graph optimisations (NCHWc convolutions) beat extended (0.61x) and basic
# (0.65x); the memory arena is no faster within the noise and holds +150 MB at 40-patch
# sub-batches; the memory pattern planner is ~10 % faster for +110 MB.
_ORT_ARENA = False
_ORT_MEM_PATTERN = True
_ORT_LEVEL = "all"

# ---------------------------------------------------------------- the cascade
# The GBM pair scores every tile first; from the manifest weights the full ensemble's
# probability lies in [G / W, (G + N) / W] whatever the networks say (G = the GBMs'
# weighted sum, N = the networks' weight, W = all weights).  Where that interval lies
# entirely on one side of the threshold, at least CASCADE_MARGIN away, the flag is
# certain and the networks are skipped.  See docs/concepts/cascade.md.
DEFAULT_CASCADE_MARGIN = 0.05
_CASCADE_EPS = 1e-9  # float rounding of the interval: never skip a tile that sits on the boundary
SCORED_FULL, SCORED_GBM = "full", "gbm"


@dataclass(frozen=True)
class Cascade:
    """Skip the networks where the flag at ``threshold`` is already certain, except
    within ``margin`` of it."""

    threshold: float | None = None  # None: the package's threshold for the mode
    margin: float = DEFAULT_CASCADE_MARGIN


def cascade_interval(gbm_sum: np.ndarray, net_weight: float, total_weight: float) -> tuple:
    """(lo, hi): the full ensemble's probability whatever networks of total weight
    ``net_weight`` say (each in [0, 1]), given the GBMs' weighted sum ``gbm_sum``."""
    return gbm_sum / total_weight, (gbm_sum + net_weight) / total_weight


def cascade_certain(lo: np.ndarray, hi: np.ndarray, cascade: Cascade) -> np.ndarray:
    """Tiles whose flag is certain and at least the margin from the threshold."""
    assert cascade.threshold is not None, "the ensemble fills in its package's threshold"
    t, m = float(cascade.threshold), max(0.0, float(cascade.margin))
    return (lo >= t + m + _CASCADE_EPS) | (hi < t - m - _CASCADE_EPS)


def gbm_tile_bound(prob_gbm: np.ndarray, net_weight: float, total_weight: float) -> np.ndarray:
    """The most a gbm tile's ``prob`` (the GBM pair's weighted mean p) can differ from the
    full ensemble's: (N / W) * max(p, 1 - p)."""
    p = np.asarray(prob_gbm, dtype=np.float64)
    return net_weight / total_weight * np.maximum(p, 1.0 - p)


# ---------------------------------------------------------------- execution providers
PROVIDER_ORDER = ("CUDAExecutionProvider", "DmlExecutionProvider", "CoreMLExecutionProvider", "CPUExecutionProvider")
CPU_PROVIDER = "CPUExecutionProvider"
PROVIDER_ALIASES = {"cpu": CPU_PROVIDER, "cuda": "CUDAExecutionProvider", "directml": "DmlExecutionProvider",
                    "dml": "DmlExecutionProvider", "coreml": "CoreMLExecutionProvider",
                    "tensorrt": "TensorrtExecutionProvider", "openvino": "OpenVINOExecutionProvider",
                    "rocm": "ROCMExecutionProvider"}
PROVIDER_CHOICES = ("auto", "cpu", "cuda", "directml", "coreml")


def choose_provider(choice: str | None, available: list) -> tuple[str, str | None]:
    """(provider to start, warning or None) for an EXECUTION_PROVIDER value: ``auto``
    (CUDA, then DirectML, then CoreML, then the CPU, whichever ``available`` offers),
    ``cpu``, or a provider named by alias ("cuda") or by onnxruntime's name."""
    c = (choice or "auto").strip()
    if c.lower() == "auto":
        return next(p for p in PROVIDER_ORDER if p in available or p == CPU_PROVIDER), None
    name = PROVIDER_ALIASES.get(c.lower(), c)
    if name in available:
        return name, None
    return CPU_PROVIDER, (f"Warning: execution provider '{c}' is not offered by this onnxruntime build "
                          f"(it offers {', '.join(available) or 'none'}): the networks run on the CPU.")


def provider_options(provider: str) -> list:
    """The providers list for a session: the chosen one, then the CPU for unsupported operators."""
    return [provider] if provider == CPU_PROVIDER else [provider, CPU_PROVIDER]


def _lanes_for(threads: int) -> int:
    env = os.environ.get("SENTINEL_LANDSLIDE_LANES")
    if env:
        return max(1, min(threads, int(env)))
    return threads


def norm_constants(inputs: list, normalisation: dict) -> dict:
    """Per network input with channels: (channel indices, centre, scale) from the
    manifest's normalisation.  Training imports this, so both sides scale identically."""
    out = {}
    for t in inputs:
        if "channels" not in t:
            continue
        idx = [CHANNEL_NAMES.index(c) for c in t["channels"]]
        kind = t.get("norm", "none")
        if kind == "zscore":
            c = np.array(normalisation["zscore"]["mean"])[idx]
            s = np.array(normalisation["zscore"]["std"])[idx]
        elif kind == "robust":
            c = np.array(normalisation["robust"]["q50"])[idx]
            s = np.array(normalisation["robust"]["q95"])[idx] - np.array(normalisation["robust"]["q05"])[idx]
        else:
            c, s = np.zeros(len(idx)), np.ones(len(idx))
        out[t["name"]] = (idx, c.astype(np.float32)[:, None, None], s.astype(np.float32)[:, None, None])
    return out


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-np.clip(x, -60, 60)))


class _GBMMember:
    def __init__(self, pkg: ModelPackage, spec: dict, threads: int):
        self.spec = spec
        self.features = list(spec["inputs"]["features"])
        path = str(pkg.path(spec))
        if spec["kind"] == "lightgbm":
            lgb = require("lightgbm")
            self.booster = lgb.Booster(model_file=path)
            self.threads = threads
            if self.booster.num_feature() != len(self.features):
                raise PackageError(f"member '{spec['name']}' expects {self.booster.num_feature()} features, "
                                   f"manifest lists {len(self.features)}")
        else:
            xgb = require("xgboost")
            self.booster = xgb.Booster()
            self.booster.load_model(path)
            self.booster.set_param({"nthread": threads})
            self._xgb = xgb

    def predict(self, patches, valid, feats) -> np.ndarray:
        X = feature_matrix(feats, self.features)
        if self.spec["kind"] == "lightgbm":
            return np.asarray(self.booster.predict(X, num_threads=self.threads), dtype=np.float64)
        # in-place prediction: no DMatrix copy, and thread-safe for concurrent lanes
        return np.asarray(self.booster.inplace_predict(X, missing=np.nan), dtype=np.float64)


class _OnnxMember:
    def __init__(self, pkg: ModelPackage, spec: dict, threads: int, tta: bool, provider: str = "auto"):
        ort = require("onnxruntime")
        self.spec = spec
        self.tta = tta
        self.s2_offset = pkg.s2_offset
        opts = session_options(ort, threads)
        self.warnings: list[str] = []
        self.session = open_session(ort, str(pkg.path(spec)), opts, provider, self.warnings, spec["name"])
        self.provider = self.session.get_providers()[0]  # what it actually runs on
        names = {i.name for i in self.session.get_inputs()}
        self.inputs = spec["inputs"]
        missing = [t["name"] for t in self.inputs if t["name"] not in names]
        if missing:
            raise PackageError(f"member '{spec['name']}': ONNX graph has no input(s) {missing}")
        self.norm = norm_constants(self.inputs, pkg.manifest["normalisation"])
        self.output_is_logit = spec.get("output", "logit") == "logit"

    def feeds(self, patches: np.ndarray, cache: dict | None = None) -> dict:
        """The network inputs; ``cache`` shares identical inputs between members of a batch."""
        out = {}
        for t in self.inputs:
            key: tuple
            if "channels" in t:
                idx, c, s = self.norm[t["name"]]
                key = ("ch", tuple(idx), t.get("norm", "none"))
            else:
                key = ("ix", tuple(t["indices"]))
            if cache is not None and key in cache:
                out[t["name"]] = cache[key]
                continue
            if "channels" in t:
                arr = patches[:, idx].astype(np.float32, copy=False)  # a gathered copy
                arr -= c  # then in place: (x - c) / s as before, one temporary fewer
                arr /= s
            else:
                arr = compute_indices(patches, t["indices"], self.s2_offset)
            out[t["name"]] = arr
            if cache is not None:
                cache[key] = arr
        return out

    def predict(self, patches, valid, feats, cache: dict | None = None) -> np.ndarray:
        feeds = self.feeds(patches, cache)
        views = [lambda a: a]
        if self.tta:
            views += [lambda a: a[..., ::-1], lambda a: a[..., ::-1, :], lambda a: a[..., ::-1, ::-1]]
        acc = np.zeros(len(patches), dtype=np.float64)
        for v in views:
            out = self.session.run(None, {k: np.ascontiguousarray(v(a)) for k, a in feeds.items()})[0]
            acc = acc + np.asarray(out, dtype=np.float64).reshape(len(patches))
        acc /= len(views)  # mean of logits over flips, as in the paper
        return _sigmoid(acc) if self.output_is_logit else acc


def session_options(ort, threads: int, level: str = _ORT_LEVEL, arena: bool = _ORT_ARENA,
                    mem_pattern: bool = _ORT_MEM_PATTERN, parallel: bool = False, inter_op: int = 1,
                    spinning: bool = False):
    """The one place the networks' onnxruntime session options are set (the defaults are
    measured: bench/ort_options.py, bench/results.md "onnxruntime session options").  The
    keyword arguments exist for that bench's variants; detect uses the defaults."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = inter_op
    opts.execution_mode = ort.ExecutionMode.ORT_PARALLEL if parallel else ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = {"basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
                                     "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
                                     "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}[level]
    # no per-session memory arena: seven arenas each grown to their peak (rounded up to
    # powers of two) held ~0.5 GB at 172-patch batches; plain allocations are as fast
    opts.enable_cpu_mem_arena = arena
    opts.enable_mem_pattern = mem_pattern
    if (threads > 1 or inter_op > 1) and not spinning:  # idle pool threads spinning would steal the reader's core
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        opts.add_session_config_entry("session.inter_op.allow_spinning", "0")
    return opts


def open_session(ort, path: str, opts, choice: str, warnings: list, name: str = ""):
    """An InferenceSession on the provider ``choice`` resolves to; a provider that fails to
    start (missing driver or libraries, no device) falls back to the CPU with a warning."""
    provider, warn = choose_provider(choice, list(ort.get_available_providers()))
    if warn:
        warnings.append(warn)
    if provider != CPU_PROVIDER:
        try:
            sess = ort.InferenceSession(path, sess_options=opts, providers=provider_options(provider))
        except Exception as exc:  # noqa: BLE001 - any failure to start the device: the CPU instead
            warnings.append(f"Warning: network {name} could not start on {provider} ({str(exc).strip()[:200]}): "
                            "it runs on the CPU.")
        else:
            if sess.get_providers()[0] != provider:  # onnxruntime fell back by itself
                warnings.append(f"Warning: network {name} asked for {provider} but onnxruntime started it on "
                                f"{sess.get_providers()[0]}.")
            return sess
    return ort.InferenceSession(path, sess_options=opts, providers=[CPU_PROVIDER])


def member_channels(spec: dict) -> tuple[int, ...]:
    """The channels of the 12-channel layout a member reads (its trained channel groups)."""
    chans: set = set()
    inputs = spec["inputs"]
    if spec["kind"] == "onnx":
        for t in inputs:
            if "channels" in t:
                chans |= {CHANNEL_NAMES.index(c) for c in t["channels"]}
            else:  # optical indices
                chans |= set(OPTICAL)
    else:
        for f in inputs["features"]:
            chans |= set(feature_channels(f))
    return tuple(sorted(chans))


def package_mode(pkg: ModelPackage, mode: str) -> str:
    """The package's own name for a combination or mode: a package of earlier versions
    names "s2+desc+asc", "s2", "desc+asc" "combined", "optical", "sar"."""
    if mode in pkg.manifest["modes"]:
        return mode
    if LEGACY_MODE_NAMES.get(mode) in pkg.manifest["modes"]:  # "combined" asked of a package by combination
        return LEGACY_MODE_NAMES[mode]
    for legacy, name in LEGACY_MODE_NAMES.items():
        if name == mode and legacy in pkg.manifest["modes"]:
            return legacy
    return mode


def package_combinations(pkg: ModelPackage) -> dict:
    """{combination name: the package's mode name} for every combination it has members for."""
    out = {}
    for mode in pkg.available_modes():
        name = LEGACY_MODE_NAMES.get(mode, mode)
        if name in COMBINATION_BY_NAME:
            out[name] = mode
    return out


class Ensemble:
    """The members of ``pkg`` that run in ``mode`` (a combination name such as "s2+desc",
    or a package mode name), ready to predict.  Members that read a channel the
    combination lacks are skipped (``skipped``): no member ever sees a channel group it
    was not trained on."""

    def __init__(self, pkg: ModelPackage, mode: str, threads: int | None = None, tta: bool = False,
                 only: list[str] | None = None, cascade: Cascade | None = None, provider: str = "auto"):
        own = package_mode(pkg, mode)
        if own not in pkg.manifest["modes"]:
            raise PackageError(f"the model package '{pkg.name}' has no '{mode}' mode")
        specs = pkg.members_for(own)
        if only:
            specs = [m for m in specs if m["name"] in only]
        combo = COMBINATION_BY_NAME.get(LEGACY_MODE_NAMES.get(mode, mode))
        self.skipped: list[str] = []
        if combo is not None:
            have = set(combo.channels)
            self.skipped = [m["name"] for m in specs if not set(member_channels(m)) <= have]
            specs = [m for m in specs if m["name"] not in self.skipped]
        self.combination = combo.name if combo is not None else None
        if not specs:
            raise PackageError(f"the model package '{pkg.name}' has no members for mode '{mode}'")
        # every missing package named at once, with one command (not one per failed run)
        absent = deps.missing({deps.KIND_MODULES.get(s["kind"], s["kind"]) for s in specs})
        if absent:
            raise MissingDependency(deps.message(absent))
        threads = threads or max(1, os.cpu_count() or 1)
        self.pkg, self.mode, self.specs = pkg, mode, specs
        self.package_mode = own
        self.threshold = pkg.threshold(own)
        self.threads = threads
        self.lanes = _lanes_for(threads)
        per_member = max(1, threads // self.lanes)

        def load(spec):
            if spec["kind"] == "onnx":
                return _OnnxMember(pkg, spec, per_member, tta, provider)
            return _GBMMember(pkg, spec, per_member)

        # members load side by side (onnxruntime's graph optimisation and the GBM parsers
        # release the GIL): about half the start-up time on 2 cores
        if threads > 1 and len(specs) > 1:
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(max_workers=min(threads, len(specs))) as pool:
                loaded = list(pool.map(load, specs))
        else:
            loaded = [load(spec) for spec in specs]
        self.members = {spec["name"]: m for spec, m in zip(specs, loaded)}
        self._pool = None  # the lanes' worker threads, started on first use
        self.weights = np.array([float(s["weight"]) for s in specs])
        if self.weights.sum() <= 0:
            raise PackageError(f"mode '{mode}': member weights sum to zero")
        nets = [isinstance(m, _OnnxMember) for m in loaded]
        self._gbm_w = {s["name"]: float(s["weight"]) for s, net in zip(specs, nets) if not net}
        self.net_weight = float(sum(float(s["weight"]) for s, net in zip(specs, nets) if net))
        self.total_weight = float(self.weights.sum())
        # a cascade needs both kinds: GBMs to bound the probability, networks to skip
        if cascade is not None and cascade.threshold is None:
            cascade = replace(cascade, threshold=self.threshold)
        usable = bool(self._gbm_w) and self.net_weight > 0 and sum(self._gbm_w.values()) > 0
        self.cascade: Cascade | None = cascade if usable else None
        self.providers = {n: m.provider for n, m in self.members.items() if isinstance(m, _OnnxMember)}
        self.warnings = list(dict.fromkeys(w for m in self.members.values() for w in getattr(m, "warnings", [])))
        self.on_accelerator = any(p != CPU_PROVIDER for p in self.providers.values())
        self.sub_batch = _GPU_SUB_BATCH if self.on_accelerator else _SUB_BATCH

    def provider_line(self) -> str:
        """Which execution provider each network actually runs on (session.get_providers())."""
        by: dict = {}
        for name, prov in self.providers.items():
            by.setdefault(prov, []).append(name)
        return "; ".join(f"{prov}: {', '.join(names)}" for prov, names in by.items())

    @property
    def member_names(self) -> list[str]:
        return [s["name"] for s in self.specs]

    @property
    def needs_pixels(self) -> bool:
        return any(s["kind"] == "onnx" for s in self.specs)

    def fill_invalid(self, patches: np.ndarray, valid: np.ndarray) -> np.ndarray:
        """Networks need every pixel: put the channel's competition median where invalid."""
        if valid.all():
            return patches
        q50 = np.array(self.pkg.manifest["normalisation"]["robust"]["q50"], dtype=np.float32)
        inv = ~valid[:, None, :, :]
        out = patches.copy()
        np.copyto(out, np.broadcast_to(q50[None, :, None, None], out.shape), where=inv | ~np.isfinite(out))
        return out

    def _predict_slice(self, patches: np.ndarray, valid: np.ndarray, feats: dict, timings: dict | None) -> dict:
        """Every member's probabilities on a slice, their weighted mean ('prob') and how each
        patch was scored ('scored_by').  With a cascade the GBMs run first and the networks
        only on the patches whose flag the GBMs leave open (NaN for the others)."""
        import time

        n = len(patches)
        out: dict = {}

        def timed(name, fn):
            t0 = time.perf_counter()
            out[name] = fn()
            if timings is not None:
                timings[name] = timings.get(name, 0.0) + time.perf_counter() - t0

        for name, member in self.members.items():
            if not isinstance(member, _OnnxMember):
                timed(name, lambda m=member: m.predict(patches, valid, feats))
        full = np.ones(n, dtype=bool)
        gbm_sum = None
        if self.cascade is not None:
            gbm_sum = sum(w * out[name] for name, w in self._gbm_w.items())
            lo, hi = cascade_interval(gbm_sum, self.net_weight, self.total_weight)
            full = ~cascade_certain(lo, hi, self.cascade)
        sel = np.flatnonzero(full)
        every = len(sel) == n
        if self.needs_pixels and len(sel):
            # a single patch is scored as a pair (itself twice): onnxruntime's kernels for one
            # row differ from those for several in the last bits, and a tile's score must not
            # depend on how many neighbours the cascade sent along (band layouts, extents)
            idx = np.repeat(sel, 2) if len(sel) == 1 else (slice(None) if every else sel)
            px = self.fill_invalid(np.asarray(patches[idx]), valid[idx])  # patches may be core.rows.Rows
            v_net, f_net = valid[idx], {f: v[idx] for f, v in feats.items()}
            cache: dict = {}
            for name, member in self.members.items():
                if not isinstance(member, _OnnxMember):
                    continue

                def part(m=member):
                    got = m.predict(px, v_net, f_net, cache)[: len(sel)]
                    if every:
                        return got
                    res = np.full(n, np.nan)
                    res[sel] = got
                    return res
                timed(name, part)
        for name in self.member_names:  # no patch left for the networks in this slice
            if name not in out:
                out[name] = np.full(n, np.nan)
        stack = np.stack([out[m] for m in self.member_names], axis=0)
        if every:
            prob = (self.weights[:, None] * stack).sum(axis=0) / self.weights.sum()
        else:  # the full mean where the networks ran, the GBM pair's weighted mean elsewhere
            assert gbm_sum is not None
            prob = gbm_sum / sum(self._gbm_w.values())
            if len(sel):
                prob[sel] = (self.weights[:, None] * stack[:, sel]).sum(axis=0) / self.weights.sum()
        out["prob"] = prob
        out["scored_by"] = np.where(full, SCORED_FULL, SCORED_GBM)
        return out

    def predict(self, patches: np.ndarray, valid: np.ndarray, feats: dict, timings: dict | None = None) -> dict:
        """Per-member probabilities and their weighted mean ('prob'), each (N,) float64, and
        'scored_by' (N,) ("full" | "gbm").  Without a cascade every member scores every
        patch; with one, a network's probability is NaN on the "gbm" patches and 'prob'
        there is the GBM pair's weighted mean (see docs/concepts/cascade.md)."""
        return self.submit(patches, valid, feats, timings)()

    def submit(self, patches: np.ndarray, valid: np.ndarray, feats: dict, timings: dict | None = None):
        """Start scoring a batch on the lanes and return a function that waits for it and
        returns what ``predict`` returns.  Submitting the next batch before collecting
        this one keeps every lane busy across batches: no lane idles at the end of a
        batch while the last slice finishes."""
        n = len(patches)
        # sub-batches of ~_SUB_BATCH patches: the nets' activations then stay in cache
        # (per-patch cost is lowest around 32-64 patches), and lanes balance dynamically
        lanes = max(1, min(self.lanes, n // _MIN_LANE_PATCHES))
        n_sub = lanes * max(1, round(n / (lanes * self.sub_batch)))  # a multiple of the lanes
        cuts = np.linspace(0, n, n_sub + 1).astype(int)
        slices = [slice(a, b) for a, b in zip(cuts[:-1], cuts[1:]) if b > a]
        sub_t: list[dict] = [{} for _ in slices]

        def run(k):
            sl = slices[k]  # the networks' invalid pixels are filled in the slice, for the patches they score
            return self._predict_slice(patches[sl], valid[sl], {f: v[sl] for f, v in feats.items()}, sub_t[k])

        if self.lanes == 1:
            parts = [run(k) for k in range(len(slices))]
            futures = None
        else:
            pool = self._lane_pool()
            futures = [pool.submit(run, k) for k in range(len(slices))]

        def collect() -> dict:
            got = parts if futures is None else [f.result() for f in futures]
            out = {name: np.concatenate([p[name] for p in got]) for name in self.member_names + ["prob", "scored_by"]}
            if timings is not None:  # lanes run side by side: a member's share of the wall time
                for name in self.member_names:
                    timings[name] = timings.get(name, 0.0) + sum(t.get(name, 0.0) for t in sub_t) / max(1, lanes)
            return out

        return collect

    def score_stream(self, batches, timings: dict | None = None, depth: int = 2):
        """Score an iterable of ``(key, patches, valid, feats)`` batches with ``depth`` of them
        in flight, yielding ``(key, probs)`` in input order (``probs`` as from ``predict``;
        ``{}`` for a batch whose ``patches`` is None).  With two in flight the lanes start on
        the next batch while the last slices of this one finish, so no core idles at batch
        boundaries.  Closing the generator early (cancel, error) waits for the queued slices."""
        in_flight: deque = deque()
        try:
            for key, patches, valid, feats in batches:
                collect = self.submit(patches, valid, feats, timings) if patches is not None else None
                in_flight.append((key, collect))
                while len(in_flight) >= max(1, depth):
                    key0, c = in_flight.popleft()
                    yield key0, (c() if c is not None else {})
            while in_flight:
                key0, c = in_flight.popleft()
                yield key0, (c() if c is not None else {})
        finally:
            for _key, c in in_flight:
                if c is not None:
                    try:
                        c()
                    except Exception:  # noqa: BLE001 - the first error is already propagating
                        pass

    def _lane_pool(self):
        if self._pool is None:
            from concurrent.futures import ThreadPoolExecutor

            self._pool = ThreadPoolExecutor(max_workers=self.lanes, thread_name_prefix="landslide-lane")
        return self._pool

    def close(self) -> None:
        """Stop the lane threads (they also end when the ensemble is garbage-collected)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None


def ensemble_for(pkg: ModelPackage, mode: str, opts) -> Ensemble:
    """The ensemble a detection's options ask for (``engine.detect.DetectOptions``, read by
    attribute): threads, TTA, member selection, the cascade (off with ``full_ensemble``;
    its threshold is the run's, ``opts.threshold`` or the package's) and the execution
    provider.  The pipeline and the cluster workers both build theirs here."""
    cascade = None
    if not getattr(opts, "full_ensemble", False):
        margin = getattr(opts, "cascade_margin", None)
        cascade = Cascade(getattr(opts, "threshold", None), DEFAULT_CASCADE_MARGIN if margin is None else float(margin))
    return Ensemble(pkg, mode, threads=getattr(opts, "threads", None), tta=getattr(opts, "tta", False),
                    only=getattr(opts, "members", None), cascade=cascade,
                    provider=getattr(opts, "execution_provider", None) or "auto")
