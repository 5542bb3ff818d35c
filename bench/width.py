"""How network width moves the neural members' share of the machine's matmul rate.

``python -m sentinel_landslide.bench.width [--scales 1,2] [--repeats 5]``

Builds the seven member architectures of ``training/nets.py`` with random weights
at each width scale (``nets.widened``; 1 = the bundled sizes), exports them to ONNX as
training does, and times all seven in onnxruntime exactly as the runtime runs them: one
single-threaded session per member, slices of ``--batch`` patches, one lane per core.
Prints one JSON line per scale (MFLOP per patch with attention counted, GFLOP/s on one
lane and on all lanes, ms per patch, the fraction of the measured fp32 matmul rate) and
a table.  A cost study: random weights say nothing about accuracy.  Needs torch + timm.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from .common import CACHE
from .run import matmul_gflops


def export_members(scale: float, folder: Path) -> dict:
    """ONNX files of the seven members at ``scale`` x width in ``folder``; {name: FLOPs}."""
    import torch

    from ..training import nets
    from ..training.nn_export import export_onnx

    folder.mkdir(parents=True, exist_ok=True)
    flops = {}
    with nets.widened(scale):
        for cfg in nets.MEMBERS:
            torch.manual_seed(0)
            model = nets.build_member(cfg).eval()
            flops[cfg.name] = nets.count_flops(model)
            export_onnx(model, cfg, folder / f"{cfg.name}.onnx")
    return flops


def time_members(folder: Path, flops: dict, batch: int, lanes: int, repeats: int) -> dict:
    import numpy as np
    import onnxruntime as ort

    sessions = []
    for name in flops:
        o = ort.SessionOptions()
        o.intra_op_num_threads, o.inter_op_num_threads = 1, 1
        o.enable_cpu_mem_arena = False
        s = ort.InferenceSession(str(folder / f"{name}.onnx"), o, providers=["CPUExecutionProvider"])
        rng = np.random.default_rng(0)
        sessions.append((s, {i.name: rng.normal(size=(batch, *i.shape[1:])).astype(np.float32)
                             for i in s.get_inputs()}))

    def one_slice(_k=0):
        for s, feeds in sessions:
            s.run(None, feeds)

    one_slice()
    total = sum(flops.values())
    one, many = [], []
    slices = 4 * lanes
    with ThreadPoolExecutor(lanes) as pool:
        for _ in range(repeats):
            t0 = time.perf_counter()
            one_slice()
            one.append(total * batch / (time.perf_counter() - t0) / 1e9)
            t0 = time.perf_counter()
            list(pool.map(one_slice, range(slices)))
            many.append(total * batch * slices / (time.perf_counter() - t0) / 1e9)
    return {"one_lane_gflops": statistics.median(one), "all_lanes_gflops": statistics.median(many),
            "all_lanes_min": min(many), "all_lanes_max": max(many),
            "ms_per_patch": total / (statistics.median(many) * 1e9) * 1e3}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scales", default="1,2", help="width factors, comma-separated")
    ap.add_argument("--batch", type=int, default=40, help="patches per slice (the runtime uses ~40)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--lanes", type=int, default=os.cpu_count() or 1)
    a = ap.parse_args(argv)
    peak = matmul_gflops(threads=a.lanes)["best"]
    print(json.dumps({"figure": "matmul_gflops_fp32", "value": peak}), flush=True)
    rows = []
    for scale in (float(x) for x in a.scales.split(",")):
        folder = CACHE / f"width_x{scale:g}"
        flops = export_members(scale, folder)
        r = time_members(folder, flops, a.batch, a.lanes, a.repeats)
        r.update(figure="width_scale", scale=scale, mflop_per_patch=sum(flops.values()) / 1e6,
                 fraction_of_matmul=r["all_lanes_gflops"] / peak)
        print(json.dumps(r), flush=True)
        rows.append(r)
    print(f"\nfp32 matmul ({a.lanes} threads): {peak:.0f} GFLOP/s; slices of {a.batch} patches, {a.lanes} lanes; "
          "random weights (cost only)", file=sys.stderr)
    print("| width x | MFLOP/patch | 1 lane GFLOP/s | all lanes GFLOP/s | of matmul | ms/patch |", file=sys.stderr)
    for r in rows:
        print(f"| {r['scale']:g} | {r['mflop_per_patch']:.0f} | {r['one_lane_gflops']:.1f} | {r['all_lanes_gflops']:.1f} "
              f"({r['all_lanes_min']:.1f}-{r['all_lanes_max']:.1f}) | {r['fraction_of_matmul']:.0%} | "
              f"{r['ms_per_patch']:.2f} |", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
