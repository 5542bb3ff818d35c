"""int8 networks where their out-of-fold metrics hold and they run faster (issue 5's lever).

``python -m sentinel_landslide.training.quantize [--package models/bundled]
(--proxy CSV | --patches DIR) [--ckpt build/nn_ckpt] [--static] [--apply]``  (``./build.sh int8``)

``--static`` (issue 22): static QDQ quantisation instead of dynamic, see ``quantize_static_qdq``
and "Static mode" below.

For each network of the package, onnxruntime's dynamic quantisation stores the MatMul
weights as int8 (7-bit range by default: onnxruntime's advice for CPUs without VNNI, whose
u8 x s8 kernels can saturate; convolutions stay fp32, quantising them was slower here).
Then

* every fold model of the member's training run (``--ckpt``, the same width, folds, epochs,
  seed and data size as the manifest records) is quantised the same way and scores its own
  validation patches; the int8 OOF F1 (threshold 0.5) and AUC are compared with those of the
  precision the package ships (fp16 weights or fp32: the logits the training run stored);
* the final model is quantised and timed against the shipped file: one single-threaded
  session each on batches of ``--batch`` patches, as one runtime lane runs them.

A member is switched to int8 only if its OOF F1 drops by at most 0.002 and its AUC by at
most 0.001 (fp16 storage's tolerances) and it is at least ``--min-speedup`` times faster.  Without ``--apply``
this only reports (one JSON line per member and a table).  With it, adopted members'
files are replaced, their ``precision`` says so, their OOF metrics become the int8 ones,
the whole-ensemble OOF metrics and per-mode thresholds are recomputed, and the manifest
records the rule, every member's before/after and the command.  Retraining
(``train_nn``) writes fp16/fp32 files again; run this after it.

Why the bundled package stays fp16/fp32 (dynamic int8 scores depend on the batch, so on the
processing extent; static int8 awaits the OOF check on the training run's fold checkpoints):
docs/concepts/cascade.md, "int8".

Static mode (``--static``): every Conv, MatMul and Gemm gets int8 weights (per output
channel, 7-bit range unless ``--full-range``) and uint8 activations whose scales were
fixed once from calibration patches (``--calib`` patches of the training data: for a fold
model a seeded sample of its own training folds, never its validation fold; for the final
model of all patches).  Nothing is computed from the batch at run time, so a patch's
score does not depend on its neighbours (checked per member: ``batch_max_abs_diff``,
the most a patch's logit moves between batches of other patches and sizes).  The rule is
the issue's: OOF F1 and AUC within 0.003 and at least ``--min-speedup`` faster.  Members
without fold checkpoints are measured but never adopted: speed, batch independence and
the agreement of the final model's int8 and shipped scores on ``--agree`` training
patches (in-sample, NOT out-of-fold; ``final_on_train_*``).
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from ..models.package import BUNDLED, load_package, write_manifest
from .metrics import binary_metrics, sigmoid
from .nn_data import load_folder_data, load_proxy_data
from .nn_export import FP16_TOL, ensemble_oof
from .nn_loop import folds_for, predict_onnx
from .train_nn import DEFAULT_CKPT, DEFAULT_GBM_OOF

INT8_TOL = dict(FP16_TOL)
STATIC_TOL = {"f1": 0.003, "auc": 0.003}  # issue 22's rule for static int8
PRECISION = "int8 MatMul weights (onnxruntime dynamic quantisation{rr}); other weights fp32"
PRECISION_STATIC = ("int8 QDQ (onnxruntime static quantisation: Conv/MatMul/Gemm, per-channel int8 weights{rr}, "
                    "uint8 activations with calibrated scales)")
STATIC_OPS = ("Conv", "MatMul", "Gemm")
CALIB_BATCH = 16


def quantize(src: Path, dst: Path, reduce_range: bool = True) -> Path:
    import logging

    from onnxruntime.quantization import QuantType, quantize_dynamic

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # the quantiser logs "consider pre-processing" on the root logger
    try:
        quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul"],
                         reduce_range=reduce_range)
    finally:
        root.setLevel(level)
    return dst


def to_fp32_weights(src: Path, dst: Path) -> Path:
    """Undo ``nn_export.to_fp16_weights``: each fp16 initializer read through a Cast to
    float32 becomes a float32 initializer again (exact: fp16 -> fp32 loses nothing), so the
    quantiser sees the weights as weights."""
    import onnx
    from onnx import TensorProto, numpy_helper

    m = onnx.load(str(src))
    g = m.graph
    inits = {i.name: i for i in g.initializer}
    folded, keep_nodes = set(), []
    new_inits = []
    for node in g.node:
        if (node.op_type == "Cast" and len(node.input) == 1 and node.input[0] in inits
                and inits[node.input[0]].data_type == TensorProto.FLOAT16
                and next(a.i for a in node.attribute if a.name == "to") == TensorProto.FLOAT):
            arr = numpy_helper.to_array(inits[node.input[0]]).astype(np.float32)
            new_inits.append(numpy_helper.from_array(arr, node.output[0]))
            folded.add(node.input[0])
            continue
        keep_nodes.append(node)
    used = {x for n in keep_nodes for x in n.input}
    kept = [i for i in g.initializer if i.name not in folded or i.name in used]
    del g.initializer[:]
    g.initializer.extend(kept + new_inits)
    del g.node[:]
    g.node.extend(keep_nodes)
    onnx.checker.check_model(m)
    onnx.save_model(m, str(dst))
    return Path(dst)


class _Calibration:
    """onnxruntime's CalibrationDataReader over preprocessed patches, CALIB_BATCH at a time."""

    def __init__(self, batches: list):
        self._it = iter(batches)

    def get_next(self):
        return next(self._it, None)

    def rewind(self):  # pragma: no cover - only some calibrators call it
        pass


