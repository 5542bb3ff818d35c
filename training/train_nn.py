"""Train the neural ensemble members, export them to ONNX and merge them into a package.

The driver: data in nn_data.py, the training loop in nn_loop.py, ONNX export and the
package merge in nn_export.py, metrics (scikit-learn) in metrics.py.

Library (``train_members``) + CLI::

    python -m sentinel_landslide.training.train_nn \\
        (--proxy train_features_7147.csv.gz | --patches <competition-layout folder>) \\
        --out models/bundled [--members all|name,...] [--epochs N] [--folds K] [--seed 42] [--quick]

Recipe (../shared/method.md, at native 64 x 64): BCE-with-logits + soft-F1 loss (summed),
AdamW, per-step cosine schedule with a short warm-up, random flips + 90-degree rotations
(one of the 8 dihedral transforms per sample, the same for all of its input groups),
stratified K-fold out-of-fold (OOF) predictions, everything seeded.  The weights that
ship are a refit of the same recipe on ALL the data (the OOF figures estimate it); the
paper instead averaged its 5 fold models, which would cost K times more at detection.

Preprocessing is the runtime's (``models.ensemble``): the manifest's normalisation and
S2 offset, ``core.indices.compute_indices``, invalid pixels filled with Q50; the
numbers come from the manifest being written (``models.package``), never retyped.

Resumable: every epoch of every (member, fold) and of the final refit is checkpointed
under ``build/nn_ckpt/<member>_<key>/`` (key = hash of data, config and recipe); a
finished fold keeps its OOF logits.  Rerunning the same command continues where it
stopped.  Each member is exported to ONNX (opset 17, dynamic batch, weights embedded);
fp16 weight storage (Cast to fp32 in the graph) is kept only if the fold models' OOF
metrics, recomputed through onnxruntime with fp16 weights, match fp32 within
``FP16_TOL``.  ``progress(fraction, message)`` and ``is_cancelled()`` callbacks let a
QGIS algorithm drive it.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from ..models.package import new_manifest
from .nn_data import ROOT, PatchData, TrainingCancelled, TrainingError, _reload, _require_torch, load_folder_data, load_proxy_data
from .nn_export import PACKAGE_NAME, merge_into_package
from .nn_loop import _Progress, train_member

DEFAULT_CKPT = ROOT / "build" / "nn_ckpt"
DEFAULT_GBM_OOF = ROOT / "build" / "oof" / "gbm_oof.csv"


def default_recipe(**over) -> dict:
    r = {"epochs": 8, "folds": 3, "seed": 42, "batch": 64, "lr": 2e-3, "weight_decay": 0.05,
         "pretrained": False, "threads": 2, "fp16": True}
    r.update({k: v for k, v in over.items() if v is not None})
    return r


def _stamped(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _member_worker(cfg, spec, recipe, man, ckpt_root):
    """Train one member in a worker process (data re-opened from ``spec``, memory-mapped)."""
    import torch

    torch.set_num_threads(int(recipe.get("threads", 1)))
    data = _reload(spec)
    return train_member(cfg, data, recipe, man, Path(ckpt_root), _Progress(1), _stamped)


def train_members(data: PatchData, members, out_dir, recipe: dict, ckpt_root=DEFAULT_CKPT,
                  gbm_oof=DEFAULT_GBM_OOF, command: str = "", progress=None, is_cancelled=None, log=print,
                  write_package: bool = True, workers: int = 1) -> dict:
    """Train ``members`` (names or MemberConfigs), export, and merge into ``out_dir``.

    ``workers`` > 1 trains members in parallel processes (each with recipe["threads"]
    torch threads; under CPU contention 2 x 1 thread beats 1 x 2 threads by far);
    progress then advances per finished member and cancelling waits for running ones."""
    _require_torch()
    import torch

    from .nets import MEMBER_BY_NAME

    torch.set_num_threads(int(recipe.get("threads", 2)))
    cfgs = [MEMBER_BY_NAME[m] if isinstance(m, str) else m for m in members]
    if len(np.unique(data.labels)) < 2:
        raise TrainingError("training needs both classes among the labels")
    if np.bincount(data.labels).min() < recipe["folds"]:
        raise TrainingError(f"each class needs at least {recipe['folds']} patches for {recipe['folds']} folds")
    out_dir = Path(out_dir)
    mpath = out_dir / "manifest.json"
    man = json.loads(mpath.read_text()) if mpath.is_file() else new_manifest(PACKAGE_NAME, "0", "")
    k = recipe["folds"]
    per_member = recipe["epochs"] * (len(data) * (k - 1) / k + len(data))
    prog = _Progress(per_member * len(cfgs), progress, is_cancelled)
    results = {}
    t0 = time.time()

    def report(cfg, r):
        m = r["metrics"]["onnx16" if r["fp16_ok"] else "onnx32"]
        if log:
            log(f"member {cfg.name}: OOF F1 {m['f1']:.3f} P {m['precision']:.3f} R {m['recall']:.3f} "
                f"AUC {m['auc']:.3f} ({r['precision']}, {r['flops'] / 1e6:.1f} MFLOPs, trained in "
                f"{r['train_seconds']:.0f} s, this run {r['seconds']:.0f} s)")

    if workers > 1 and len(cfgs) > 1 and data.spec is not None:
        import multiprocessing as mp
        from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

        from .nets import build_member, count_flops

        # heaviest first, for a better balance across the workers
        queue = sorted(cfgs, key=lambda c: -count_flops(build_member(c)))
        with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn")) as ex:
            futs = {ex.submit(_member_worker, cfg, data.spec, recipe, man, str(ckpt_root)): cfg for cfg in queue}
            pending = set(futs)
            while pending:
                done, pending = wait(pending, timeout=5, return_when=FIRST_COMPLETED)
                if is_cancelled and is_cancelled():
                    for f in pending:
                        f.cancel()
                    raise TrainingCancelled("training cancelled")
                for f in done:
                    cfg = futs[f]
                    results[cfg.name] = f.result()
                    report(cfg, results[cfg.name])
                    prog.add(per_member, f"{cfg.name} done")
    else:
        for cfg in cfgs:
            if log:
                log(f"member {cfg.name}: {', '.join(f'{g}->{e}' for g, e in cfg.encoders)}, head {cfg.head}")
            results[cfg.name] = train_member(cfg, data, recipe, man, Path(ckpt_root), prog, log)
            report(cfg, results[cfg.name])
    ordered = [results[c.name] for c in cfgs]
    out = {"results": ordered, "seconds": round(time.time() - t0, 1)}
    if write_package:
        out["manifest"] = merge_into_package(out_dir, ordered, data, recipe, command, gbm_oof, log)
    return out


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m sentinel_landslide.training.train_nn", description=__doc__.split("\n\n")[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--proxy", help="real feature table (train_features_7147.csv.gz): train on synthetic proxy patches")
    src.add_argument("--patches", help="competition-layout patch folder (ID.npy + Train.csv)")
    p.add_argument("--out", required=True, help="model package folder to merge the members into")
    p.add_argument("--members", default="all", help="'all' or comma-separated member names")
    p.add_argument("--epochs", type=int)
    p.add_argument("--folds", type=int)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--batch", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--threads", type=int, default=None, help="torch threads per process (default 2, or 1 with --workers > 1)")
    p.add_argument("--workers", type=int, default=1, help="train members in this many parallel processes")
    p.add_argument("--limit", type=int, help="use only the first N rows of --proxy (testing)")
    p.add_argument("--quick", action="store_true", help="smoke run: 1 epoch, 2 folds (unless given)")
    p.add_argument("--pretrained", action="store_true", help="ImageNet weights from timm (needs internet; full-size encoders)")
    p.add_argument("--width", type=float, default=1.0,
                   help="encoder width factor (nets.widened; 2 = twice as wide: more work per patch, a larger share "
                        "of the CPU's matmul rate; see ./build.sh width)")
    p.add_argument("--no-fp16", action="store_true", help="always ship fp32 weights")
    p.add_argument("--nn-weight", type=float, default=1.0,
                   help="ensemble weight of each network (GBMs keep 1.0); the bundled proxy-trained package uses 0.1")
    p.add_argument("--ckpt", default=str(DEFAULT_CKPT), help="checkpoint folder (resume)")
    p.add_argument("--gbm-oof", default=str(DEFAULT_GBM_OOF), help="GBM OOF probabilities (id,label,<member>...)")
    p.add_argument("--list", action="store_true", help="list the member configurations and exit")
    a = p.parse_args(argv)
    from .nets import MEMBERS

    if a.list:
        for m in MEMBERS:
            print(f"{m.name:22s} {m.head:4s} {','.join(m.modes):18s} " + ", ".join(f"{g}:{e}" for g, e in m.encoders))
        return 0
    recipe = default_recipe(epochs=1 if a.quick and a.epochs is None else a.epochs,
                            folds=2 if a.quick and a.folds is None else a.folds,
                            seed=a.seed, batch=a.batch, lr=a.lr,
                            threads=a.threads or (1 if a.workers > 1 else 2))
    recipe["pretrained"] = bool(a.pretrained)
    recipe["fp16"] = not a.no_fp16
    recipe["nn_weight"] = a.nn_weight
    if a.width != 1.0:  # only then: width-1 checkpoints keep their keys
        recipe["width"] = a.width
    names = [m.name for m in MEMBERS] if a.members == "all" else [s.strip() for s in a.members.split(",") if s.strip()]
    from .nets import MEMBER_BY_NAME

    bad = [m for m in names if m not in MEMBER_BY_NAME]
    if bad:
        p.error(f"unknown member(s) {bad}; known: {', '.join(MEMBER_BY_NAME)}")
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover
        tqdm = None
    bar = tqdm(total=1000, unit="‰", dynamic_ncols=True, mininterval=5) if tqdm else None

    def progress(frac, msg):
        if bar is not None:
            bar.n = int(frac * 1000)
            bar.set_description(msg[:60], refresh=False)
            bar.refresh()

    def log(msg):
        (bar.write if bar is not None else print)(f"[{time.strftime('%H:%M:%S')}] {msg}")

    command = "python -m sentinel_landslide.training.train_nn " + " ".join(
        (Path(x).name if x.startswith("/") else x) for x in (argv if argv is not None else sys.argv[1:]))
    t0 = time.time()
    try:
        if a.proxy:
            data = load_proxy_data(a.proxy, seed=a.seed, limit=a.limit, workers=max(1, a.workers))
        else:
            data = load_folder_data(a.patches, cache=True if a.workers > 1 else None)
        log(f"data: {data.provenance['data']}: {len(data)} patches, {int(data.labels.sum())} positive")
        train_members(data, names, a.out, recipe, ckpt_root=a.ckpt, gbm_oof=a.gbm_oof, command=command,
                      progress=progress, log=log, workers=a.workers)
    except (TrainingError, TrainingCancelled) as exc:
        if bar is not None:
            bar.close()
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if bar is not None:
        bar.close()
    log(f"done in {time.time() - t0:.0f} s; package: {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
