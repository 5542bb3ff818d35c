"""Train the neural ensemble members, export them to ONNX and merge them into a package.

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
import hashlib
import json
import math
import os
import platform
import shutil
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from ..core.channels import CHANNEL_NAMES, PATCH_SIZE
from ..core.indices import compute_indices
from ..models.ensemble import norm_constants  # the runtime's scaling itself, not a copy
from ..models.package import MODES, new_manifest, write_manifest

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CKPT = ROOT / "build" / "nn_ckpt"
DEFAULT_GBM_OOF = ROOT / "build" / "oof" / "gbm_oof.csv"
OPSET = 17
FP16_TOL = {"f1": 0.002, "auc": 0.001}
RECIPE_VERSION = 1
PACKAGE_NAME = "sentinel-landslide"


# Why the bundled package weighs its networks 0.1 each (26 % of the combined vote):
NN_WEIGHT_NOTE = (
    "networks trained on synthetic proxy patches lowered the whole ensemble's OOF F1 at every share tried "
    "(combined: GBM pair alone 0.875; networks at 25 % of the vote 0.871, 50 % 0.866, 78 % (equal "
    "weights) 0.803); they keep a small weight so the neural path runs as in the paper; networks retrained "
    "on real image patches should get weight 1 (train_nn --nn-weight 1)")


class TrainingCancelled(Exception):
    """Raised when ``is_cancelled()`` returns True."""


class TrainingError(Exception):
    """Bad input data or configuration, with a message for the user."""


def _require_torch():
    try:
        import timm  # noqa: F401
        import torch  # noqa: F401
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise TrainingError(
            f"Training the neural members needs PyTorch and timm ({exc}). Install them into this "
            "Python (see requirements-train.txt); detection itself does not need them."
        ) from exc


# ----------------------------------------------------------------------------- data
class PatchData:
    """Labelled patches (N, 12, 64, 64) in the package convention + provenance."""

    def __init__(self, ids, labels, patches, provenance: dict, fingerprint: str, spec=None):
        self.spec = spec  # how to reload it in a worker process (None: cannot)
        self.ids = list(ids)
        self.labels = np.asarray(labels, dtype=np.int64)
        self.patches = patches
        self.provenance = provenance
        self.fingerprint = fingerprint
        if len(self.ids) != len(self.labels) or len(self.ids) != len(patches):
            raise TrainingError("ids, labels and patches differ in length")
        if tuple(patches.shape[1:]) != (len(CHANNEL_NAMES), PATCH_SIZE, PATCH_SIZE):
            raise TrainingError(f"patches must be (N, 12, 64, 64), got {patches.shape}")

    def __len__(self):
        return len(self.ids)

    def take(self, idx) -> np.ndarray:
        idx = np.asarray(idx)
        order = np.argsort(idx)
        out = np.empty((len(idx),) + tuple(self.patches.shape[1:]), dtype=np.float32)
        out[order] = self.patches[idx[order]]  # sorted reads are kind to memmaps
        return out


def load_proxy_data(csv_path, seed: int = 42, cache_dir=None, limit=None, progress=None, workers: int = 1) -> PatchData:
    from . import proxy

    ids, labels, patches = proxy.build_proxy(csv_path, cache_dir=cache_dir or proxy.DEFAULT_CACHE, seed=seed,
                                             limit=limit, progress=progress, workers=workers)
    sha = proxy._file_sha(Path(csv_path))
    prov = {
        "data": ("synthetic proxy patches generated from the real per-patch statistics of "
                 f"{Path(csv_path).name} (one 64x64x12 patch per real labelled row; label-blind "
                 "texture; training/proxy.py) -- NOT real imagery"),
        "source": Path(csv_path).name, "source_sha256": sha, "generator_version": proxy.GENERATOR_VERSION,
        "proxy_seed": seed, "n": len(ids), "positives": int(np.sum(labels)),
    }
    fp = hashlib.sha256(f"proxy|{sha}|{proxy.GENERATOR_VERSION}|{seed}|{limit}".encode()).hexdigest()
    spec = ("proxy", str(csv_path), seed, str(cache_dir) if cache_dir else None, limit)
    return PatchData(ids, labels, patches, prov, fp, spec)


def load_folder_data(folder, cache=None, progress=None) -> PatchData:
    from ..engine.patch_folder import list_patch_folder, read_patch_folder

    ids, labels = list_patch_folder(folder)
    if labels is None:
        raise TrainingError(f"patch folder '{folder}' has no labels (Train.csv with ID,label is needed to train)")
    h = hashlib.sha256()
    for pid in ids:
        st = (Path(folder) / f"{pid}.npy").stat()
        h.update(f"{pid}|{st.st_size}|{int(st.st_mtime)}".encode())
    h.update(labels.tobytes())
    fp = h.hexdigest()
    if cache is True:
        cache = ROOT / "build" / "patch_cache" / f"{fp[:16]}.npy"
    if cache is not None and Path(cache).is_file():
        patches = np.load(cache, mmap_mode="r")
        if len(patches) != len(ids):
            patches = None
    else:
        patches = None
    if patches is None:
        ids, labels, patches = read_patch_folder(folder, cache=cache, progress=progress)
    prov = {"data": f"competition-layout patch folder '{Path(folder).name}' ({len(ids)} patches)",
            "n": len(ids), "positives": int(labels.sum())}
    spec = ("folder", str(folder), str(cache)) if cache is not None else None
    return PatchData(ids, labels, patches, prov, fp, spec)


def _reload(spec) -> PatchData:
    if spec[0] == "proxy":
        return load_proxy_data(spec[1], seed=spec[2], cache_dir=spec[3], limit=spec[4])
    return load_folder_data(spec[1], cache=Path(spec[2]))


# ----------------------------------------------------------------------------- preprocessing
def fill_invalid(patches: np.ndarray, normalisation: dict) -> np.ndarray:
    """Non-finite pixels -> the channel's Q50, as ``Ensemble.fill_invalid`` does."""
    bad = ~np.isfinite(patches)
    if not bad.any():
        return patches
    q50 = np.array(normalisation["robust"]["q50"], dtype=np.float32)
    out = patches.copy()
    np.copyto(out, np.broadcast_to(q50[None, :, None, None], out.shape), where=bad)
    return out




