"""int8 networks where their out-of-fold metrics hold and they run faster (issue 5's lever).

``python -m sentinel_landslide.training.quantize [--package models/bundled]
(--proxy CSV | --patches DIR) [--ckpt build/nn_ckpt] [--apply]``  (``./build.sh int8``)

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

Why the bundled package stays fp16/fp32 (int8 scores depend on the batch, so on the
processing extent): README, "Speed and memory".
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
PRECISION = "int8 MatMul weights (onnxruntime dynamic quantisation{rr}); other weights fp32"


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


def assess(member: dict, d: Path, man: dict, data, tmp: Path, reduce_range: bool, batch: int, seconds: float,
           shipped: Path) -> dict:
    """Before/after of one member: OOF of the shipped precision vs int8, and speed."""
    from .nets import MEMBER_BY_NAME

    rec = json.loads((d / "config.json").read_text())["recipe"]
    cfg = MEMBER_BY_NAME[member["name"]]
    key = "onnx16" if str(member.get("precision", "")).startswith("fp16") else "onnx32"
    n = len(data)
    before, after = np.full(n, np.nan), np.full(n, np.nan)
    for f, (_tr, va) in enumerate(folds_for(data.labels, int(rec["folds"]), int(rec["seed"]))):
        with np.load(d / f"fold{f}_oof.npz") as z:
            before[va] = z[key]
        q = quantize(d / f"fold{f}.onnx", tmp / f"{member['name']}_fold{f}.int8.onnx", reduce_range)
        after[va] = predict_onnx(q, cfg, data, va, man, threads=2)
    final = quantize(d / "final.onnx", tmp / f"{member['name']}.int8.onnx", reduce_range)
    m0, m1 = binary_metrics(sigmoid(before), data.labels), binary_metrics(sigmoid(after), data.labels)
    t0, t1 = ms_per_patch(shipped, batch, seconds), ms_per_patch(final, batch, seconds)
    return {"member": member["name"], "shipped_precision": member.get("precision", "fp32"),
            "oof_shipped": _short(m0), "oof_int8": _short(m1),
            "d_f1": round(m1["f1"] - m0["f1"], 4), "d_auc": round(m1["auc"] - m0["auc"], 4),
            "oof_max_abs_logit_diff": round(float(np.max(np.abs(before - after))), 4),
            "ms_per_patch_shipped": round(t0, 3), "ms_per_patch_int8": round(t1, 3), "speedup": round(t0 / t1, 2),
            "bytes_shipped": shipped.stat().st_size, "bytes_int8": final.stat().st_size,
            "_final": final, "_oof_int8": after, "_oof_shipped": before}


def run(package: Path, data, ckpt: Path, apply: bool = False, reduce_range: bool = True, min_speedup: float = 1.1,
        tol: dict | None = None, gbm_oof=DEFAULT_GBM_OOF, batch: int = 40, seconds: float = 3.0, command: str = "",
        log=print) -> list[dict]:
    tol = tol or INT8_TOL
    log = log or (lambda *_: None)
    pkg = load_package(package)
    man = pkg.manifest
    prov = man.get("metrics", {}).get("nn_proxy", {}).get("provenance", {})
    rows = []
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        for m in [m for m in man["members"] if m["kind"] == "onnx"]:
            if str(m.get("precision", "")).startswith("int8"):
                log(json.dumps({"member": m["name"], "skipped": "already int8"}))
                continue
            d = fold_dir(ckpt, m, prov)
            if d is None:
                log(json.dumps({"member": m["name"], "skipped": f"no fold checkpoints of this training run in {ckpt}"}))
                continue
            r = assess(m, d, man, data, tmp, reduce_range, batch, seconds, pkg.path(m))
            # "hold": not worse by more than the tolerance (a gain is no reason to refuse)
            r["adopt"] = bool(r["d_f1"] >= -tol["f1"] and r["d_auc"] >= -tol["auc"] and r["speedup"] >= min_speedup)
            log(json.dumps({k: v for k, v in r.items() if not k.startswith("_")}))
            rows.append(r)
        if apply and any(r["adopt"] for r in rows):
            with _replacing(Path(package)) as replace:
                _apply(Path(package), man, rows, data, tol, min_speedup, reduce_range, gbm_oof, command, log, replace)
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
           replace) -> None:
    by = {r["member"]: r for r in rows}
    proxy = man["metrics"]["nn_proxy"]
    precision = PRECISION.format(rr=", 7-bit range" if reduce_range else "")
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
            f"; OOF F1 {r['oof_int8']['f1']:.3f} / AUC {r['oof_int8']['auc']:.3f} on that data (int8 MatMul weights)")
    # the whole-ensemble OOF with each member's shipped precision, and the thresholds from it
    nn_oof = {r["member"]: (r["_oof_int8"] if r["adopt"] else r["_oof_shipped"]) for r in rows}
    ens, _ = ensemble_oof(man, nn_oof, data.ids, data.labels, gbm_oof)
    for mode, res in ens.items():
        if res["missing_oof"]:
            log(f"ensemble {mode}: OOF missing for {res['missing_oof']}; thresholds kept")
            continue
        proxy["ensembles"][mode] = res
        man["modes"][mode]["threshold"] = res["at_threshold"]["threshold"]
        a = res["at_threshold"]
        log(f"ensemble {mode}: threshold {a['threshold']}, F1 {a['f1']:.4f} AUC {a['auc']:.4f}")
    proxy["provenance"]["int8_rule"] = (
        f"MatMul weights stored as int8 ({precision}) where OOF F1 fell by <= {tol['f1']} and AUC by <= {tol['auc']} from "
        f"the fold models' OOF in the shipped precision to int8, and the member ran >= {min_speedup}x faster "
        "on one single-threaded session; each member's numbers are in members.<name>.int8_assessment")
    proxy["provenance"]["int8_command"] = command
    write_manifest(folder, man)


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
    a = ap.parse_args(argv)
    man = load_package(a.package).manifest
    prov = man.get("metrics", {}).get("nn_proxy", {}).get("provenance", {})
    if a.proxy:
        data = load_proxy_data(a.proxy, seed=int(prov.get("proxy_seed", 42)))
    else:
        data = load_folder_data(a.patches)
    command = "python -m sentinel_landslide.training.quantize " + " ".join(
        (Path(x).name if x.startswith("/") else x) for x in (argv if argv is not None else sys.argv[1:]))
    rows = run(Path(a.package), data, Path(a.ckpt), apply=a.apply, reduce_range=not a.full_range,
               min_speedup=a.min_speedup, gbm_oof=a.gbm_oof, batch=a.batch, seconds=a.seconds, command=command)
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