def member_batches(member: dict, man: dict, data, idx, batch: int = CALIB_BATCH) -> list:
    """The network inputs of patches ``idx`` of ``data``, preprocessed as at detection."""
    from ..models.ensemble import norm_constants
    from .nn_data import fill_invalid, member_feeds

    consts = norm_constants(member["inputs"], man["normalisation"])
    offset = float(man["s2_convention"]["offset"])
    idx = np.asarray(idx)
    return [member_feeds(fill_invalid(data.take(idx[s:s + batch]), man["normalisation"]), member["inputs"],
                         man["normalisation"], offset, consts) for s in range(0, len(idx), batch)]


def quantize_static_qdq(src: Path, dst: Path, calib: list, reduce_range: bool = True,
                        ops=STATIC_OPS) -> Path:
    """Static QDQ quantisation of ``src`` (fp16 or fp32 weights) with activation scales
    from ``calib`` (a list of feed dicts): per-channel int8 weights, uint8 activations
    (onnxruntime's advice for x86 CPUs; 7-bit weights without VNNI)."""
    import logging

    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with tempfile.TemporaryDirectory() as t:
            fp32 = to_fp32_weights(src, Path(t) / "fp32.onnx")
            quantize_static(str(fp32), str(dst), _Calibration(calib), quant_format=QuantFormat.QDQ,
                            op_types_to_quantize=list(ops), per_channel=True, reduce_range=reduce_range,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            calibrate_method=CalibrationMethod.MinMax,
                            extra_options={"WeightSymmetric": True, "ActivationSymmetric": False})
    finally:
        root.setLevel(level)
    return Path(dst)


def _session(path: Path, threads: int = 1):
    import onnxruntime as ort

    from ..models.ensemble import session_options

    return ort.InferenceSession(str(path), session_options(ort, threads), providers=["CPUExecutionProvider"])