def member_feeds(patches: np.ndarray, inputs: list[dict], normalisation: dict, s2_offset: float,
                 consts: dict | None = None) -> dict:
    """The network inputs for a batch, computed as ``_OnnxMember.feeds`` does."""
    consts = consts or norm_constants(inputs, normalisation)
    out = {}
    for t in inputs:
        if "channels" in t:
            idx, c, s = consts[t["name"]]
            out[t["name"]] = ((patches[:, idx] - c) / s).astype(np.float32)
        else:
            out[t["name"]] = compute_indices(patches, t["indices"], s2_offset)
    return out


def dihedral(x, k):
    """One of the 8 flips/90-degree rotations of (N, C, H, W) torch tensors, k in 0..7."""
    import torch

    if k >= 4:
        x = torch.flip(x, dims=(-1,))
    return torch.rot90(x, k % 4, dims=(-2, -1)) if k % 4 else x


def augment(tensors: list, gen):
    """The same random dihedral transform per sample across all input tensors.

    Returns (transformed tensors, order): samples come back grouped by transform, in
    ``order`` (apply it to the labels too)."""
    import torch

    n = tensors[0].shape[0]
    ks = torch.randint(0, 8, (n,), generator=gen)
    order = torch.argsort(ks, stable=True)
    counts = torch.bincount(ks, minlength=8).tolist()
    outs = []
    for t in tensors:
        t = t[order]
        parts, s = [], 0
        for k, c in enumerate(counts):
            if c:
                parts.append(dihedral(t[s:s + c], k))
                s += c
        outs.append(torch.cat(parts).contiguous())
    return outs, order


