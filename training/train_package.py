"""Train a whole model package from a competition-layout patch folder (your own data).

    python -m sentinel_landslide.training.train_package --patches DIR --out PKG \\
        [--members all|none|name,...] [--no-gbm] [--epochs N] [--folds K] [--seed 42]

The folder is what ``landslide:exportpatches`` writes (or the competition's own
``ID.npy`` + ``Train.csv``).  Steps: per-patch features computed from the pixels with the
very function detection uses (``core.features.patch_features``) and written as
``features.csv.gz`` in the table layout of ``train_gbm``; the GBM pair per mode
(``train_gbm``) for every combination the patches support; the chosen neural members (``train_nn``, needs torch + timm).  The
result is a package ``landslide:detect`` accepts as MODEL.

Patches exported from partial inputs (say Sentinel-2 and a descending post-event scene
only) carry the channels they lack as NaN.  A combination is trained on the patches that
have every one of its channels (``train_gbm.supported_rows``); one that too few patches
support for the cross-validation (fewer than ``folds`` of each class) is skipped and the
log names it, so the package offers exactly the combinations its data can back.
"""
from __future__ import annotations

import argparse
import csv
import gzip
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from ..core.channels import COMBINATION_BY_NAME
from ..core.features import BASE_FEATURES, patch_features
from ..engine.patch_folder import list_patch_folder, patch_modes, read_patch_folder
from . import train_gbm


class TrainCancelled(Exception):
    pass


def chunk_features(px: np.ndarray, modes: list) -> dict:
    """Base features of patches (N, 12, 64, 64), each over the channels of its combination
    and the pixels valid in all of them, as detection computes a tile of that combination
    (``patch_features(..., channels=combination.channels)``); the features of the other
    channels, and every feature of a patch with no combination, are NaN."""
    out = {n: np.full(len(px), np.nan, dtype=np.float32) for n in BASE_FEATURES}
    for mode in dict.fromkeys(m for m in modes if m is not None):
        sel = np.array([i for i, m in enumerate(modes) if m == mode])
        f = patch_features(px[sel], channels=COMBINATION_BY_NAME[mode].channels)
        for n in BASE_FEATURES:
            if n in f:
                out[n][sel] = f[n]
    return out


def write_feature_table(folder, out_csv, progress=None, is_cancelled=None, chunk: int = 256) -> Path:
    """features.csv.gz (ID, label, base features) from the pixels of a labelled patch folder;
    per patch over its combination's channels (``chunk_features``; the folder's ``mode``
    column, else derived from which channels have data)."""
    ids, labels = list_patch_folder(folder)
    if labels is None:
        raise ValueError(f"patch folder '{folder}' has no Train.csv with labels")
    out_csv = Path(out_csv)
    out_csv.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(out_csv, "wt", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["ID", "label"] + list(BASE_FEATURES))
        for s in range(0, len(ids), chunk):
            if is_cancelled and is_cancelled():
                raise TrainCancelled()
            sub = ids[s:s + chunk]
            _, _, px = read_patch_folder(folder, ids=sub)
            f = chunk_features(px, patch_modes(folder, sub, px))
            for j, pid in enumerate(sub):
                w.writerow([pid, int(labels[s + j])] + [f"{float(f[n][j]):.9g}" for n in BASE_FEATURES])
            if progress:
                progress(min(1.0, (s + chunk) / len(ids)), f"features of {min(s + chunk, len(ids))} patches")
    return out_csv


def train_package(patches, out, members="all", gbm: bool = True, epochs=None, folds=None, seed: int = 42,
                  threads: int = 2, pretrained: bool = False, progress=None, is_cancelled=None, log=print,
                  width: float = 1.0) -> Path:
    """Train into ``out`` (created; an existing manifest there is merged).  ``progress(stage, frac, msg)``;
    ``width``: the networks' encoder width factor (train_nn --width; the bundled ones use 1)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    prog = progress or (lambda stage, frac, msg="": None)
    if not gbm and members in ("none", [], ""):
        raise ValueError("nothing to train: enable the gradient-boosting members or choose neural members")
    gbm_oof = out / "training_oof" / "gbm_oof.csv"
    if gbm:
        table = write_feature_table(patches, out / "training_oof" / "features.csv.gz",
                                    lambda f, m="": prog("features", f, m), is_cancelled)
        prog("gbm", 0.0, "gradient-boosting members")
        res = train_gbm.run(SimpleNamespace(data=str(table), out=str(out), folds=folds or 5, seed=seed, quick=False,
                                            limit=0, modes=list(train_gbm.MODES), threads=threads, oof_out=str(gbm_oof),
                                            command="train_package"))
        prov = res["metrics"]["provenance"]
        log("Gradient-boosting members trained for " + ", ".join(res["thresholds"]))
        for mode, why in prov.get("modes_skipped", {}).items():
            log(f"Combination {mode} not trained: {why}")
        prog("gbm", 1.0, "gradient-boosting members done")
    if members not in ("none", [], ""):
        from . import train_nn
        from .nets import MEMBERS

        names = [m.name for m in MEMBERS] if members == "all" else (
            members if isinstance(members, list) else [m.strip() for m in members.split(",") if m.strip()])
        unknown = [n for n in names if n not in {m.name for m in MEMBERS}]
        if unknown:
            raise ValueError(f"unknown neural member(s) {unknown}; known: {', '.join(m.name for m in MEMBERS)}")
        data = train_nn.load_folder_data(patches)
        recipe = train_nn.default_recipe(epochs=epochs, folds=folds, seed=seed, threads=threads, pretrained=pretrained)
        if float(width) != 1.0:  # only then: width-1 checkpoints keep their keys (as train_nn does)
            recipe["width"] = float(width)
        try:
            train_nn.train_members(data, names, out, recipe, ckpt_root=out / "training_oof" / "nn_ckpt",
                                   gbm_oof=gbm_oof, command="train_package",
                                   progress=lambda f, m="": prog("networks", f, m),
                                   is_cancelled=is_cancelled, log=log)
        except train_nn.TrainingCancelled:
            raise TrainCancelled() from None
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--patches", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--members", default="all", help="'all', 'none' or comma-separated neural member names")
    ap.add_argument("--no-gbm", action="store_true")
    ap.add_argument("--epochs", type=int)
    ap.add_argument("--folds", type=int)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--pretrained", action="store_true")
    ap.add_argument("--width", type=float, default=1.0, help="network width factor (the bundled networks: 1)")
    a = ap.parse_args(argv)
    train_package(a.patches, a.out, a.members, not a.no_gbm, a.epochs, a.folds, a.seed, a.threads, a.pretrained,
                  progress=lambda s, f, m="": print(f"{s} {f:.0%} {m}", file=sys.stderr), width=a.width)
    return 0


if __name__ == "__main__":
    sys.exit(main())
