"""A cost-identical stand-in for the bundled model package, for benchmarking before (or
without) the trained one.

The seven neural members are the very architectures of ``training/nets.py``
(``nets.MEMBERS``) with seeded RANDOM weights, exported to ONNX exactly as a trained
member would be (opset 17, dynamic batch, weights inside the file); their
``flops_per_patch`` is counted with torch's FlopCounterMode at export.  The GBMs are
copied from the bundled package when it has them; otherwise LightGBM / XGBoost are
trained on the real feature table with training/train_gbm.py's hyper-parameters
and rounds, so their prediction cost matches the bundled ones.  Predictions are meaningless: this is for timing only,
and the manifest says so.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from ..models.package import BUNDLED, MODES, load_package, new_manifest, write_manifest

FEATURE_TABLE = Path(__file__).resolve().parents[2] / "shared" / "data" / "zindi" / "train_features_7147.csv.gz"


def _export_onnx(model, cfg, path: Path) -> None:
    import torch

    from ..training import nets

    model.eval()
    xs = nets.example_inputs(cfg, 2)
    names = list(cfg.groups)
    kw = dict(input_names=names, output_names=["logit"], opset_version=17,
              dynamic_axes={**{n: {0: "batch"} for n in names}, "logit": {0: "batch"}})
    try:
        torch.onnx.export(model, xs, str(path), dynamo=False, **kw)
    except TypeError:  # older torch without the dynamo switch
        torch.onnx.export(model, xs, str(path), **kw)


def _train_gbms(folder: Path, manifest: dict, threads: int = 2) -> None:
    """LightGBM + XGBoost for the combined mode with training/train_gbm.py's own
    hyper-parameters and rounds (so their prediction cost is the bundled one's)."""
    from ..core.features import feature_matrix, feature_names
    from ..training import train_gbm
    from ..training.feature_table import load_feature_table

    _ids, y, table = load_feature_table(str(FEATURE_TABLE))
    names = list(feature_names("combined"))
    X = feature_matrix(table, names)
    lgb = train_gbm.fit_lgb(X, y, names, train_gbm.LGB_ROUNDS["combined"], 0, threads)
    lgb.save_model(str(folder / "standin_lgbm_combined.txt"))
    xgb = train_gbm.fit_xgb(X, y, names, train_gbm.XGB_ROUNDS["combined"], 0, threads)
    xgb.save_model(str(folder / "standin_xgb_combined.json"))
    for name, kind, f in (("lgbm_combined", "lightgbm", "standin_lgbm_combined.txt"),
                          ("xgb_combined", "xgboost", "standin_xgb_combined.json")):
        manifest["members"].append({"name": name, "kind": kind, "file": f, "modes": ["combined"],
                                    "weight": 1.0, "inputs": {"features": names}})


def build_standin_package(folder: str | Path, seed: int = 0, log=print) -> Path:
    """Write (once) the stand-in package into ``folder``; returns the folder."""
    import torch

    from ..training import nets

    folder = Path(folder)
    if (folder / "manifest.json").exists():
        return folder
    tmp = folder.with_name(folder.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    man = new_manifest("sentinel-landslide STAND-IN (random NN weights, timing only)", "0",
                       "Benchmark stand-in: nets.MEMBERS architectures with random weights; "
                       "predictions are meaningless.")
    man["modes"] = {name: {"threshold": 0.5} for name in MODES}  # every input combination
    torch.manual_seed(seed)
    for cfg in nets.MEMBERS:
        model = nets.build_member(cfg)
        flops = nets.count_flops(model)
        f = f"{cfg.name}.onnx"
        _export_onnx(model, cfg, tmp / f)
        man["members"].append({"name": cfg.name, "kind": "onnx", "file": f, "modes": list(cfg.modes),
                               "weight": 1.0, "inputs": cfg.inputs_manifest(), "output": "logit",
                               "flops_per_patch": flops, "timm": cfg.timm_names()})
        log(f"stand-in: exported {cfg.name} ({flops / 1e6:.1f} MFLOP/patch)")
    bundled = None
    try:
        bundled = load_package(BUNDLED)
    except Exception:  # noqa: BLE001 - absent or mid-rebuild: train our own
        pass
    gbms = [m for m in (bundled.manifest["members"] if bundled else []) if m["kind"] != "onnx"]
    if any("s2+desc+asc" in m["modes"] for m in gbms):
        for m in gbms:
            shutil.copy2(bundled.path(m), tmp / m["file"])
            man["members"].append({k: v for k, v in m.items() if k != "sha256"})
        log(f"stand-in: GBMs copied from the bundled package ({len(gbms)})")
    else:
        log("stand-in: training LightGBM and XGBoost (train_gbm's settings) on the real features")
        _train_gbms(tmp, man)
    man["metrics"] = {"note": "stand-in: random neural weights, no metrics"}
    write_manifest(tmp, man)
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
    (folder / "STANDIN.json").write_text(json.dumps({"seed": seed}))
    return folder


def complete_with_standin_gbms(pkg_dir: str | Path, standin_dir: str | Path, out: str | Path, log=print) -> Path:
    """A copy of ``pkg_dir`` (e.g. the bundled package while its GBMs are still being
    rebuilt) with the stand-in's combined-mode GBMs added, for timing the full ensemble."""
    src, std, out = Path(pkg_dir), Path(standin_dir), Path(out)
    pkg, stand = load_package(src), load_package(std)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    man = json.loads(json.dumps(pkg.manifest))
    for m in man["members"]:
        shutil.copy2(src / m["file"], out / m["file"])
    have = {m["name"] for m in man["members"]}
    for m in stand.manifest["members"]:
        if m["kind"] != "onnx" and m["name"] not in have:
            shutil.copy2(std / m["file"], out / m["file"])
            man["members"].append({k: v for k, v in m.items() if k != "sha256"})
            log(f"added stand-in GBM {m['name']}")
    write_manifest(out, man)
    return out