# ----------------------------------------------------------------------------- metrics
def soft_f1_loss(logits, y):
    import torch

    p = torch.sigmoid(logits)
    tp = (p * y).sum()
    fp = (p * (1 - y)).sum()
    fn = ((1 - p) * y).sum()
    return 1 - 2 * tp / (2 * tp + fp + fn + 1e-7)


def binary_metrics(prob, y, threshold=0.5) -> dict:
    from sklearn.metrics import roc_auc_score

    prob = np.asarray(prob, dtype=np.float64)
    y = np.asarray(y).astype(int)
    pred = prob >= threshold
    tp = int(np.sum(pred & (y == 1)))
    fp = int(np.sum(pred & (y == 0)))
    fn = int(np.sum(~pred & (y == 1)))
    prec = tp / (tp + fp) if tp + fp else 0.0
    rec = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
    auc = float(roc_auc_score(y, prob)) if 0 < y.sum() < len(y) else float("nan")
    return {"f1": round(f1, 4), "precision": round(prec, 4), "recall": round(rec, 4), "auc": round(auc, 4),
            "threshold": round(float(threshold), 3)}


def best_threshold(prob, y, lo=0.05, hi=0.95, step=0.005) -> float:
    """F1-optimal threshold on a grid (ties -> closest to 0.5)."""
    grid = np.round(np.arange(lo, hi + step / 2, step), 4)
    f1 = np.array([binary_metrics_f1(prob, y, t) for t in grid])
    best = np.flatnonzero(f1 >= f1.max() - 1e-12)
    return float(grid[best[np.argmin(np.abs(grid[best] - 0.5))]])


def binary_metrics_f1(prob, y, t):
    pred = prob >= t
    tp = np.sum(pred & (y == 1))
    fp = np.sum(pred & (y == 0))
    fn = np.sum(~pred & (y == 1))
    return 2 * tp / (2 * tp + fp + fn) if tp else 0.0


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-np.clip(np.asarray(x, np.float64), -60, 60)))


# ----------------------------------------------------------------------------- training
def _seed_all(*parts):
    import torch

    s = int.from_bytes(hashlib.sha256("|".join(map(str, parts)).encode()).digest()[:4], "little")
    torch.manual_seed(s)
    return s


class _Progress:
    def __init__(self, total_units, progress=None, is_cancelled=None):
        self.total = max(total_units, 1e-9)
        self.done = 0.0
        self.cb = progress
        self.cancel = is_cancelled

    def check(self):
        if self.cancel and self.cancel():
            raise TrainingCancelled("training cancelled")

    def add(self, units, msg):
        self.done += units
        if self.cb:
            self.cb(min(1.0, self.done / self.total), msg)


