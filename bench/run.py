"""Benchmark harness: whole Sentinel-2 tiles through ``landslide:detect`` on this machine.

    python -m sentinel_landslide.bench.run [--sizes 1/16,1/4,1] [--repeats N] [--quick]
    ./build.sh bench [same options]

For each size (a fraction of the area of one 10,980 x 10,980 px tile) a SYNTHETIC,
already-aligned S2 + S1 (desc/asc, post/pre) scene is generated once and cached under
bench/cache/.  Each run is a fresh subprocess (so peak RSS of one size does not leak
into the next) that calls the engine exactly as the QGIS algorithm does
(``run_detection`` with default options, then ``outputs.write_grid``).  Also: the pure
inference throughput of the ensemble on already-prepared patches, the paper's recipe on
some of the same patches (same process), one run through ``qgis_process.bin``, and the
machine's fp32 matmul GFLOP/s.  One JSON line per figure goes to stdout; the table goes
to bench/results.md.
"""
from __future__ import annotations

import argparse
import json
import resource
import shlex
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from ..core.channels import S1_ROLES
from .common import (
    BENCH,
    CACHE,
    emit,
    ensure_half_mask,
    ensure_scene,
    ensure_warped_scene,
    log,
    machine_load,
    median_min_max,
    parse_size,
    peak_rss_bytes,
    resolve_package,
    run_child,
    run_was_quiet,
    scene_options,
    side_for,
    wait_quiet,
)
from .results import write_results


def ensemble_flops(pkg, mode: str = "combined") -> tuple[int, str, dict]:
    """FLOPs per patch of the mode's neural members: the manifest's ``flops_per_patch``
    (counted at export) where present, else counted now with FlopCounterMode on
    training/nets.py's architecture of the same name."""
    per, sources = {}, set()
    for m in pkg.members_for(mode):
        if m["kind"] != "onnx":
            continue
        if m.get("flops_per_patch"):
            per[m["name"]] = int(m["flops_per_patch"])
            sources.add("manifest flops_per_patch (FlopCounterMode at export)")
            continue
        try:
            from ..training import nets

            per[m["name"]] = nets.count_flops(nets.build_member(m["name"]))
            sources.add("FlopCounterMode on training/nets.py now")
        except Exception:  # noqa: BLE001
            per[m["name"]] = 0
            sources.add("unknown for some members")
    return sum(per.values()), "; ".join(sorted(sources)), per


