"""The benchmark's results writer: bench/results.md from the JSON figures of bench/run.py
(tables per size, the targets met or not, the machine)."""
from __future__ import annotations

import os
import platform
import time
from pathlib import Path
from typing import Callable, Sequence

TARGETS = {
    "full_tile_minutes": 10.0,
    "peak_rss_gb": 2.0,
    "linearity": 0.15,
    "e2e_vs_pure": 0.80,
    "nn_matmul_fraction": 0.50,
    "paper_ratio": 100.0,
    "cloudy_slowdown": 0.10,  # half the S2 area masked vs all clear, same invocation
}

PER_SIZE_COLUMNS = ("size", "px", "patches", "end to end s", "patches/s", "read+align s (overlapped)",
                    "main thread waiting for reads s", "features s (overlapped)", "neural members s", "GBMs s",
                    "write grid s", "peak RSS GB", "CPU cores used", "CPU ms per patch",
                    "reader CPU ms per patch (read + features)")


def _machine_info() -> dict:
    import numpy as np

    info = {"python": platform.python_version(), "numpy": np.__version__, "platform": platform.platform()}
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    info["cores"] = os.cpu_count()
    try:
        info["memory_gib"] = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError):
        pass
    for mod in ("onnxruntime", "lightgbm", "xgboost", "torch", "timm"):
        try:
            info[mod] = __import__(mod).__version__
        except Exception:  # noqa: BLE001
            pass
    try:
        from osgeo import gdal

        info["gdal"] = gdal.__version__
    except ImportError:
        pass
    return info


def linearity_row(f: dict, aff: dict | None) -> str:
    """The linear-in-area target's row: a larger scene's end-to-end seconds per patch at
    most TARGETS['linearity'] above the smallest's.  It is one-sided: a larger scene that
    is cheaper per patch grows no faster than its area (the run's fixed cost, the affine
    fit's intercept, is spread over more patches)."""
    v = f["value"]
    why = ""
    if v < -TARGETS["linearity"]:
        fixed = f" ({aff['fixed_seconds']:.1f} s in the affine fit)" if aff else ""
        why = f" (cheaper per patch: the run's fixed cost{fixed} weighs on the small scene)"
    return (f"| linear in area (per patch at most {TARGETS['linearity']:.0%} above the smallest size) | "
            f"{f['size']} vs {f['relative_to']}: {v:+.1%} in end-to-end seconds per patch{why} | "
            f"{'**met**' if v <= TARGETS['linearity'] else '**not met**'} |")


