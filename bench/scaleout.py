"""Scale-out figures (issue 13): one process vs a local Dask cluster of single-threaded
worker processes on the same scene, the per-task scheduling overhead from a run of many
small scenes, and a measured estimate of throughput for N workers.

Called from ``bench/run.py``'s main (skip with ``--skip-scaleout``); standalone:

    python -m sentinel_landslide.bench.scaleout --side 2745 [--workers 2]

The cluster runs go through ``cluster.batch.run_batch`` exactly as ``cli batch`` does
(plan on a worker, bands of tile rows as tasks, grid assembled and written by the client),
timed from submission to the written GeoPackage; the cluster's start-up is not timed (a
cluster is long-lived), each worker's package and ensemble loading is (as in the single
process).  Task compute times come from the scheduler's task stream."""
from __future__ import annotations

import argparse
import csv
import sys
import tempfile
import time
from pathlib import Path

TARGET_RATIO = 0.90  # cluster throughput / single process on this 2-core machine
ESTIMATE_WORKERS = (1, 2, 4, 8, 16, 32, 64)


def _csv(path: Path, scenes: dict) -> Path:
    from ..core.channels import S1_ROLES

    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "s2"] + [r.lower() for r in S1_ROLES] + ["s2_bands"])
        for sid, p in scenes.items():
            w.writerow([sid, p["S2"]] + [p[r] for r in S1_ROLES] + ["1,2,3,4"])
    return path


def _import_runtime() -> None:
    from ..cluster import tasks  # noqa: F401 (what the tasks import)
    from ..models.ensemble import require

    for module in ("onnxruntime", "lightgbm", "xgboost"):
        require(module)


def _compute_seconds(client, since: float) -> tuple[int, float]:
    """(tasks, seconds of compute) the workers reported since ``since`` (epoch seconds)."""
    n, total = 0, 0.0
    for t in client.get_task_stream(start=since):
        for ss in t.get("startstops", ()):
            if ss.get("action") == "compute" and ss["start"] >= since:
                n += 1
                total += ss["stop"] - ss["start"]
    return n, total


def _batch(client, scenes: dict, package, folder: Path, band_rows=None) -> dict:
    from ..cluster.batch import read_scenes, run_batch

    table = _csv(folder / "scenes.csv", scenes)
    t_epoch, t0 = time.time(), time.perf_counter()
    rows = run_batch(read_scenes(table), folder / "out", package, client, band_rows=band_rows)
    wall = time.perf_counter() - t0
    bad = [r for r in rows if r["status"] != "done"]
    if bad:
        raise RuntimeError(f"scale-out run failed: {bad}")
    time.sleep(0.5)  # the last task-stream records reach the scheduler
    tasks, compute = _compute_seconds(client, t_epoch)
    return {"wall_seconds": wall, "scored": sum(int(r["scored"]) for r in rows), "tasks": tasks,
            "compute_seconds": compute, "scenes": len(rows)}


def run_scaleout(paths: dict, package: Path, single: dict | None = None, workers: int = 2, small_side: int = 128,
                 small_scenes: int = 32, band_rows: int | None = None, emit=None, log=None) -> list:
    """Figures (dicts) of the scale-out comparison; ``single`` is a bench ``run_child('detect')``
    result on the same scene (else one is run here)."""
    from ..cluster.client import open_client
    from ..models.package import load_package
    from . import common as br

    emit = emit or br.emit
    say = log or br.log
    pkg = load_package(package)
    if single is None:
        say("scale-out: single-process run")
        single = br.run_child("detect", paths, package)
    single_rate = single["scored"] / single["wall_seconds"]
    figs = [emit("scaleout_single", unit="patches/s", value=single_rate, patches=single["scored"],
                 wall_seconds=single["wall_seconds"])]
    small = br.ensure_scene(small_side, cache=Path(paths["S2"]).parent.parent)
    with tempfile.TemporaryDirectory(prefix="scaleout_") as tmp, open_client(None, workers=workers) as client:
        client.wait_for_workers(workers, timeout=120)
        client.get_task_stream()  # installs the scheduler's task-stream plugin before the timed runs
        client.run(_import_runtime)  # imports are not timed, as in the single-process child
        tmp = Path(tmp)
        say(f"scale-out: the same scene on a local cluster of {workers} single-threaded workers")
        (tmp / "big").mkdir()
        big = _batch(client, {"scene": paths}, pkg, tmp / "big", band_rows)
        rate = big["scored"] / big["wall_seconds"]
        slots = workers
        overhead = (slots * big["wall_seconds"] - big["compute_seconds"]) / max(1, big["tasks"])
        figs.append(emit("scaleout_cluster", unit="patches/s", value=rate, workers=workers, threads_per_worker=1,
                         ratio_to_single=rate / single_rate, target=TARGET_RATIO, met=rate / single_rate >= TARGET_RATIO,
                         wall_seconds=big["wall_seconds"], tasks=big["tasks"], patches=big["scored"],
                         compute_seconds=big["compute_seconds"],
                         compute_seconds_per_task=big["compute_seconds"] / max(1, big["tasks"]),
                         overhead_seconds_per_task=overhead))
        say(f"  {rate:.1f} patches/s vs {single_rate:.1f} single ({rate / single_rate:.0%}); {big['tasks']} tasks, "
            f"overhead {overhead * 1000:.0f} ms per task")
        say(f"scale-out: {small_scenes} small scenes ({small_side} px) for the per-task overhead")
        (tmp / "small").mkdir()
        many = _batch(client, {f"s{i:03d}": small for i in range(small_scenes)}, pkg, tmp / "small")
        small_over = (slots * many["wall_seconds"] - many["compute_seconds"]) / max(1, many["tasks"])
        figs.append(emit("scaleout_small_scenes", unit="s", scenes=small_scenes, side=small_side, tasks=many["tasks"],
                         wall_seconds=many["wall_seconds"], compute_seconds=many["compute_seconds"],
                         overhead_seconds_per_task=small_over,
                         scenes_per_s=small_scenes / many["wall_seconds"]))
        say(f"  {many['tasks']} tasks in {many['wall_seconds']:.1f} s: {small_over * 1000:.0f} ms overhead per task")
    figs.append(emit("scaleout_estimate", unit="patches/s", **estimate(big, workers, small_over)))
    return figs


