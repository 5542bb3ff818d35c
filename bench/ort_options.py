"""onnxruntime session options for the bundled networks, measured (issue 22, "cheaper
network passes").

    python -m sentinel_landslide.bench.ort_options [--package DIR] [--batch 40 8]
        [--seconds 1.0] [--repeats 3] [--only NAME ...] [--no-rss] [--no-write]

Every network of the package runs on random inputs of its own shape (a pass costs the
same whatever the values), in sub-batches of ``--batch`` patches as detect's lanes run
them (40 by default; 8 stands for a slice the cascade thinned out; ``models.ensemble``:
``_SUB_BATCH`` patches, one session per network shared by the lanes).  Each variant
changes one setting of the default (``ensemble.session_options``):

* ``lanes x intra-op threads``: the cores split into lanes each running a network
  single-threaded (the default) or one lane whose networks use all cores inside each
  operator (spinning idle pool threads on or off);
* execution mode: sequential or parallel (the parallel executor with inter-op threads);
* graph optimisation level: basic, extended or all;
* the CPU memory arena and the memory pattern planner.

Figures: ms of wall time per patch for all networks together (the lanes run side by
side, so this is what a tile's network pass costs), median over ``--repeats`` rounds with
min-max, each round timing every variant in turn (the machine's load drifts between
rounds, not between variants; each round starts one variant later), the max |logit
difference| against the default (graph fusions may reorder float sums) and the peak RSS
of a fresh process loading and running the networks with that variant (the memory arena
keeps what it grows).  Alone it rewrites only its section of bench/results.md.
"""
from __future__ import annotations

import argparse
import os
import shlex
import statistics
import sys
import threading
import time
from pathlib import Path

import numpy as np

from .common import BENCH, log, machine_load, resolve_package

HEADING = "## onnxruntime session options (issue 22)"


def variants(cores: int) -> list[dict]:
    """(name, lanes, session_options overrides); the first is the default."""
    v = [dict(name=f"default: {cores} lanes x 1 thread, sequential, all graph optimisations, no arena", lanes=cores,
              opts={}),
         dict(name="arena on", lanes=cores, opts={"arena": True}),
         dict(name="memory pattern off", lanes=cores, opts={"mem_pattern": False}),
         dict(name="graph optimisation extended", lanes=cores, opts={"level": "extended"}),
         dict(name="graph optimisation basic", lanes=cores, opts={"level": "basic"})]
    if cores > 1:
        v += [dict(name=f"1 lane x {cores} intra-op threads, no spinning", lanes=1, opts={"threads": cores}),
              dict(name=f"1 lane x {cores} intra-op threads, spinning", lanes=1,
                   opts={"threads": cores, "spinning": True}),
              dict(name=f"1 lane, parallel execution, {cores} inter-op threads", lanes=1,
                   opts={"parallel": True, "inter_op": cores})]
    return v