def write_results(path: Path, command: str, figs: list, runs_by_size: dict, inf: list, pkg_source: str,
                  loads: list, quiet: bool, sections: Sequence[Callable[[list], list]] = ()) -> None:
    """bench/results.md from the run's JSON figures (``quiet``: run.run_was_quiet(loads)).
    ``sections``: renderers of the other modules' sections from the same figures
    (bench/run.py passes scaleout's and cascade's ``results_lines``): this module imports
    none of them, so the benchmark's imports point one way, run -> results -> common."""
    by = {}
    for f in figs:
        by.setdefault(f["figure"], []).append(f)

    def fig(name, **match):
        for f in by.get(name, []):
            if all(f.get(k) == v for k, v in match.items()):
                return f
        return None

    def fmt(f, key="median", nd=2, scale=1.0):
        if not f:
            return "-"
        if "median" in f and key == "median":
            return f"{f['median'] * scale:.{nd}f} ({f['min'] * scale:.{nd}f}-{f['max'] * scale:.{nd}f})"
        return f"{f[key] * scale:.{nd}f}"

    def med(f):
        return f"{f['median']:.2f}" if f else "-"

    pkgf = fig("package")
    mmf = fig("matmul_gflops_fp32")
    labels = list(runs_by_size)
    L = ["# Benchmark results", "",
         f"Command: `{command}` (or `./build.sh bench {command.split('bench.run', 1)[1].strip()}`)", "",
         f"Taken {time.strftime('%Y-%m-%d %H:%M %Z')} on a {'QUIET' if quiet else 'LOADED (figures contaminated)'} machine "
         "(quiet = load under 0.7 before the first run and no other busy process or training run in any sample; "
         "later load averages include this benchmark's own runs); "
         "load samples: " + "; ".join(f"{x['when']}: load {x['loadavg_1m']}, training run {'yes' if x['training_run'] else 'no'}"
                                      + (f", busy {' '.join(x['busy_others'])}" if x['busy_others'] else "") for x in loads), "",
         f"Model package: {pkgf['name']} ({pkg_source}); combined mode, {pkgf['members_combined']} members "
         f"({pkgf['neural_members']} neural); {pkgf['flops_per_patch'] / 1e6:.1f} MFLOP/patch for the neural members "
         f"({pkgf['flops_source']}).", "",
         "Scenes: SYNTHETIC, already aligned S2 (R,G,B,NIR uint16) + S1 desc/asc post/pre (VV,VH dB) on one 10 m grid, "
         "cached in bench/cache/; each run is a fresh subprocess calling `run_detection` with the QGIS algorithm's "
         "defaults, then `outputs.write_grid` to a GeoPackage. Medians of the repeated runs, (min-max) in brackets.", "",
         "## Per size", "",
         "| " + " | ".join(PER_SIZE_COLUMNS) + " |",
         "|" + "---|" * len(PER_SIZE_COLUMNS)]
    for label in labels:
        side, runs = runs_by_size[label]

        def st(stage, nd=1, label=label):
            return fmt(fig("stage_seconds", stage=stage, size=label), nd=nd)

        L.append(f"| {label} | {side} x {side} | {runs[0]['scored']} | {fmt(fig('end_to_end_seconds', size=label), nd=1)} | "
                 f"{fmt(fig('end_to_end_patches_per_s', size=label), nd=1)} | {st('read_align')} | {st('read_wait')} | "
                 f"{st('features')} | {st('neural_members')} | {st('gbms')} | {st('write_grid')} | "
                 f"{fmt(fig('peak_rss', size=label))} | {fmt(fig('cpu_utilisation', size=label))} | "
                 f"{fmt(fig('cpu_ms_per_patch', size=label))} | {fmt(fig('reader_cpu_ms_per_patch', size=label))} "
                 f"({med(fig('read_cpu_ms_per_patch', size=label))} + {med(fig('features_cpu_ms_per_patch', size=label))}) |")
    L += ["", "Each run, with the machine's state just before it (other busy processes contaminate a run):", ""]
    for label in labels:
        side, runs = runs_by_size[label]
        L.append(f"- {label}: " + "; ".join(
            f"{r['wall_seconds']:.1f} s ({r['scored'] / r['wall_seconds']:.0f} patches/s, "
            f"{r['cpu_seconds'] / r['wall_seconds']:.2f} cores"
            + (f", load {r['load_before']['loadavg_1m']}" if r.get("load_before") else "")
            + (f", busy {' '.join(r['load_before']['busy_others'])}" if r.get("load_before", {}).get("busy_others") else "")
            + ")" for r in runs))
    L += ["", "Seconds per member (largest size):", ""]
    big = labels[-1]
    L.append("| member | s | share of MFLOP/patch |")
    L.append("|---|---|---|")
    per = pkgf.get("flops_per_member") or {}
    for f in by.get("stage_seconds", []):
        if f["size"] == big and f["stage"].startswith("member:"):
            name = f["stage"].split(":", 1)[1]
            share = f"{per[name] / 1e6:.1f}" if name in per else "GBM"
            L.append(f"| {name} | {fmt(f, nd=1)} | {share} |")
    pure = fig("pure_inference_patches_per_s")
    full = fig("end_to_end_seconds", size="1")
    rss = max((f["max"] for f in by.get("peak_rss", [])), default=None)  # the warped case included
    lin = [f for f in by.get("linearity", [])]
    e2e_vs = by.get("end_to_end_vs_pure_inference", [])
    nnfrac = fig("nn_fraction_of_matmul", size=big)
    nnfrac_pure = fig("nn_fraction_of_matmul_pure")
    ratio = fig("paper_recipe_ratio")
    paperf = fig("paper_recipe_seconds_per_patch")
    q = fig("qgis_process")

    def ok(b):
        return "**met**" if b else "**not met**"

    L += ["", "## Targets", "", "| target | figure | |", "|---|---|---|"]
    if full:
        L.append(f"| full tile < {TARGETS['full_tile_minutes']:.0f} min | {full['median'] / 60:.2f} min "
                 f"({full['min'] / 60:.2f}-{full['max'] / 60:.2f}) | {ok(full['median'] < TARGETS['full_tile_minutes'] * 60)} |")
    else:
        L.append("| full tile < 10 min | not run (size 1 not in --sizes) | - |")
    cl = fig("cloudy_half_masked_seconds")
    if cl:
        L.append(f"| half the S2 area masked <= {TARGETS['cloudy_slowdown']:.0%} slower than all clear | {cl['size']}: "
                 f"{cl['median']:.1f} s vs {cl['clear_median']:.1f} s ({cl['slowdown']:+.1%}; tiles per mode "
                 f"{', '.join(f'{k} {v}' for k, v in cl['tiles_per_mode'].items())}) | "
                 f"{ok(cl['slowdown'] <= TARGETS['cloudy_slowdown'])} |")
    if rss is not None:
        L.append(f"| peak RSS < {TARGETS['peak_rss_gb']:.0f} GB | {rss:.2f} GB (worst run, any size, S1 warped or not) | "
                 f"{ok(rss < TARGETS['peak_rss_gb'])} |")
    aff = fig("linearity_affine_fit")
    for f in lin:
        L.append(linearity_row(f, aff))
    if aff:
        L.append(f"| (affine fit over all sizes) | T = {aff['fixed_seconds']:.1f} s + {aff['seconds_per_patch'] * 1000:.2f} ms "
                 f"x patches; worst residual {aff['max_relative_residual']:.1%} | - |")
    for f in e2e_vs:
        if f.get("networks_share", 1.0) < 1.0:  # a cascade run: pure inference is the full ensemble's rate
            L.append(f"| end to end >= {TARGETS['e2e_vs_pure']:.0%} of pure inference | {f['size']}: not comparable: the "
                     f"run is the cascade (networks on {f['networks_share']:.1%} of tiles), pure inference the full "
                     f"ensemble ({f['value']:.0%} of its rate); FULL_ENSEMBLE end to end is in the cascade section | - |")
            continue
        b = fig("end_to_end_vs_pure_bound", size=f["size"])
        bound = (f"; bound with every core scoring: {b['value']:.0%} (reader {b['reader_cpu_ms_per_patch']:.2f} vs "
                 f"inference {b['inference_cpu_ms_per_patch']:.2f} CPU ms per patch)") if b else ""
        L.append(f"| end to end >= {TARGETS['e2e_vs_pure']:.0%} of pure inference | {f['size']}: {f['value']:.0%} "
                 f"(pure: {pure['median']:.1f} patches/s{bound}) | {ok(f['value'] >= TARGETS['e2e_vs_pure'])} |")
    if nnfrac:
        L.append(f"| neural members >= {TARGETS['nn_matmul_fraction']:.0%} of matmul GFLOP/s ({mmf['value']:.0f}) | "
                 f"end to end {big}: {fmt(fig('nn_achieved_gflops', size=big), nd=1)} GFLOP/s = {nnfrac['median']:.0%}; "
                 f"pure inference: {nnfrac_pure['median'] if nnfrac_pure else float('nan'):.0%} | "
                 f"{ok(nnfrac['median'] >= TARGETS['nn_matmul_fraction'])} |")
    if ratio:
        L.append(f"| >= {TARGETS['paper_ratio']:.0f}x less time per patch than the paper's recipe | "
                 f"{ratio['value']:.0f}x ({paperf['value']:.1f} s vs {ratio['ours_seconds_per_patch'] * 1000:.1f} ms per patch; "
                 f"FLOPs {ratio['flops_ratio']:.0f}x) | {ok(ratio['value'] >= TARGETS['paper_ratio'])} |")
    mmf = mmf or {"value": float("nan"), "detail": {"numpy": float("nan")}}
    L += ["", "## Other figures", "",
          f"- Machine fp32 matmul (4096^2, 2 threads, best of 5): {mmf['value']:.1f} GFLOP/s "
          f"(torch {mmf['detail'].get('torch', 0):.1f}, numpy/OpenBLAS {mmf['detail']['numpy']:.1f}).",
          (f"- Pure inference on {pure['patches']} prepared patches (batches of {pure['batch_patches']}; ensemble only, "
          f"features precomputed): {fmt(pure, nd=1)} patches/s, {fmt(fig('pure_inference_cpu_ms_per_patch'))} CPU ms "
          f"per patch; neural members {fmt(fig('nn_achieved_gflops_pure'), nd=1)} GFLOP/s.")
          if pure else "- Pure inference: not run."]
    warped = next((f for f in by.get("peak_rss", []) if f["size"].endswith("(S1 warped)")), None)
    if warped:
        ws = fig("end_to_end_seconds_warped")
        L.append(f"- S1 warped ({warped['size']}: descending in EPSG:4326, ascending in UTM 45N, both ~20 m; "
                 f"S2 on its own grid): peak RSS {fmt(warped)} GB, end to end {fmt(ws, nd=1)} s.")
    if paperf:
        pm = ", ".join(f"{k} {v:.1f} s" for k, v in paperf["per_member"].items())
        L.append(f"- Paper recipe (7 timm nets at 256 x 256, 5 folds x 4 flips = 140 passes, random weights, torch, 2 threads) "
                 f"on {paperf['patches']} of the same patches ({paperf['folds_run']} fold pass(es) run, scaled to 5): "
                 f"{paperf['value']:.1f} s/patch, {paperf['flops_per_patch'] / 1e12:.2f} TFLOP/patch. Per net: {pm}.")
    if q:
        L.append(f"- Through qgis_process.bin ({q['size']}): rc {q['rc']}, {q['tiles']} tiles in {q['wall_seconds']:.1f} s "
                 f"including QGIS start-up ({q['patches_per_s'] or 0:.1f} patches/s), peak RSS {q['peak_rss_gb']:.2f} GB; "
                 f"algorithm log: {q['summary']}")
    for render in sections:
        L += render(figs)
    L += kept_sections(path, L)
    L += ["", "## How to read this", "",
          "- End to end = a fresh process's `run_detection` (opening and planning, unit detection, reading, "
          "features, all members) plus `write_grid`, from loading the package to the written GeoPackage; "
          "Python start-up and imports are excluded. Patches/s counts scored patches.",
          "- Reading (GDAL decode, alignment, tiling) and the features run in a reader thread up to two "
          "batches ahead of the members: their seconds overlap the members' and do not add up to the "
          "total; 'main thread waiting for reads' is the part that was not hidden. The reader CPU column "
          "is that thread's own CPU time (thread_time), which contention does not inflate; the "
          "decompression GDAL does on its own threads (GDAL_NUM_THREADS, engine.align.decode_threads) "
          "is not in it.",
          "- The members score a batch in sub-batches of ~40 patches on persistent lane threads, one per "
          "core (single-threaded sessions), with the next batch queued behind it; a member's seconds are "
          "its share of that wall time. Pure inference scores prepared batches the same way.",
          "- 'Bound with every core scoring' = inference CPU ms / (inference + reader CPU ms) per patch: "
          "when the members already keep every core busy, overlapping cannot hide the reader's CPU time, "
          "so end to end / pure inference cannot exceed it.",
          "- Neural GFLOP/s = the members' FLOPs per patch x patches / the neural members' seconds; the "
          "fraction divides that by the measured matmul rate (the faster of torch and numpy). FLOPs are "
          "torch's FlopCounterMode with attention run on the math backend (the fused CPU kernel counts 0).",
          "- The 1/4 and 1 tile scenes are 2 x 2 and 4 x 4 mosaics of the generated 1/16 scene "
          "(`make_scene`'s time grows with the cube of the side); the pipeline's cost does not depend on "
          "the content.",
          "- The paper recipe runs the paper's timm encoders (random weights) in torch; it is a cost "
          "comparison, not an accuracy one."]
    L += ["", "## Machine", ""]
    for k, v in _machine_info().items():
        L.append(f"- {k}: {v}")
    L += ["", "Raw figures (one JSON line each) are what the command prints on stdout.", ""]
    path.write_text("\n".join(L) + "\n")