def matmul_gflops(threads: int = 2, n: int = 4096, repeats: int = 5) -> dict:
    """Measured fp32 matmul rate: torch (oneDNN/MKL) and numpy (system BLAS), best of each."""
    import numpy as np

    out = {}
    try:
        import torch

        torch.set_num_threads(threads)
        a, b = torch.randn(n, n), torch.randn(n, n)
        a @ b
        ts = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            a @ b
            ts.append(time.perf_counter() - t0)
        out["torch"] = 2 * n**3 / min(ts) / 1e9
        out["torch_median"] = 2 * n**3 / statistics.median(ts) / 1e9
    except ImportError:
        pass
    a = np.random.default_rng(0).random((n, n), dtype=np.float32)
    b = a.copy()
    a @ b
    ts = []
    for _ in range(max(2, repeats // 2)):
        t0 = time.perf_counter()
        a @ b
        ts.append(time.perf_counter() - t0)
    out["numpy"] = 2 * n**3 / min(ts) / 1e9
    out["best"] = max(out.get("torch", 0), out["numpy"])
    return out


# --------------------------------------------------------------------------- child runs
def child_detect(a) -> dict:
    """One detection run exactly as the QGIS algorithm does it, then the grid writer."""
    from ..engine.outputs import write_grid
    from ..models.ensemble import require
    from ..models.package import load_package
    from ..pipeline import run_detection

    for module in ("onnxruntime", "lightgbm", "xgboost"):  # imports are not timed (see results.md)
        require(module)
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    pkg = load_package(a.package)
    opts = scene_options(json.loads(a.scene), full_ensemble=bool(a.full_ensemble), cascade_margin=a.cascade_margin,
                         execution_provider=a.execution_provider)
    if a.rows_per_batch:
        opts.rows_per_batch = a.rows_per_batch
    res = run_detection(opts, pkg)
    t1 = time.perf_counter()
    CACHE.mkdir(parents=True, exist_ok=True)  # git-ignored: absent in a fresh clone
    out = Path(tempfile.mkdtemp(dir=CACHE)) / "grid.gpkg"
    write_grid(str(out), res, pkg.name)
    t2 = time.perf_counter()
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    kinds = {m["name"]: m["kind"] for m in pkg.manifest["members"]}
    members = {k.split(":", 1)[1]: v for k, v in res.timings.items() if k.startswith("member:")}
    ok = sum(1 for r in res.records if r.status == "ok")
    size = out.stat().st_size
    out.unlink()
    out.parent.rmdir()
    if a.tiles_out:  # per tile, for the cascade's tile-by-tile comparison (bench/cascade.py)
        import numpy as np

        np.savez(a.tiles_out, tile_id=np.array([r.tile_id for r in res.records]),
                 prob=np.array([np.nan if r.prob is None else r.prob for r in res.records]),
                 flagged=np.array([-1 if r.flagged is None else int(r.flagged) for r in res.records]),
                 gbm=np.array([r.scored_by == "gbm" for r in res.records]))
    return {
        "tiles_full": int(res.timings.get("tiles_full", 0)), "tiles_gbm": int(res.timings.get("tiles_gbm", 0)),
        "providers": [ln for ln in res.log if "networks run on" in ln],
        "tiles": len(res.records), "scored": ok, "flagged": res.flagged, "mode": res.mode,
        "tiles_per_mode": res.mode_counts,
        "members": res.members, "grid": [res.grid.width, res.grid.height],
        "detect_seconds": res.timings["total"], "write_seconds": t2 - t1, "wall_seconds": t2 - t0,
        "read_seconds": res.timings.get("read", 0.0), "read_wait_seconds": res.timings.get("read_wait", 0.0),
        "features_seconds": res.timings.get("features", 0.0),
        "read_cpu_seconds": res.timings.get("read_cpu", 0.0), "features_cpu_seconds": res.timings.get("features_cpu", 0.0),
        "member_seconds": members,
        "nn_seconds": sum(v for k, v in members.items() if kinds.get(k) == "onnx"),
        "gbm_seconds": sum(v for k, v in members.items() if kinds.get(k) != "onnx"),
        "cpu_seconds": (r1.ru_utime + r1.ru_stime) - (r0.ru_utime + r0.ru_stime),
        "peak_rss_bytes": peak_rss_bytes(), "grid_bytes": size,
    }


def child_infer(a) -> dict:
    """Pure inference on already-prepared patches, then the paper's recipe on some of them."""

    from ..core.features import patch_features
    from ..engine.detect import TiledScene
    from ..models.ensemble import Ensemble
    from ..models.package import load_package

    pkg = load_package(a.package)
    opts = scene_options(json.loads(a.scene))
    logl: list = []
    tiles = TiledScene(opts, pkg, logl)
    batches = []
    n = 0
    for b in tiles:
        ok = b.valid_frac >= opts.min_valid_fraction
        batches.append((b.patches[ok].copy(), b.valid[ok].copy()))
        n += int(ok.sum())
        if n >= a.patches:
            break
    ens = Ensemble(pkg, tiles.mode, threads=opts.threads, tta=opts.tta)
    t0 = time.perf_counter()
    feats = [patch_features(p, v, tiles.groups) for p, v in batches]
    t_feat = time.perf_counter() - t0
    # warm-up on a small slice (session first-run allocations), not timed
    ens.predict(batches[0][0][:8], batches[0][1][:8], {k: f[:8] for k, f in feats[0].items()})
    timings: dict = {}
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    # scored exactly as run_detection scores them (two batches in flight)
    for _ in ens.score_stream(((None, p, v, f) for (p, v), f in zip(batches, feats)), timings):
        pass
    t_inf = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    kinds = {m["name"]: m["kind"] for m in pkg.manifest["members"]}
    out = {"patches": n, "batch_patches": len(batches[0][0]), "features_seconds": t_feat,
           "inference_seconds": t_inf, "member_seconds": timings,
           "cpu_seconds": (r1.ru_utime + r1.ru_stime) - (r0.ru_utime + r0.ru_stime),
           "nn_seconds": sum(t for k, t in timings.items() if kinds.get(k) == "onnx"),
           "gbm_seconds": sum(t for k, t in timings.items() if kinds.get(k) != "onnx")}
    if a.paper_patches > 0:
        from .paper import run_paper_recipe

        p, v = batches[0]
        px = ens.fill_invalid(p[: a.paper_patches], v[: a.paper_patches])
        out["paper"] = run_paper_recipe(px, pkg.s2_offset, folds=a.paper_folds, log=log)
    out["peak_rss_bytes"] = peak_rss_bytes()
    return out


def child_qgis(a) -> dict:
    """landslide:detect through qgis_process.bin; peak RSS of that process tree."""
    from ..scripts.qgis_env import run_algorithm

    paths = json.loads(a.scene)
    CACHE.mkdir(parents=True, exist_ok=True)  # git-ignored: absent in a fresh clone
    out = Path(tempfile.mkdtemp(dir=CACHE)) / "grid.gpkg"
    params = {"S2": paths["S2"], "OUTPUT": str(out), "MODEL": a.package}
    params.update({r: paths[r] for r in S1_ROLES})
    t0 = time.perf_counter()
    rc, res, text = run_algorithm("landslide:detect", params)
    wall = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    summary = [ln for ln in text.splitlines() if "patches/s" in ln]
    shutil.rmtree(out.parent, ignore_errors=True)  # the grid and what detect writes beside it (.detect.json)
    return {"rc": rc, "tiles": (res or {}).get("results", {}).get("TILES"), "wall_seconds": wall,
            "peak_rss_bytes": rss, "summary": summary[-1].strip().strip('",') if summary else None,
            "log_tail": None if rc == 0 else text[-3000:]}


# --------------------------------------------------------------------------- main
def summarise_size(label: str, runs: list, flops_per_patch: int, gflops: float) -> list:
    """JSON figures for one size from its repeated runs."""
    figs = []
    scored = runs[0]["scored"]

    def mm(key, f=lambda r, k: r[k]):
        return median_min_max([f(r, key) for r in runs])

    e2e = mm("wall_seconds")
    figs.append(emit("end_to_end_seconds", size=label, patches=scored, unit="s", **e2e))
    figs.append(emit("end_to_end_patches_per_s", size=label, unit="patches/s",
                     **median_min_max([scored / r["wall_seconds"] for r in runs])))
    for stage, key in (("read_align", "read_seconds"), ("read_wait", "read_wait_seconds"),
                       ("features", "features_seconds"), ("neural_members", "nn_seconds"),
                       ("gbms", "gbm_seconds"), ("write_grid", "write_seconds")):
        figs.append(emit("stage_seconds", stage=stage, size=label, unit="s", **mm(key)))
    for name in runs[0]["member_seconds"]:
        figs.append(emit("stage_seconds", stage=f"member:{name}", size=label, unit="s",
                         **median_min_max([r["member_seconds"][name] for r in runs])))
    figs.append(emit("peak_rss", size=label, unit="GB", **median_min_max([r["peak_rss_bytes"] / 1e9 for r in runs])))
    figs.append(emit("cpu_utilisation", size=label, unit="cores",
                     **median_min_max([r["cpu_seconds"] / r["wall_seconds"] for r in runs])))
    figs.append(emit("cpu_ms_per_patch", size=label, unit="ms",
                     **median_min_max([1000 * r["cpu_seconds"] / scored for r in runs])))
    # the reader thread's own CPU time (thread_time): what reading and features cost,
    # whatever the contention with the scoring lanes
    figs.append(emit("reader_cpu_ms_per_patch", size=label, unit="ms", **median_min_max(
        [1000 * (r.get("read_cpu_seconds", 0.0) + r.get("features_cpu_seconds", 0.0)) / scored for r in runs])))
    figs.append(emit("read_cpu_ms_per_patch", size=label, unit="ms",
                     **median_min_max([1000 * r.get("read_cpu_seconds", 0.0) / scored for r in runs])))
    figs.append(emit("features_cpu_ms_per_patch", size=label, unit="ms",
                     **median_min_max([1000 * r.get("features_cpu_seconds", 0.0) / scored for r in runs])))
    if flops_per_patch:
        # the patches the networks scored: with the cascade only the tiles it left to them
        ach = [flops_per_patch * (r.get("tiles_full") or scored) / r["nn_seconds"] / 1e9 for r in runs
               if r["nn_seconds"] > 0]
        if ach:
            figs.append(emit("nn_achieved_gflops", size=label, unit="GFLOP/s", **median_min_max(ach)))
            figs.append(emit("nn_fraction_of_matmul", size=label, unit="fraction",
                             **median_min_max([x / gflops for x in ach])))
    return figs


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="1/16,1/4,1", help="fractions of one tile's area")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="one small scene, 1 run, short paper recipe: a smoke run")
    ap.add_argument("--package", default=None, help="model package folder (default: bundled, else the stand-in)")
    ap.add_argument("--infer-patches", type=int, default=1500, help="prepared patches for pure inference")
    ap.add_argument("--paper-patches", type=int, default=2)
    ap.add_argument("--paper-folds", type=int, default=5, help="fold passes actually run (scaled to 5)")
    ap.add_argument("--no-qgis", action="store_true")
    ap.add_argument("--qgis-size", default="1/16")
    ap.add_argument("--warped-size", default="1",
                    help="size of the case whose S1 layers are warped (peak RSS); 'none' to skip")
    ap.add_argument("--wait-quiet", type=float, default=0.0, help="wait up to this many minutes for a quiet machine")
    ap.add_argument("--no-cloudy", action="store_true", help="skip the half-masked run of the largest size")
    ap.add_argument("--results", default=str(BENCH / "results.md"))
    ap.add_argument("--skip-scaleout", action="store_true", help="no Dask scale-out figures (bench/scaleout.py)")
    ap.add_argument("--skip-cascade", action="store_true",
                    help="no cascade vs full ensemble figures on the largest size (bench/cascade.py)")
    ap.add_argument("--only", choices=("cascade",), help="run one section alone (its own options: "
                    "python -m sentinel_landslide.bench.cascade --help); it rewrites only its section of results.md")
    # child mode (internal)
    ap.add_argument("--child", choices=("detect", "infer", "qgis"), help=argparse.SUPPRESS)
    ap.add_argument("--scene", help=argparse.SUPPRESS)
    ap.add_argument("--rows-per-batch", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--patches", type=int, default=1500, help=argparse.SUPPRESS)
    ap.add_argument("--full-ensemble", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--cascade-margin", type=float, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--execution-provider", default="auto", help=argparse.SUPPRESS)
    ap.add_argument("--tiles-out", default=None, help=argparse.SUPPRESS)
    given = list(argv if argv is not None else sys.argv[1:])
    if "--only" in given:  # the section's own options follow (they are not this parser's)
        i = given.index("--only")
        if given[i + 1:i + 2] == ["cascade"]:
            from .cascade import main as cascade_main

            return cascade_main(given[:i] + given[i + 2:])
    a = ap.parse_args(argv)

    if a.child:
        fn = {"detect": child_detect, "infer": child_infer, "qgis": child_qgis}[a.child]
        print(json.dumps(fn(a)))
        return 0

    args = argv if argv is not None else sys.argv[1:]
    command = "python -m sentinel_landslide.bench.run " + " ".join(shlex.quote(x) for x in args)
    CACHE.mkdir(parents=True, exist_ok=True)
    if a.quick:
        sizes = [("quick", 640)]
        a.repeats, a.paper_folds, a.paper_patches = 1, 1, 1
        a.infer_patches = min(a.infer_patches, 100)
    else:
        sizes = [(s.strip(), side_for(parse_size(s))) for s in a.sizes.split(",")]
    loads = [dict(machine_load(), when="start")]
    if a.wait_quiet:  # before choosing the package: a training run may be about to write it
        loads.append(dict(wait_quiet(a.wait_quiet), when="after waiting"))
    package, pkg_source = resolve_package(a.package)
    from ..models.package import load_package

    pkg = load_package(package)
    flops, flops_src, flops_per = ensemble_flops(pkg)
    n_nn = sum(1 for m in pkg.members_for("combined") if m["kind"] == "onnx")
    n_all = len(pkg.members_for("combined"))
    figs = [emit("package", source=pkg_source, path=str(package), name=pkg.name, members_combined=n_all,
                 neural_members=n_nn, flops_per_patch=flops, flops_source=flops_src, flops_per_member=flops_per)]
    mm = matmul_gflops()
    gflops = mm["best"]
    figs.append(emit("matmul_gflops_fp32", unit="GFLOP/s", threads=2, value=gflops, detail=mm))

    runs_by_size = {}
    for label, side in sizes:
        paths = ensure_scene(side)
        runs = []
        for i in range(a.repeats):
            load = machine_load()
            log(f"size {label} ({side} px) run {i + 1}/{a.repeats}; machine: {load}")
            r = run_child("detect", paths, package)
            r["load_before"] = load
            runs.append(r)
            log(f"  {r['scored']} patches in {r['wall_seconds']:.1f} s ({r['scored'] / r['wall_seconds']:.1f} patches/s), "
                f"peak RSS {r['peak_rss_bytes'] / 1e9:.2f} GB")
        loads.append(dict(machine_load(), when=f"after size {label}"))
        runs_by_size[label] = (side, runs)
        figs += summarise_size(label, runs, flops, gflops)

    # clouds: the largest scene again with half its S2 area masked, run after its clear runs
    # in this invocation; target: at most 10 % slower end to end
    if not a.no_cloudy:
        label, side = sizes[-1]
        paths = dict(ensure_scene(side), S2_MASK=ensure_half_mask(ensure_scene(side)))
        cloudy = []
        for i in range(a.repeats):
            log(f"size {label} half masked, run {i + 1}/{a.repeats}")
            r = run_child("detect", paths, package)
            cloudy.append(r)
            log(f"  {r['scored']} patches in {r['wall_seconds']:.1f} s; tiles per mode {r['tiles_per_mode']}")
        clear = statistics.median(r["wall_seconds"] for r in runs_by_size[label][1])
        half = median_min_max([r["wall_seconds"] for r in cloudy])
        figs.append(emit("cloudy_half_masked_seconds", size=label, unit="s", tiles_per_mode=cloudy[0]["tiles_per_mode"],
                         clear_median=clear, slowdown=half["median"] / clear - 1.0, **half))

    # the same detection with every S1 layer off the S2 grid: warping must keep the memory bound
    if a.warped_size != "none":
        wlabel = "quick" if a.quick else a.warped_size
        wpaths = ensure_warped_scene(640 if a.quick else side_for(parse_size(a.warped_size)))
        wruns = []
        for i in range(max(1, min(a.repeats, 2))):
            log(f"size {wlabel}, S1 warped, run {i + 1}")
            wruns.append(run_child("detect", wpaths, package))
            log(f"  {wruns[-1]['wall_seconds']:.1f} s, peak RSS {wruns[-1]['peak_rss_bytes'] / 1e9:.2f} GB")
        figs.append(emit("peak_rss", size=f"{wlabel} (S1 warped)", unit="GB",
                         **median_min_max([r["peak_rss_bytes"] / 1e9 for r in wruns])))
        figs.append(emit("end_to_end_seconds_warped", size=wlabel, unit="s",
                         **median_min_max([r["wall_seconds"] for r in wruns])))

    # linearity: seconds per patch relative to the smallest size
    labels = list(runs_by_size)
    base = runs_by_size[labels[0]][1]
    base_pp = statistics.median(r["wall_seconds"] / r["scored"] for r in base)
    for label in labels[1:]:
        runs = runs_by_size[label][1]
        pp = statistics.median(r["wall_seconds"] / r["scored"] for r in runs)
        figs.append(emit("linearity", size=label, relative_to=labels[0], unit="fraction",
                         value=pp / base_pp - 1.0, seconds_per_patch=pp, base_seconds_per_patch=base_pp))

    if len(labels) >= 2:  # affine fit T = a + b N: a = fixed cost (start-up, writing), b = per patch
        ns = [runs_by_size[lb][1][0]["scored"] for lb in labels]
        ts = [statistics.median(r["wall_seconds"] for r in runs_by_size[lb][1]) for lb in labels]
        mn, mt = sum(ns) / len(ns), sum(ts) / len(ts)
        slope = sum((x - mn) * (y - mt) for x, y in zip(ns, ts)) / sum((x - mn) ** 2 for x in ns)
        fixed = mt - slope * mn
        figs.append(emit("linearity_affine_fit", unit="s", fixed_seconds=fixed, seconds_per_patch=slope,
                         max_relative_residual=max(abs(y - (fixed + slope * x)) / y for x, y in zip(ns, ts))))

    # pure inference on prepared patches (+ the paper's recipe, same process, same patches)
    infer_label, infer_side = sizes[-1]  # the largest scene: the same batch layout as its runs
    paths = ensure_scene(infer_side)
    inf = [run_child("infer", paths, package, patches=a.infer_patches, paper_patches=0, paper_folds=a.paper_folds)
           for _ in range(max(1, min(a.repeats, 3)) - 1)]
    inf.append(run_child("infer", paths, package, patches=a.infer_patches, paper_patches=a.paper_patches,
                         paper_folds=a.paper_folds))
    pure = median_min_max([r["patches"] / r["inference_seconds"] for r in inf])
    figs.append(emit("pure_inference_patches_per_s", size=infer_label, patches=inf[0]["patches"],
                     batch_patches=inf[0]["batch_patches"], unit="patches/s", **pure))
    figs.append(emit("pure_inference_cpu_ms_per_patch", size=infer_label, unit="ms",
                     **median_min_max([1000 * r["cpu_seconds"] / r["patches"] for r in inf])))
    if flops:
        ach = [flops * r["patches"] / r["nn_seconds"] / 1e9 for r in inf]
        figs.append(emit("nn_achieved_gflops_pure", size=infer_label, unit="GFLOP/s", **median_min_max(ach)))
        figs.append(emit("nn_fraction_of_matmul_pure", size=infer_label, unit="fraction",
                         **median_min_max([x / gflops for x in ach])))
    for label in labels:
        runs = runs_by_size[label][1]
        e2e = statistics.median(r["scored"] / r["wall_seconds"] for r in runs)
        # pure inference runs every member on every patch; a cascade run does not (networks_share < 1)
        share = statistics.median((r.get("tiles_full") or r["scored"]) / max(1, r["scored"]) for r in runs)
        figs.append(emit("end_to_end_vs_pure_inference", size=label, unit="fraction", value=e2e / pure["median"],
                         networks_share=share))
        # when scoring already keeps every core busy, overlapping cannot hide the reader's
        # CPU time: the best end-to-end / pure ratio is inference CPU / (inference + reader CPU)
        inf_cpu = statistics.median(1000 * r["cpu_seconds"] / r["patches"] for r in inf)
        rd_cpu = statistics.median(1000 * (r.get("read_cpu_seconds", 0.0) + r.get("features_cpu_seconds", 0.0)) / r["scored"]
                                   for r in runs)
        figs.append(emit("end_to_end_vs_pure_bound", size=label, unit="fraction", value=inf_cpu / (inf_cpu + rd_cpu),
                         inference_cpu_ms_per_patch=inf_cpu, reader_cpu_ms_per_patch=rd_cpu))
    paper = inf[-1].get("paper")
    if paper:
        figs.append(emit("paper_recipe_seconds_per_patch", unit="s/patch", value=paper["seconds_per_patch"],
                         patches=paper["patches"], folds_run=paper["folds_run"],
                         flops_per_patch=paper["flops_per_patch"], per_member=paper["per_member_seconds_per_patch"]))
        big = labels[-1]
        ours = statistics.median(r["wall_seconds"] / r["scored"] for r in runs_by_size[big][1])
        figs.append(emit("paper_recipe_ratio", size=big, unit="x", value=paper["seconds_per_patch"] / ours,
                         ours_seconds_per_patch=ours, flops_ratio=paper["flops_per_patch"] / flops if flops else None))

    # once through qgis_process.bin
    if not a.no_qgis:
        qlabel = "quick" if a.quick else a.qgis_size
        qside = 640 if a.quick else side_for(parse_size(a.qgis_size))
        q = run_child("qgis", ensure_scene(qside), package)
        figs.append(emit("qgis_process", size=qlabel, unit="s", rc=q["rc"], tiles=q["tiles"],
                         wall_seconds=q["wall_seconds"], peak_rss_gb=q["peak_rss_bytes"] / 1e9,
                         patches_per_s=(q["tiles"] / q["wall_seconds"]) if q["tiles"] else None,
                         summary=q["summary"], log_tail=q["log_tail"]))
    # scale-out on the largest scene: its median single-process run vs a local Dask cluster
    if not a.skip_scaleout:
        from .scaleout import run_scaleout

        side, runs = runs_by_size[labels[-1]]
        single = sorted(runs, key=lambda r: r["wall_seconds"])[len(runs) // 2]
        figs += [dict(f, size=labels[-1]) for f in run_scaleout(ensure_scene(side), package, single=single,
                                                                 small_scenes=8 if a.quick else 32)]
    if not a.skip_cascade:  # the cascade against the full ensemble on the largest scene
        from .cascade import run_all

        label, side = sizes[-1]
        figs += run_all(ensure_scene(side), package, repeats=1, size=label)
    loads.append(dict(machine_load(), when="end"))
    figs.append(emit("machine_load", samples=loads, quiet=run_was_quiet(loads)))
    from .cascade import results_lines as cascade_lines
    from .scaleout import results_lines as scaleout_lines

    write_results(Path(a.results), command, figs, runs_by_size, inf, pkg_source, loads, run_was_quiet(loads),
                  sections=(scaleout_lines, cascade_lines))
    log(f"wrote {a.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