def _logits(sess, feeds: dict) -> np.ndarray:
    return np.asarray(sess.run(None, feeds)[0], dtype=np.float64).reshape(-1)


def batch_dependence(path: Path, batches: list, sizes=(2, 8, 40), seed: int = 0) -> float:
    """The most any patch's logit moves between the batches it can be scored in: its own
    batch, the same patches shuffled among others, and sub-batches of ``sizes`` (a lone
    patch is scored as a pair at detection).  0.0 for a batch-independent network."""
    sess = _session(path)
    feeds = {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}
    n = len(next(iter(feeds.values())))
    ref = _logits(sess, feeds)
    worst = 0.0
    rng = np.random.default_rng(seed)
    perm = rng.permutation(n)
    got = np.empty(n)
    got[perm] = _logits(sess, {k: np.ascontiguousarray(v[perm]) for k, v in feeds.items()})
    worst = max(worst, float(np.max(np.abs(got - ref))))
    for size in sizes:
        size = min(size, n)
        got = np.concatenate([_logits(sess, {k: v[s:s + size] for k, v in feeds.items()})
                              for s in range(0, n - size + 1, size)])
        worst = max(worst, float(np.max(np.abs(got - ref[:len(got)]))))
    return worst


def ms_per_patch(path: Path, batch: int = 40, seconds: float = 3.0) -> float:
    """Median ms per patch of one single-threaded session on random inputs (the cost does
    not depend on the values)."""
    import onnxruntime as ort

    o = ort.SessionOptions()
    o.intra_op_num_threads = o.inter_op_num_threads = 1
    s = ort.InferenceSession(str(path), o, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    feeds = {i.name: rng.normal(0, 1, [d if isinstance(d, int) else batch for d in i.shape]).astype(np.float32)
             for i in s.get_inputs()}
    s.run(None, feeds)
    runs: list = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end or len(runs) < 3:
        t = time.perf_counter()
        s.run(None, feeds)
        runs.append(time.perf_counter() - t)
    return statistics.median(runs) / batch * 1e3


def fold_dir(ckpt: Path, member: dict, prov: dict) -> Path | None:
    """The checkpoint folder of the package's training run of ``member`` (same width,
    folds, epochs, seed and number of patches as the manifest records), every fold done."""
    for d in sorted(Path(ckpt).glob(f"{member['name']}_*")):
        try:
            conf = json.loads((d / "config.json").read_text())
            rec, n = conf["recipe"], conf["data"].get("n")
        except (OSError, ValueError, KeyError, AttributeError):
            continue
        k = int(rec.get("folds", 0))
        same = (float(rec.get("width", 1.0)) == float(member.get("width", 1.0)) and k == prov.get("folds")
                and rec.get("epochs") == prov.get("epochs") and rec.get("seed") == prov.get("seed")
                and n == prov.get("n"))
        done = all((d / f"fold{f}.onnx").is_file() and (d / f"fold{f}_oof.npz").is_file() for f in range(k))
        if same and done and (d / "final.onnx").is_file():
            return d
    return None


def _short(m: dict) -> dict:
    return {k: round(float(m[k]), 4) for k in ("f1", "precision", "recall", "auc")}


def quantizer(static: bool, reduce_range: bool, member: dict, man: dict, data, calib: int = 256, seed: int = 0):
    """``q(src, dst, train_idx)``: dynamic quantisation, or static QDQ calibrated on a
    seeded sample of ``calib`` of the patches ``train_idx`` the model was trained on."""
    if not static:
        return lambda src, dst, _train_idx: quantize(src, dst, reduce_range)

    def q(src, dst, train_idx):
        train_idx = np.asarray(train_idx)
        pick = np.sort(np.random.default_rng(seed).choice(train_idx, min(calib, len(train_idx)), replace=False))
        return quantize_static_qdq(src, dst, member_batches(member, man, data, pick), reduce_range)
    return q


def assess(member: dict, d: Path, man: dict, data, tmp: Path, reduce_range: bool, batch: int, seconds: float,
           shipped: Path, static: bool = False, calib: int = 256) -> dict:
    """Before/after of one member: OOF of the shipped precision vs int8, and speed."""
    from .nets import MEMBER_BY_NAME

    rec = json.loads((d / "config.json").read_text())["recipe"]
    cfg = MEMBER_BY_NAME[member["name"]]
    key = "onnx16" if str(member.get("precision", "")).startswith("fp16") else "onnx32"
    n = len(data)
    quant = quantizer(static, reduce_range, member, man, data, calib)
    before, after = np.full(n, np.nan), np.full(n, np.nan)
    for f, (tr, va) in enumerate(folds_for(data.labels, int(rec["folds"]), int(rec["seed"]))):
        with np.load(d / f"fold{f}_oof.npz") as z:
            before[va] = z[key]
        q = quant(d / f"fold{f}.onnx", tmp / f"{member['name']}_fold{f}.int8.onnx", tr)
        after[va] = predict_onnx(q, cfg, data, va, man, threads=2)
    final = quant(d / "final.onnx", tmp / f"{member['name']}.int8.onnx", np.arange(n))
    m0, m1 = binary_metrics(sigmoid(before), data.labels), binary_metrics(sigmoid(after), data.labels)
    t0, t1 = ms_per_patch(shipped, batch, seconds), ms_per_patch(final, batch, seconds)
    return {"member": member["name"], "shipped_precision": member.get("precision", "fp32"),
            "oof_shipped": _short(m0), "oof_int8": _short(m1),
            "d_f1": round(m1["f1"] - m0["f1"], 4), "d_auc": round(m1["auc"] - m0["auc"], 4),
            "oof_max_abs_logit_diff": round(float(np.max(np.abs(before - after))), 4),
            "ms_per_patch_shipped": round(t0, 3), "ms_per_patch_int8": round(t1, 3), "speedup": round(t0 / t1, 2),
            "bytes_shipped": shipped.stat().st_size, "bytes_int8": final.stat().st_size,
            "_final": final, "_oof_int8": after, "_oof_shipped": before}


def measure_static(member: dict, man: dict, data, tmp: Path, shipped: Path, reduce_range: bool = True,
                   batch: int = 40, seconds: float = 3.0, calib: int = 256, agree: int = 512) -> dict:
    """Without fold checkpoints: the shipped file quantised statically (calibrated on
    ``calib`` patches of ``data``), its speed, batch dependence, and the agreement of its
    scores with the shipped file's on ``agree`` other patches of ``data``: the final
    model's training data, so in-sample, NOT out-of-fold.  Never adopted."""
    n = len(data)
    order = np.random.default_rng(1).permutation(n)
    cal, ev = np.sort(order[:min(calib, n // 2)]), np.sort(order[min(calib, n // 2):][:agree])
    q = quantize_static_qdq(shipped, tmp / f"{member['name']}.int8.onnx", member_batches(member, man, data, cal),
                            reduce_range)
    ev_batches = member_batches(member, man, data, ev, batch=batch)
    s0, s1 = _session(shipped, 2), _session(q, 2)
    l0 = np.concatenate([_logits(s0, b) for b in ev_batches])
    l1 = np.concatenate([_logits(s1, b) for b in ev_batches])
    y = data.labels[ev]
    m0, m1 = binary_metrics(sigmoid(l0), y), binary_metrics(sigmoid(l1), y)
    t0, t1 = ms_per_patch(shipped, batch, seconds), ms_per_patch(q, batch, seconds)
    dep = ev_batches[: max(1, 80 // batch)]
    return {"member": member["name"], "shipped_precision": member.get("precision", "fp32"),
            "mode": "static QDQ, no fold checkpoints: final model only, in-sample agreement (NOT OOF)",
            "calibration_patches": int(len(cal)), "agreement_patches": int(len(ev)),
            "final_on_train_shipped": _short(m0), "final_on_train_int8": _short(m1),
            "final_on_train_d_f1": round(m1["f1"] - m0["f1"], 4), "final_on_train_d_auc": round(m1["auc"] - m0["auc"], 4),
            "max_abs_logit_diff": round(float(np.max(np.abs(l1 - l0))), 4),
            "max_abs_prob_diff": round(float(np.max(np.abs(sigmoid(l1) - sigmoid(l0)))), 4),
            "mean_abs_prob_diff": round(float(np.mean(np.abs(sigmoid(l1) - sigmoid(l0)))), 5),
            "batch_max_abs_diff_int8": batch_dependence(q, dep),
            "batch_max_abs_diff_shipped": batch_dependence(shipped, dep),
            "ms_per_patch_shipped": round(t0, 3), "ms_per_patch_int8": round(t1, 3), "speedup": round(t0 / t1, 2),
            "bytes_shipped": shipped.stat().st_size, "bytes_int8": q.stat().st_size, "adopt": False,
            "why_not": "no fold checkpoints of this training run: OOF metrics not measured"}


def run(package: Path, data, ckpt: Path, apply: bool = False, reduce_range: bool = True, min_speedup: float = 1.1,
        tol: dict | None = None, gbm_oof=DEFAULT_GBM_OOF, batch: int = 40, seconds: float = 3.0, command: str = "",
        log=print, static: bool = False, calib: int = 256, agree: int = 512, only=None) -> list[dict]:
    tol = tol or (STATIC_TOL if static else INT8_TOL)
    log = log or (lambda *_: None)
    pkg = load_package(package)
    man = pkg.manifest
    prov = man.get("metrics", {}).get("nn_proxy", {}).get("provenance", {})
    rows = []
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        for m in [m for m in man["members"] if m["kind"] == "onnx" and (not only or m["name"] in only)]:
            if str(m.get("precision", "")).startswith("int8"):
                log(json.dumps({"member": m["name"], "skipped": "already int8"}))
                continue
            d = fold_dir(ckpt, m, prov) if len(data) == prov.get("n") else None
            if d is None:
                why = f"no fold checkpoints of this training run (on all {prov.get('n')} patches) in {ckpt}"
                if not static:
                    log(json.dumps({"member": m["name"], "skipped": why}))
                    continue
                r = measure_static(m, man, data, tmp, pkg.path(m), reduce_range, batch, seconds, calib, agree)
                r["why_not"] = why + ": OOF metrics not measured"
                log(json.dumps(r))
                rows.append(r)
                continue
            r = assess(m, d, man, data, tmp, reduce_range, batch, seconds, pkg.path(m), static, calib)
            if static:
                some = member_batches(m, man, data, np.arange(min(80, len(data))))
                r["batch_max_abs_diff_int8"] = batch_dependence(r["_final"], some)
            # "hold": not worse by more than the tolerance (a gain is no reason to refuse)
            r["adopt"] = bool(r["d_f1"] >= -tol["f1"] and r["d_auc"] >= -tol["auc"] and r["speedup"] >= min_speedup)
            log(json.dumps({k: v for k, v in r.items() if not k.startswith("_")}))
            rows.append(r)
        # the assessment goes into the manifest whenever it was measured out of fold, adopted or not:
        # the manifest says which members are int8 and, for the others, why not
        if apply and any("oof_int8" in r for r in rows):
            with _replacing(Path(package)) as replace:
                _apply(Path(package), man, rows, data, tol, min_speedup, reduce_range, gbm_oof, command, log, replace,
                       static)
    return rows


@contextmanager
def _replacing(folder: Path):
    """``replace(name, new_file)`` inside the block; if the block fails, every replaced file
    is put back, so a failure before the new manifest is written leaves the package whole."""
    backup = Path(tempfile.mkdtemp(prefix="int8_backup_"))
    done: list = []

    def replace(name: str, new: Path) -> None:
        shutil.copyfile(folder / name, backup / name)
        done.append(name)
        shutil.copyfile(new, folder / name)

    try:
        yield replace
    except BaseException:
        for name in done:
            shutil.copyfile(backup / name, folder / name)
        raise
    finally:
        shutil.rmtree(backup, ignore_errors=True)


def _apply(folder: Path, man: dict, rows: list, data, tol, min_speedup, reduce_range, gbm_oof, command, log,
           replace, static: bool = False) -> None:
    by = {r["member"]: r for r in rows if "oof_int8" in r}
    proxy = man["metrics"]["nn_proxy"]
    precision = (PRECISION_STATIC if static else PRECISION).format(rr=", 7-bit range" if reduce_range else "")
    for m in man["members"]:
        r = by.get(m["name"])
        if r is None:
            continue
        rec = proxy["members"].setdefault(m["name"], {})
        rec["int8_assessment"] = {k: v for k, v in r.items() if not k.startswith("_")}
        if not r["adopt"]:
            continue
        replace(m["file"], r["_final"])
        m["precision"] = rec["precision"] = precision
        rec.update({f"oof_{k}": v for k, v in r["oof_int8"].items()})
        rec["oof_onnx_int8"] = r["oof_int8"]
        m["description"] = m["description"].rsplit("; OOF F1", 1)[0] + (
            f"; OOF F1 {r['oof_int8']['f1']:.3f} / AUC {r['oof_int8']['auc']:.3f} on that data "
            f"({'int8 QDQ' if static else 'int8 MatMul weights'})")
    # the whole-ensemble OOF with each member's shipped precision, and the thresholds from it
    # (unchanged, and not recomputed, when no member was switched)
    nn_oof = {r["member"]: (r["_oof_int8"] if r["adopt"] else r["_oof_shipped"]) for r in by.values()}
    ens = ensemble_oof(man, nn_oof, data.ids, data.labels, gbm_oof)[0] if any(r["adopt"] for r in by.values()) else {}
    for mode, res in ens.items():
        if res["missing_oof"]:
            log(f"ensemble {mode}: OOF missing for {res['missing_oof']}; thresholds kept")
            continue
        proxy["ensembles"][mode] = res
        man["modes"][mode]["threshold"] = res["at_threshold"]["threshold"]
        a = res["at_threshold"]
        log(f"ensemble {mode}: threshold {a['threshold']}, F1 {a['f1']:.4f} AUC {a['auc']:.4f}")
    proxy["provenance"]["int8_rule"] = (
        f"{'int8 QDQ network' if static else 'MatMul weights stored as int8'} ({precision}) where OOF F1 fell by "
        f"<= {tol['f1']} and AUC by <= {tol['auc']} from "
        f"the fold models' OOF in the shipped precision to int8, and the member ran >= {min_speedup}x faster "
        "on one single-threaded session; each member's numbers are in members.<name>.int8_assessment; int8 members: "
        + (", ".join(r["member"] for r in by.values() if r["adopt"]) or "none"))
    proxy["provenance"]["int8_command"] = command
    write_manifest(folder, man)


def table_static(rows: list) -> str:
    """Markdown table of ``measure_static`` rows (no fold checkpoints: not OOF)."""
    out = ["| member | ms/patch shipped | int8 QDQ | speed-up | max abs logit diff across batches, int8 (shipped) | "
           "final model on its training patches, int8 vs shipped: max / mean abs prob diff | F1 shipped -> int8 | "
           "AUC shipped -> int8 |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        a0, a1 = r["final_on_train_shipped"], r["final_on_train_int8"]
        out.append(f"| {r['member']} | {r['ms_per_patch_shipped']:.2f} | {r['ms_per_patch_int8']:.2f} | "
                   f"{r['speedup']:.2f}x | {r['batch_max_abs_diff_int8']:.1e} ({r['batch_max_abs_diff_shipped']:.1e}) | "
                   f"{r['max_abs_prob_diff']:.4f} / {r['mean_abs_prob_diff']:.5f} | {a0['f1']:.4f} -> {a1['f1']:.4f} | "
                   f"{a0['auc']:.4f} -> {a1['auc']:.4f} |")
    t0, t1 = sum(r["ms_per_patch_shipped"] for r in rows), sum(r["ms_per_patch_int8"] for r in rows)
    out.append(f"| all measured networks | {t0:.2f} | {t1:.2f} | {t0 / t1:.2f}x | | | | |")
    return "\n".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--package", default=str(BUNDLED))
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--proxy", help="the per-patch feature table the package's networks were trained on")
    src.add_argument("--patches", help="the patch folder they were trained on")
    ap.add_argument("--ckpt", default=str(DEFAULT_CKPT))
    ap.add_argument("--gbm-oof", default=str(DEFAULT_GBM_OOF))
    ap.add_argument("--apply", action="store_true", help="write the adopted int8 members into the package")
    ap.add_argument("--full-range", action="store_true", help="8-bit weights (only for CPUs with VNNI)")
    ap.add_argument("--min-speedup", type=float, default=1.1)
    ap.add_argument("--batch", type=int, default=40)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--static", action="store_true", help="static QDQ quantisation with calibration (batch-independent)")
    ap.add_argument("--calib", type=int, default=256, help="calibration patches (--static)")
    ap.add_argument("--agree", type=int, default=512,
                    help="patches for the int8 vs shipped agreement when there are no fold checkpoints (--static)")
    ap.add_argument("--limit", type=int, default=None,
                    help="only the first N patches of --proxy (no OOF then: a quick measurement, --static)")
    ap.add_argument("--only", nargs="*", default=None, help="network names (default: all)")
    a = ap.parse_args(argv)
    man = load_package(a.package).manifest
    prov = man.get("metrics", {}).get("nn_proxy", {}).get("provenance", {})
    if a.proxy:
        data = load_proxy_data(a.proxy, seed=int(prov.get("proxy_seed", 42)), limit=a.limit)
    else:
        data = load_folder_data(a.patches)
    command = "python -m sentinel_landslide.training.quantize " + " ".join(
        (Path(x).name if x.startswith("/") else x) for x in (argv if argv is not None else sys.argv[1:]))
    rows = run(Path(a.package), data, Path(a.ckpt), apply=a.apply, reduce_range=not a.full_range,
               min_speedup=a.min_speedup, gbm_oof=a.gbm_oof, batch=a.batch, seconds=a.seconds, command=command,
               static=a.static, calib=a.calib, agree=a.agree, only=a.only)
    measured = [r for r in rows if "oof_int8" not in r]
    if measured:
        print(f"\n`{command}`\n")
        print(table_static(measured))
    rows = [r for r in rows if "oof_int8" in r]
    if not rows:
        return 0
    print("\n| member | ms/patch shipped | int8 | speed-up | OOF F1 shipped -> int8 | OOF AUC | adopted |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['member']} | {r['ms_per_patch_shipped']:.2f} | {r['ms_per_patch_int8']:.2f} | {r['speedup']:.2f}x | "
              f"{r['oof_shipped']['f1']:.4f} -> {r['oof_int8']['f1']:.4f} | "
              f"{r['oof_shipped']['auc']:.4f} -> {r['oof_int8']['auc']:.4f} | {'yes' if r['adopt'] else 'no'} |")
    if rows:
        a0 = sum(r["ms_per_patch_shipped"] for r in rows)
        a1 = sum(r["ms_per_patch_int8"] if r["adopt"] else r["ms_per_patch_shipped"] for r in rows)
        print(f"| all networks, adopted ones int8 | {a0:.2f} | {a1:.2f} | {a0 / a1:.2f}x | | | |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