def _feeds(sess, batch: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {i.name: rng.normal(0, 1, [d if isinstance(d, int) else batch for d in i.shape]).astype(np.float32)
            for i in sess.get_inputs()}


def time_variant(sessions: dict, feeds: dict, lanes: int, batch: int, seconds: float) -> float:
    """ms of wall time per patch for all networks: ``lanes`` threads each scoring its own
    sub-batches through every network in turn, for about ``seconds``."""
    done = [0] * lanes
    stop = time.perf_counter() + seconds

    def lane(k):
        while True:
            for name, s in sessions.items():
                s.run(None, feeds[name][k])
            done[k] += 1
            if time.perf_counter() >= stop:
                return

    t0 = time.perf_counter()
    threads = [threading.Thread(target=lane, args=(k,)) for k in range(lanes)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return (time.perf_counter() - t0) / (sum(done) * batch) * 1e3


def child_peak_rss_mb(package: Path, batch: int, cores: int, k: int, only=None) -> float:
    """Peak RSS (MB) of a fresh process that loads every network with variant ``k`` and
    scores a few sub-batches on its lanes (the arena keeps what it grew)."""
    import json
    import subprocess

    cmd = [sys.executable, "-m", "sentinel_landslide.bench.ort_options", "--child-rss", str(k), "--package", str(package),
           "--batch", str(batch)] + (["--only", *only] if only else [])
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return float(json.loads(out.strip().splitlines()[-1])["peak_rss_mb"])


def _child_rss(package: Path, batch: int, k: int, only=None) -> float:
    import resource

    import onnxruntime as ort

    from ..models.ensemble import session_options
    from ..models.package import load_package

    cores = os.cpu_count() or 1
    v = variants(cores)[k]
    pkg = load_package(package)
    nets = [m for m in pkg.manifest["members"] if m["kind"] == "onnx" and (not only or m["name"] in only)]
    threads = v["opts"].get("threads", max(1, cores // v["lanes"]))
    o = session_options(ort, threads, **{key: x for key, x in v["opts"].items() if key != "threads"})
    sessions = {m["name"]: ort.InferenceSession(str(pkg.path(m)), o, providers=["CPUExecutionProvider"]) for m in nets}
    feeds = {n: [_feeds(s, batch, seed=j) for j in range(cores)] for n, s in sessions.items()}
    for _ in range(3):
        time_variant(sessions, feeds, v["lanes"], batch, 0.0)
    # VmHWM, not ru_maxrss: Linux keeps ru_maxrss across fork + exec (the parent's peak)
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run(package: Path, batch: int, seconds: float, repeats: int, only=None, cores: int | None = None,
        rss_check: bool = True) -> dict:
    import onnxruntime as ort

    from ..models.ensemble import session_options
    from ..models.package import load_package

    cores = cores or os.cpu_count() or 1
    pkg = load_package(package)
    nets = [m for m in pkg.manifest["members"] if m["kind"] == "onnx" and (not only or m["name"] in only)]
    vs = variants(cores)
    built = []
    for v in vs:
        threads = v["opts"].get("threads", max(1, cores // v["lanes"]))
        o = session_options(ort, threads, **{k: x for k, x in v["opts"].items() if k != "threads"})
        built.append({m["name"]: ort.InferenceSession(str(pkg.path(m)), o, providers=["CPUExecutionProvider"])
                      for m in nets})
    first = built[0]
    feeds = {n: [_feeds(s, batch, seed=k) for k in range(cores)] for n, s in first.items()}
    # scores: each variant against the default on the same batch
    ref = {n: s.run(None, feeds[n][0])[0] for n, s in first.items()}
    diffs = [max(float(np.max(np.abs(s.run(None, feeds[n][0])[0] - ref[n]))) for n, s in b.items()) for b in built]
    for b, v in zip(built, vs):  # warm-up: first runs allocate and plan
        time_variant(b, feeds, v["lanes"], batch, 0.0)
    rounds: list = [[] for _ in vs]
    loads = []
    for r in range(repeats):
        for j in range(len(vs)):  # each round starts one variant later: no variant always follows another
            i = (j + r) % len(vs)
            rounds[i].append(time_variant(built[i], feeds, vs[i]["lanes"], batch, seconds))
        loads.append(machine_load().get("loadavg_1m"))
        log(f"round {r + 1}/{repeats}: " + ", ".join(f"{x[-1]:.2f}" for x in rounds))
    rss = [child_peak_rss_mb(package, batch, cores, k, only) for k in range(len(vs))] if rss_check else [None] * len(vs)
    rows = []
    base = statistics.median(rounds[0])
    for v, x, d, m in zip(vs, rounds, diffs, rss):
        med = statistics.median(x)
        rows.append({"variant": v["name"], "lanes": v["lanes"], "ms_per_patch": round(med, 3),
                     "min": round(min(x), 3), "max": round(max(x), 3), "vs_default": round(base / med, 3),
                     "max_abs_logit_diff": d, "peak_rss_mb": m})
    return {"rows": rows, "batch": batch, "networks": [m["name"] for m in nets], "cores": cores,
            "seconds": seconds, "repeats": repeats, "loads": loads, "onnxruntime": ort.__version__}


def results_lines(res: dict) -> list:
    out = [f"All {len(res['networks'])} networks of the package, random inputs, sub-batches of {res['batch']} "
           f"patches, {res['cores']} cores, onnxruntime {res['onnxruntime']}; median of {res['repeats']} rounds "
           f"of {res['seconds']} s per variant (min-max); the 1-minute load average after each round: "
           f"{', '.join(str(x) for x in res['loads'])}.", "",
           "| variant | ms per patch, all networks | x default | max abs logit diff vs default | peak RSS MB |",
           "|---|---|---|---|---|"]
    for r in res["rows"]:
        out.append(f"| {r['variant']} | {r['ms_per_patch']:.2f} ({r['min']:.2f}-{r['max']:.2f}) | "
                   f"{r['vs_default']:.2f} | {r['max_abs_logit_diff']:.1e} | "
                   f"{'-' if r['peak_rss_mb'] is None else round(r['peak_rss_mb'])} |")
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--package", default=None)
    ap.add_argument("--batch", type=int, nargs="*", default=None,
                    help="patches per sub-batch (default: detect's, and a small cascade remainder)")
    ap.add_argument("--seconds", type=float, default=1.0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--only", nargs="*", default=None, help="network names (default: all)")
    ap.add_argument("--results", default=str(BENCH / "results.md"))
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--no-rss", action="store_true", help="skip the peak-RSS child per variant")
    ap.add_argument("--child-rss", type=int, default=None, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.child_rss is not None:
        import json

        print(json.dumps({"peak_rss_mb": _child_rss(Path(a.package), (a.batch or [40])[0], a.child_rss, a.only)}))
        return 0
    from ..models.ensemble import _SUB_BATCH

    package, _src = resolve_package(a.package)
    command = "python -m sentinel_landslide.bench.ort_options " + shlex.join(argv if argv is not None else sys.argv[1:])
    lines = [f"Command: `{command.strip()}`"]
    for batch in a.batch or [_SUB_BATCH, 8]:
        lines += [""] + results_lines(run(Path(package), batch, a.seconds, a.repeats, a.only, rss_check=not a.no_rss))
    print("\n".join(lines))
    if not a.no_write:
        from .results import write_section

        write_section(Path(a.results), HEADING, lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
