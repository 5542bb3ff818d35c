"""The training loop of one neural member: seeded augmentation, BCE + soft-F1 loss,
AdamW with a warmed-up cosine schedule, per-epoch checkpoints (resumable), K-fold OOF
through torch and onnxruntime (fp32 and fp16 weights), and the refit on all data."""
from __future__ import annotations

import hashlib
import json
import math
import os
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from ..models.ensemble import norm_constants
from .metrics import binary_metrics, sigmoid
from .nn_data import PatchData, TrainingCancelled, fill_invalid, member_feeds
from .nn_export import FP16_TOL, export_onnx, to_fp16_weights

RECIPE_VERSION = 1


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


def soft_f1_loss(logits, y):
    import torch

    p = torch.sigmoid(logits)
    tp = (p * y).sum()
    fp = (p * (1 - y)).sum()
    fn = ((1 - p) * y).sum()
    return 1 - 2 * tp / (2 * tp + fp + fn + 1e-7)


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
