"""Adaptation demo on a SYNTHETIC region unlike the training data (engine.synthetic.OTHER_REGION:
darker soil, denser vegetation, radiometric offsets on S2 and SAR, weaker SAR change).

    .venv/bin/python -m sentinel_landslide.scripts.adapt_demo [--verdicts 40] [--size 1280] [--seed 21]

detect with the base package -> N tiles chosen as the review panel offers them
(``engine.review_select.next_batch`` in batches of 20: half stratified random, half informative;
``--pick uncertain``: the N most uncertain, purposive only) get verdicts simulated from the
planted truth, with their ``pick`` and ``stratum`` -> training/adapt.py -> detect with the adapted
package; AUC and F1 (each package at its own threshold) on the tiles NOT reviewed, base vs
adapted, and the region's landslide share estimated from the verdicts vs the truth.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def run(out: Path, n_verdicts: int = 40, size: int = 1280, seed: int = 21, threads: int = 2,
        base: str | None = None, rounds_scale: float = 1.0, log=print, pick: str = "panel") -> dict:
    from sentinel_landslide.core.channels import S1_ROLES
    from sentinel_landslide.engine.align import InputLayer
    from sentinel_landslide.engine.detect import DetectOptions
    from sentinel_landslide.engine.evaluation import roc_auc
    from sentinel_landslide.engine.outputs import write_grid
    from sentinel_landslide.engine.review_select import next_batch
    from sentinel_landslide.engine.synthetic import OTHER_REGION, make_scene
    from sentinel_landslide.engine.verdicts import (
        PICK_FIELD,
        PICK_UNCERTAIN,
        STRATUM_FIELD,
        read_grid,
        simulate_verdicts,
        tile_truth,
        write_fields,
    )
    from sentinel_landslide.models.package import load_package
    from sentinel_landslide.pipeline import run_detection
    from sentinel_landslide.training.adapt import adapt
    from sentinel_landslide.training.train_gbm import prf

    out.mkdir(parents=True, exist_ok=True)
    scene = make_scene(out / "scene", width=size, height=size, seed=seed, look=OTHER_REGION)
    opts = DetectOptions(s2=InputLayer("S2", scene["S2"], [1, 2, 3, 4]),
                         s1={r: InputLayer(r, scene[r], [1, 2]) for r in S1_ROLES}, threads=threads)
    pkg = load_package(base)
    res = run_detection(opts, pkg)
    grid_path = out / "grid_base.gpkg"
    write_grid(str(grid_path), res, pkg.name)
    g = read_grid(grid_path)
    truth = tile_truth(g.bounds, scene["truth"])
    scored = g.scored
    picks: dict = {}
    if pick == "uncertain":
        order = [i for i in np.argsort(-np.nan_to_num(g.uncertainty, nan=-1), kind="stable") if scored[i]]
        chosen = np.array(order[:n_verdicts])
        picks = {int(i): PICK_UNCERTAIN for i in chosen}
    else:  # the review panel's batches of 20: stratified random first, then informative
        reviewed = np.zeros(len(g.fid), dtype=bool)
        in_random = np.zeros(len(g.fid), dtype=bool)
        while len(picks) < n_verdicts:
            idx, pk = next_batch(g.prob, g.stratum, scored, reviewed, None, min(20, n_verdicts - len(picks)),
                                 threshold=res.threshold, seed=seed + len(picks), in_random=in_random)
            if not len(idx):
                break
            for i, p in zip(idx, pk):
                picks[int(i)] = p
                reviewed[i] = True
                in_random[i] = p == "random"
        chosen = np.array(sorted(picks))
    verdicts = simulate_verdicts(truth, chosen)
    write_fields(grid_path, {"review": {int(g.fid[i]): v for i, v in enumerate(verdicts) if v},
                             PICK_FIELD: {int(g.fid[i]): p for i, p in picks.items()},
                             STRATUM_FIELD: {int(g.fid[i]): int(g.flagged[i]) for i in np.flatnonzero(scored)}})
    log(f"SYNTHETIC other region: {int(scored.sum())} tiles, {int(truth[scored].sum())} landslide tiles; "
        f"{len(chosen)} reviewed ({pick}: {sum(p == 'random' for p in picks.values())} random; "
        f"{int(truth[chosen].sum())} confirmed)")
    t0 = time.perf_counter()
    result = adapt(str(grid_path), opts, base, str(out / "adapted_package"), threads=threads, seed=42,
                   rounds_scale=rounds_scale)
    adapt_s = time.perf_counter() - t0
    for line in result.log:
        log("  " + line)
    new = load_package(out / "adapted_package")
    res2 = run_detection(opts, new)
    probs2 = {(r.row, r.col): r.prob for r in res2.records}
    rest = np.array([i for i in range(len(g.fid)) if scored[i] and i not in set(chosen)])
    y = truth[rest]
    p_base = g.prob[rest]
    p_new = np.array([probs2[(int(g.row[i]), int(g.col[i]))] for i in rest])
    figures = {
        "tiles_not_reviewed": int(len(rest)), "landslides_not_reviewed": int(y.sum()),
        "verdicts": {"confirmed": result.n_confirmed, "rejected": result.n_rejected},
        "base": {"auc": round(roc_auc(y, p_base), 3), "f1": round(prf(y, p_base, res.threshold)[0], 3),
                 "threshold": res.threshold},
        "adapted": {"auc": round(roc_auc(y, p_new), 3), "f1": round(prf(y, p_new, res2.threshold)[0], 3),
                    "threshold": res2.threshold},
        "adapt_seconds": round(adapt_s, 1), "local_cv": result.metrics,
        "share": {"true": round(float(truth[scored].mean()), 4),
                  **({} if result.share is None else {k: v for k, v in result.share.as_dict().items()
                                                       if k in ("share", "share_lo", "share_hi", "count", "count_lo",
                                                                "count_hi", "n_random", "n_purposive")})},
        "flagged_not_reviewed": {"base": int((p_base >= res.threshold).sum()),
                                 "adapted": int((p_new >= res2.threshold).sum())},
    }
    log(json.dumps(figures, indent=1))
    return figures


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=None, help="work folder (default: a temporary one)")
    ap.add_argument("--verdicts", type=int, default=40)
    ap.add_argument("--size", type=int, default=1280)
    ap.add_argument("--seed", type=int, default=21)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--model", default=None, help="base package folder (default: bundled)")
    ap.add_argument("--pick", choices=("panel", "uncertain"), default="panel",
                    help="how reviewed tiles are chosen: the panel's batches (random + informative) or the most "
                         "uncertain only (purposive)")
    a = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        run(Path(a.out or tmp), a.verdicts, a.size, a.seed, a.threads, a.model, pick=a.pick)
    return 0


if __name__ == "__main__":
    sys.exit(main())