def estimate(big: dict, workers: int, small_overhead: float) -> dict:
    """Throughput for N workers (one core each) from measured per-task cost: a worker
    turns out one band per (compute + overhead) seconds, each band b patches; the
    overhead is the larger of the two measured per-task figures (conservative)."""
    tasks = max(1, big["tasks"])
    per_task = big["compute_seconds"] / tasks
    overhead = max(0.0, (workers * big["wall_seconds"] - big["compute_seconds"]) / tasks, small_overhead)
    b = big["scored"] / tasks
    rows = [{"workers": n, "patches_per_s": n * b / (per_task + overhead)} for n in ESTIMATE_WORKERS]
    return {"model": "N * patches_per_task / (compute_per_task + overhead_per_task)",
            "patches_per_task": b, "compute_seconds_per_task": per_task, "overhead_seconds_per_task": overhead,
            "rows": rows}


def results_lines(figs: list) -> list[str]:
    """The scale-out section of bench/results.md."""
    by = {f["figure"]: f for f in figs if f["figure"].startswith("scaleout_")}
    if "scaleout_cluster" not in by:
        return []
    s, c, m, e = by["scaleout_single"], by["scaleout_cluster"], by.get("scaleout_small_scenes"), by["scaleout_estimate"]
    met = "**met**" if c["met"] else "**not met**"
    L = ["", "## Scale-out (Dask)", "",
         "| run | patches/s | wall s | tasks | compute s per task | overhead s per task |", "|---|---|---|---|---|---|",
         f"| one process (default threads) | {s['value']:.1f} | {s['wall_seconds']:.1f} | - | - | - |",
         f"| local cluster, {c['workers']} workers x 1 thread | {c['value']:.1f} | {c['wall_seconds']:.1f} | {c['tasks']} | "
         f"{c['compute_seconds_per_task']:.2f} | {c['overhead_seconds_per_task']:.3f} |"]
    if m:
        L.append(f"| {m['scenes']} small scenes ({m['side']} px) | - | {m['wall_seconds']:.1f} | {m['tasks']} | "
                 f"{m['compute_seconds'] / max(1, m['tasks']):.3f} | {m['overhead_seconds_per_task']:.3f} |")
    L += ["", f"- Target: cluster throughput >= {c['target']:.0%} of the single process on this 2-core machine: "
          f"{c['ratio_to_single']:.0%} {met}.",
          "- Overhead per task = (workers x wall - sum of task compute) / tasks: scheduling, transfers, the "
          "client's assembling and writing, and idle workers at the start and the end.",
          f"- Estimate for N workers, one core each ({e['model']}; {e['patches_per_task']:.0f} patches and "
          f"{e['compute_seconds_per_task']:.2f} s compute per task, {e['overhead_seconds_per_task']:.3f} s overhead): " +
          ", ".join(f"{r['workers']}: {r['patches_per_s']:.0f}" for r in e["rows"]) +
          " patches/s. It assumes the inputs are read at that rate (shared or object storage) and one "
          "client writes the grids."]
    return L


def main(argv=None) -> int:
    from . import common as br

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--side", type=int, default=br.BASE_SIDE)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--small-scenes", type=int, default=32)
    ap.add_argument("--package", default=None)
    a = ap.parse_args(argv)
    package, _ = br.resolve_package(a.package)
    figs = run_scaleout(br.ensure_scene(a.side), package, workers=a.workers, small_scenes=a.small_scenes)
    print("\n".join(results_lines(figs)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
