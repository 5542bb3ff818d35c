"""Training data for the neural members: labelled patches (proxy or a competition-layout
folder) and their preprocessing, which is the runtime's (``models.ensemble``): the
manifest's normalisation and S2 offset, ``core.indices.compute_indices``, invalid pixels
filled with Q50."""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from ..core.channels import CHANNEL_NAMES, PATCH_SIZE
from ..core.indices import compute_indices
from ..models.ensemble import norm_constants  # the runtime's scaling itself, not a copy

ROOT = Path(__file__).resolve().parents[2]


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