def train_model(cfg, data: PatchData, train_idx, recipe: dict, ckpt: Path, man: dict, prog: _Progress,
                tag: str, log=print):
    """Train one FusionNet on ``train_idx`` with per-epoch checkpoints in ``ckpt``."""
    import torch

    from .nets import build_member

    epochs, batch, lr, seed = recipe["epochs"], recipe["batch"], recipe["lr"], recipe["seed"]
    _seed_all(seed, cfg.name, tag, "init")
    model = build_member(cfg, pretrained=recipe["pretrained"])
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=recipe["weight_decay"])
    steps_per_epoch = max(1, len(train_idx) // batch)  # drop_last: BatchNorm needs > 1 sample
    total = steps_per_epoch * epochs
    warm = max(1, int(0.05 * total))

    def lr_at(step):
        if step < warm:
            return (step + 1) / warm
        return 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    start = 0
    if ckpt.is_file():
        st = torch.load(ckpt, map_location="cpu", weights_only=False)
        model.load_state_dict(st["model"])
        opt.load_state_dict(st["opt"])
        sched.load_state_dict(st["sched"])
        start = st["epoch"] + 1
        prog.add(len(train_idx) * start, f"{cfg.name} {tag}: resumed")
        if log:
            log(f"  {cfg.name} {tag}: resumed after epoch {start}/{epochs}")
    inputs = cfg.inputs_manifest()
    consts = norm_constants(inputs, man["normalisation"])
    offset = float(man["s2_convention"]["offset"])
    y_all = data.labels.astype(np.float32)
    for ep in range(start, epochs):
        model.train()
        _seed_all(seed, cfg.name, tag, ep)  # dropout: deterministic per epoch (resume-safe)
        rng = np.random.default_rng([seed, ep, int(hashlib.md5(f"{cfg.name}|{tag}".encode()).hexdigest()[:8], 16)])
        gen = torch.Generator().manual_seed(int(rng.integers(2**31)))
        order = rng.permutation(train_idx)
        t0 = time.time()
        tot = 0.0
        for b in range(steps_per_epoch):
            prog.check()
            idx = order[b * batch:(b + 1) * batch]
            px = fill_invalid(data.take(idx), man["normalisation"])
            feeds = member_feeds(px, inputs, man["normalisation"], offset, consts)
            xs, order_b = augment([torch.from_numpy(feeds[t["name"]]) for t in inputs], gen)
            yb = torch.from_numpy(y_all[idx])[order_b]
            logit = model(*xs).reshape(-1)
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logit, yb) + soft_f1_loss(logit, yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            opt.step()
            sched.step()
            tot += loss.item()
        tmp = ckpt.with_suffix(".tmp")
        torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(), "epoch": ep}, tmp)
        os.replace(tmp, ckpt)
        _timing_add(ckpt.parent, tag, time.time() - t0)
        prog.add(len(train_idx), f"{cfg.name} {tag} epoch {ep + 1}/{epochs}")
        if log:
            log(f"  {cfg.name} {tag} epoch {ep + 1}/{epochs}: loss {tot / steps_per_epoch:.4f} "
                f"({time.time() - t0:.0f} s, {len(train_idx)} patches)")
    model.eval()
    return model


def predict_torch(model, cfg, data: PatchData, idx, man, batch=256) -> np.ndarray:
    import torch

    inputs = cfg.inputs_manifest()
    consts = norm_constants(inputs, man["normalisation"])
    offset = float(man["s2_convention"]["offset"])
    out = []
    model.eval()
    with torch.no_grad():
        for s in range(0, len(idx), batch):
            px = fill_invalid(data.take(idx[s:s + batch]), man["normalisation"])
            f = member_feeds(px, inputs, man["normalisation"], offset, consts)
            out.append(model(*[torch.from_numpy(f[t["name"]]) for t in inputs]).reshape(-1).numpy())
    return np.concatenate(out).astype(np.float64)


def predict_onnx(path, cfg, data: PatchData, idx, man, batch=256, threads=2) -> np.ndarray:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    inputs = cfg.inputs_manifest()
    consts = norm_constants(inputs, man["normalisation"])
    offset = float(man["s2_convention"]["offset"])
    out = []
    for s in range(0, len(idx), batch):
        px = fill_invalid(data.take(idx[s:s + batch]), man["normalisation"])
        f = member_feeds(px, inputs, man["normalisation"], offset, consts)
        out.append(np.asarray(sess.run(None, f)[0]).reshape(-1))
    return np.concatenate(out).astype(np.float64)