def kept_sections(path: Path, new: list) -> list:
    """The sections of the existing results.md that this run does not write (those a module
    run alone put there, e.g. ``bench/ort_options.py``'s, or the cascade's under
    ``--skip-cascade``), each with its own date stamp, so a full run does not erase them."""
    if not path.exists():
        return []
    old = path.read_text().splitlines()
    fresh = {ln for ln in new if ln.startswith("## ")} | {"## How to read this", "## Machine"}
    out, keep = [], False
    for ln in old:
        if ln.startswith("## "):
            keep = ln not in fresh
            if keep:
                out.append("")
        if keep:
            out.append(ln)
    while out and not out[-1].strip():
        out.pop()
    return out


def write_section(path: Path, heading: str, lines: list) -> None:
    """Replace the section under ``heading`` (a ``## `` line, up to the next ``## ``) in
    results.md with ``lines``, or insert it before "## How to read this": a module run
    alone (bench/cascade.py) updates its own figures and leaves the others as they are."""
    old = path.read_text().splitlines() if path.exists() else ["# Benchmark results"]
    stamp = f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {platform.node() or 'this machine'}."
    block = [heading, "", stamp] + list(lines) + [""]
    if heading in old:
        i = old.index(heading)
        j = next((k for k in range(i + 1, len(old)) if old[k].startswith("## ")), len(old))
        new = old[:i] + block + old[j:]
    else:
        k = old.index("## How to read this") if "## How to read this" in old else len(old)
        new = old[:k] + block + old[k:]
    path.write_text("\n".join(new).rstrip("\n") + "\n")