# ----------------------------------------------------------------------------- ONNX
def export_onnx(model, cfg, path: Path) -> Path:
    """torch -> ONNX (opset 17, dynamic batch, weights inside the file)."""
    import warnings

    import onnx
    import torch

    from .nets import example_inputs

    model.eval()
    path = Path(path)
    tmp = path.with_suffix(".tmp.onnx")
    dyn = {g: {0: "batch"} for g in cfg.groups}
    dyn["logit"] = {0: "batch"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, example_inputs(cfg, 2), str(tmp), input_names=list(cfg.groups),
                          output_names=["logit"], dynamic_axes=dyn, opset_version=OPSET, dynamo=False,
                          do_constant_folding=True)
    m = onnx.load(str(tmp))  # loads any external data too; re-save as one file
    m.producer_name = "sentinel_landslide.train_nn"
    onnx.checker.check_model(m)
    onnx.save_model(m, str(path), save_as_external_data=False)
    tmp.unlink(missing_ok=True)
    return path


def to_fp16_weights(src: Path, dst: Path, min_size: int = 16) -> Path:
    """Store float32 initializers (>= min_size values) as float16 + a Cast back to float32,
    so the file halves while all arithmetic stays float32."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    m = onnx.load(str(src))
    g = m.graph
    casts, keep = [], []
    for init in g.initializer:
        if init.data_type == TensorProto.FLOAT:
            arr = numpy_helper.to_array(init)
            if arr.size >= min_size and np.all(np.abs(arr) < 65000):
                h = numpy_helper.from_array(arr.astype(np.float16), init.name + "__fp16")
                keep.append(h)
                casts.append(helper.make_node("Cast", [h.name], [init.name], to=TensorProto.FLOAT,
                                              name=init.name + "__cast"))
                continue
        keep.append(init)
    del g.initializer[:]
    g.initializer.extend(keep)
    nodes = list(g.node)
    del g.node[:]
    g.node.extend(casts + nodes)
    onnx.checker.check_model(m)
    onnx.save_model(m, str(dst), save_as_external_data=False)
    return Path(dst)


# ----------------------------------------------------------------------------- members
def _timing_add(folder: Path, tag: str, seconds: float) -> None:
    """Accumulate training wall time per (fold | final) in <ckpt>/timing.json (survives resumes)."""
    p = Path(folder) / "timing.json"
    t = json.loads(p.read_text()) if p.is_file() else {}
    t[tag] = round(t.get(tag, 0.0) + seconds, 1)
    p.write_text(json.dumps(t))


def _timing_total(folder: Path) -> float:
    p = Path(folder) / "timing.json"
    return round(sum(json.loads(p.read_text()).values()), 1) if p.is_file() else None


def _key(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:10]


def folds_for(labels, k, seed):
    from sklearn.model_selection import StratifiedKFold

    skf = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    return [(tr, va) for tr, va in skf.split(np.zeros(len(labels)), labels)]


def train_member(cfg, data: PatchData, recipe: dict, man: dict, ckpt_root: Path, prog: _Progress, log=print) -> dict:
    """K-fold OOF (torch, ONNX fp32, ONNX fp16-weights) + a refit on all data, exported;
    every encoder ``recipe['width']`` times as wide when that is given (``nets.widened``)."""
    from .nets import widened

    with widened(float(recipe.get("width", 1.0))):
        return _train_member(cfg, data, recipe, man, ckpt_root, prog, log)


def _train_member(cfg, data: PatchData, recipe: dict, man: dict, ckpt_root: Path, prog: _Progress, log=print) -> dict:
    from .nets import count_flops, count_params

    semantic = {k: v for k, v in recipe.items() if k not in ("threads", "fp16", "nn_weight")}
    key = _key(asdict(cfg), data.fingerprint, semantic, RECIPE_VERSION, man["normalisation"], man["s2_convention"])
    d = Path(ckpt_root) / f"{cfg.name}_{key}"
    d.mkdir(parents=True, exist_ok=True)
    (d / "config.json").write_text(json.dumps({"member": asdict(cfg), "recipe": recipe,
                                               "data": data.provenance}, indent=1, default=str))
    n = len(data)
    oof = {k: np.full(n, np.nan) for k in ("torch", "onnx32", "onnx16")}
    splits = folds_for(data.labels, recipe["folds"], recipe["seed"])
    t_member = time.time()
    for f, (tr, va) in enumerate(splits):
        done = d / f"fold{f}_oof.npz"
        if done.is_file():
            z = np.load(done)
            for k in oof:
                oof[k][va] = z[k]
            prog.add(len(tr) * recipe["epochs"], f"{cfg.name} fold {f + 1}: done before")
            continue
        model = train_model(cfg, data, tr, recipe, d / f"fold{f}.pt", man, prog, f"fold{f + 1}/{len(splits)}", log)
        p32 = export_onnx(model, cfg, d / f"fold{f}.onnx")
        p16 = to_fp16_weights(p32, d / f"fold{f}.fp16.onnx")
        res = {"torch": predict_torch(model, cfg, data, va, man),
               "onnx32": predict_onnx(p32, cfg, data, va, man, threads=recipe["threads"]),
               "onnx16": predict_onnx(p16, cfg, data, va, man, threads=recipe["threads"])}
        np.savez(done, **res)
        for k in oof:
            oof[k][va] = res[k]
        if log:
            m = binary_metrics(sigmoid(res["torch"]), data.labels[va])
            log(f"  {cfg.name} fold {f + 1}: val F1 {m['f1']:.3f} AUC {m['auc']:.3f}")
    final_pt = d / "final.pt"
    model = train_model(cfg, data, np.arange(n), recipe, final_pt, man, prog, "final", log)
    p32 = export_onnx(model, cfg, d / "final.onnx")
    p16 = to_fp16_weights(p32, d / "final.fp16.onnx")
    metrics = {k: binary_metrics(sigmoid(v), data.labels) for k, v in oof.items()}
    ok16 = (abs(metrics["onnx16"]["f1"] - metrics["onnx32"]["f1"]) <= FP16_TOL["f1"]
            and abs(metrics["onnx16"]["auc"] - metrics["onnx32"]["auc"]) <= FP16_TOL["auc"]
            and recipe.get("fp16", True))
    chosen = "onnx16" if ok16 else "onnx32"
    # torch vs ONNX agreement of the shipped model on a few real inputs
    idx = np.arange(min(n, 64))
    diff = float(np.max(np.abs(predict_torch(model, cfg, data, idx, man)
                                - predict_onnx(p32, cfg, data, idx, man, threads=recipe["threads"]))))
    return {
        "cfg": cfg, "dir": d, "onnx": p16 if ok16 else p32, "precision": "fp16-weights" if ok16 else "fp32",
        "oof_logit": oof[chosen], "oof_all": oof, "metrics": metrics, "fp16_ok": ok16,
        "flops": count_flops(model), "params": count_params(model), "torch_onnx_max_abs_diff": diff,
        "seconds": round(time.time() - t_member, 1), "train_seconds": _timing_total(d),
        "fp32_bytes": p32.stat().st_size, "fp16_bytes": p16.stat().st_size,
    }


# ----------------------------------------------------------------------------- manifest
def read_gbm_oof(path) -> tuple[list[str], dict]:
    """build/oof/gbm_oof.csv: id,label,<member>... -> (ids, {column: float array})."""
    import csv

    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))
    head = rows[0]
    ids = [r[0] for r in rows[1:]]
    cols = {h: np.array([float(r[j]) if r[j] != "" else np.nan for r in rows[1:]]) for j, h in enumerate(head) if j > 0}
    return ids, cols


def ensemble_oof(man: dict, nn_oof: dict, ids, labels, gbm_oof_path) -> tuple[dict, dict]:
    """Per mode: the manifest-weighted mean of member OOF probabilities, per ID."""
    gbm = None
    if gbm_oof_path and Path(gbm_oof_path).is_file():
        gids, gcols = read_gbm_oof(gbm_oof_path)
        pos = {k: i for i, k in enumerate(gids)}
        common = [i for i, k in enumerate(ids) if k in pos]
        gbm = (gids, gcols, pos, common)
    results, probs = {}, {}
    for mode in MODES:
        members = [m for m in man["members"] if mode in m["modes"]]
        if not members:
            continue
        used, missing = [], []
        rows = np.arange(len(ids))
        if gbm is not None and any(m["kind"] != "onnx" for m in members):
            rows = np.array(gbm[3], dtype=np.int64)
        acc = np.zeros(len(rows))
        wsum = 0.0
        for m in members:
            w = float(m["weight"])
            if m["kind"] == "onnx":
                if m["name"] not in nn_oof:
                    missing.append(m["name"])
                    continue
                p = sigmoid(nn_oof[m["name"]])[rows]
            else:
                if gbm is None or m["name"] not in gbm[1]:
                    missing.append(m["name"])
                    continue
                gpos = np.array([gbm[2][ids[i]] for i in rows])
                p = gbm[1][m["name"]][gpos]
            acc += w * p
            wsum += w
            used.append(m["name"])
        if wsum <= 0 or len(rows) == 0:
            continue
        prob = acc / wsum
        y = np.asarray(labels)[rows]
        t = best_threshold(prob, y)
        res = {"members": used, "missing_oof": missing, "n": int(len(rows)),
               "at_threshold": binary_metrics(prob, y, t), "at_0.5": binary_metrics(prob, y, 0.5)}
        results[mode] = res
        probs[mode] = (rows, prob)
    return results, probs


def _versions() -> dict:
    out = {"python": platform.python_version(), "numpy": np.__version__}
    for mod in ("torch", "timm", "onnx", "onnxruntime", "sklearn"):
        try:
            out[mod] = __import__(mod).__version__
        except Exception:  # pragma: no cover
            pass
    return out


def merge_into_package(out_dir: Path, results: list, data: PatchData, recipe: dict, command: str,
                       gbm_oof_path, log=print) -> dict:
    """Replace the package's ONNX members by ours, keep every other member, set the
    per-mode thresholds from the whole-ensemble OOF, record metrics["nn_proxy"]."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    mpath = out_dir / "manifest.json"
    if mpath.is_file():
        man = json.loads(mpath.read_text(encoding="utf-8"))
    else:
        man = new_manifest(PACKAGE_NAME, "0.1.0", "Landslide patch classifier: neural members (no GBM members yet)")
    old_onnx = {m["file"] for m in man["members"] if m["kind"] == "onnx"}
    members = [m for m in man["members"] if m["kind"] != "onnx"]
    new_files = set()
    for r in results:
        cfg = r["cfg"]
        fname = f"{cfg.name}.onnx"
        shutil.copyfile(r["onnx"], out_dir / fname)
        new_files.add(fname)
        mm = r["metrics"]["onnx16" if r["fp16_ok"] else "onnx32"]
        members.append({
            "name": cfg.name, "kind": "onnx", "file": fname, "modes": list(cfg.modes),
            "weight": float(recipe.get("nn_weight", 1.0)),
            "inputs": cfg.inputs_manifest(), "output": "logit", "encoders": cfg.timm_names(),
            "encoder_keys": [e for _, e in cfg.encoders], "head": cfg.head,
            "flops_per_patch": r["flops"], "params": r["params"], "precision": r["precision"],
            **({"width": float(recipe["width"])} if recipe.get("width", 1.0) != 1.0 else {}),
            "description": (cfg.description + ". Trained from scratch on " + data.provenance["data"]
                            + f"; OOF F1 {mm['f1']:.3f} / AUC {mm['auc']:.3f} on that data"),
        })
    for f in old_onnx - new_files:  # files of ONNX members we no longer ship
        p = out_dir / f
        if p.is_file() and p.suffix == ".onnx":
            p.unlink()
    man["members"] = members
    for r in results:
        for mode in r["cfg"].modes:
            man["modes"].setdefault(mode, {"threshold": 0.5})
    nn_oof = {r["cfg"].name: r["oof_logit"] for r in results}
    ens, _ = ensemble_oof(man, nn_oof, data.ids, data.labels, gbm_oof_path)
    has_gbm = bool(gbm_oof_path) and Path(gbm_oof_path).is_file()
    gbm_note = (f"the GBM members' OOF probabilities from {Path(gbm_oof_path).name} (real per-patch features)"
                if has_gbm else "no GBM OOF (neural members only)")
    for mode, res in ens.items():
        man["modes"][mode]["threshold"] = res["at_threshold"]["threshold"]
        man["modes"][mode]["threshold_source"] = (
            f"F1-optimal on the whole-{mode} ensemble's out-of-fold probabilities over {res['n']} labelled "
            f"patches: the manifest-weighted mean, per ID, of the neural members' OOF on "
            f"{'synthetic proxy patches' if 'proxy' in data.provenance['data'] else 'the training patches'}"
            f"{' and ' if has_gbm else '; '}{gbm_note}; see metrics.nn_proxy.ensembles")
    man["metrics"]["nn_proxy"] = {
        "provenance": {
            **data.provenance, "command": command, "folds": recipe["folds"], "epochs": recipe["epochs"],
            "seed": recipe["seed"], "batch": recipe["batch"], "lr": recipe["lr"],
            "pretrained": recipe["pretrained"], "final_weights": "refit of the same recipe on all patches",
            "ensemble_weight_per_network": float(recipe.get("nn_weight", 1.0)),
            "ensemble_weight_note": NN_WEIGHT_NOTE if recipe.get("nn_weight", 1.0) != 1.0 else "equal weights",
            "oof": f"stratified {recipe['folds']}-fold out-of-fold, no test-time augmentation, member threshold 0.5",
            "ensemble_oof": ("per ID, the manifest-weighted mean of member OOF probabilities: neural members "
                             f"on the data above, {gbm_note}"),
            "fp16_rule": f"fp16 weight storage kept if |dF1| <= {FP16_TOL['f1']} and |dAUC| <= {FP16_TOL['auc']} "
                         "between fold models' OOF through onnxruntime fp32 vs fp16 weights",
            "versions": _versions(),
            "note": ("metrics of neural members on synthetic proxy data; they are not comparable with the "
                     "GBMs' real-feature metrics (metrics.gbm_real_features) nor with the paper's figures; "
                     "retraining on the real competition patches (train_nn --patches) reproduces the paper's setting"),
        },
        "members": {
            r["cfg"].name: {
                **{f"oof_{k}": v for k, v in r["metrics"]["onnx16" if r["fp16_ok"] else "onnx32"].items()
                   if k in ("f1", "precision", "recall", "auc")},
                "oof_torch": r["metrics"]["torch"], "oof_onnx_fp32": r["metrics"]["onnx32"],
                "oof_onnx_fp16_weights": r["metrics"]["onnx16"], "precision": r["precision"],
                "flops_per_patch": r["flops"], "params": r["params"], "train_seconds": r["train_seconds"],
                "torch_onnx_max_abs_diff": r["torch_onnx_max_abs_diff"],
                "file_bytes_fp32": r["fp32_bytes"], "file_bytes_fp16_weights": r["fp16_bytes"],
            } for r in results
        },
        "ensembles": ens,
        "total_flops_per_patch": {mode: int(sum(r["flops"] for r in results if mode in r["cfg"].modes))
                                  for mode in MODES},
    }
    write_manifest(out_dir, man)
    if log:
        for mode, res in ens.items():
            a = res["at_threshold"]
            log(f"ensemble {mode}: {len(res['members'])} members, threshold {a['threshold']}, "
                f"F1 {a['f1']:.3f} P {a['precision']:.3f} R {a['recall']:.3f} AUC {a['auc']:.3f}")
    return man


# ----------------------------------------------------------------------------- driver
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
