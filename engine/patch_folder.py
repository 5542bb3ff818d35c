"""The competition patch-folder layout: ``ID.npy`` files plus ``Train.csv`` (ID,label).

Each ``ID.npy`` holds one (64, 64, 12) patch, channels last, in the package convention
(S2 reflectance x 10000 with the +1000 offset, SAR in dB; ``core.channels``).  A
Test-style folder (``Test.csv`` with an ID column, or just ``*.npy`` files) has no
labels.  ``write_patch_folder`` writes the same layout (float32), which is what the
``landslide:exportpatches`` algorithm produces and ``train_nn --patches`` reads.

Readers return (N, 12, 64, 64) float32, channels first (the runtime's layout).  Patches
are loaded one file at a time (``np.load(mmap_mode="r")``) into a preallocated array,
optionally a memory-mapped ``.npy`` cache, so memory stays bounded by one output array.

Exported folders add a ``mode`` column to the CSV: each patch's input combination
(``core.channels``, e.g. ``s2+desc_post``); the channels it lacks are NaN in the ``.npy``.
``patch_modes`` reads it, or derives it from the pixels for folders without one.
"""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from ..core.channels import COMBINATION_BY_NAME, N_CHANNELS, OPTICAL, PATCH_SIZE, SOURCE_CHANNELS, Combination

LABEL_FILES = ("Train.csv", "train.csv")
ID_FILES = ("Test.csv", "test.csv", "ids.csv")


class PatchFolderError(Exception):
    """The folder is not a readable competition-layout patch folder."""


def _read_csv(path: Path, column: str | None = None):
    with open(path, newline="", encoding="utf-8-sig") as fh:
        rows = list(csv.reader(fh))
    if not rows:
        raise PatchFolderError(f"{path} is empty")
    header = [h.strip() for h in rows[0]]
    lower = [h.lower() for h in header]
    if "id" not in lower:
        raise PatchFolderError(f"{path} has no ID column (header: {header})")
    i_id = lower.index("id")
    i_lab = lower.index("label") if "label" in lower else None
    if column is not None:  # (ids, that column's values or None when the CSV has no such column)
        i_col = lower.index(column) if column in lower else None
        rows = [r for r in rows[1:] if r and r[i_id].strip()]
        return [r[i_id].strip() for r in rows], (None if i_col is None else [r[i_col].strip() for r in rows])
    ids, labels = [], []
    for r in rows[1:]:
        if not r or not r[i_id].strip():
            continue
        ids.append(r[i_id].strip())
        if i_lab is not None:
            labels.append(int(float(r[i_lab])))
    return ids, (np.array(labels, dtype=np.int64) if i_lab is not None else None)


def list_patch_folder(folder) -> tuple[list[str], np.ndarray | None]:
    """IDs and labels (None for an unlabelled, Test-style folder) of a patch folder."""
    folder = Path(folder)
    if not folder.is_dir():
        raise PatchFolderError(f"patch folder '{folder}' does not exist")
    for name in LABEL_FILES:
        if (folder / name).is_file():
            ids, labels = _read_csv(folder / name)
            break
    else:
        for name in ID_FILES:
            if (folder / name).is_file():
                ids, labels = _read_csv(folder / name)
                labels = None
                break
        else:
            ids, labels = sorted(p.stem for p in folder.glob("*.npy")), None
    if not ids:
        raise PatchFolderError(f"patch folder '{folder}' lists no patches")
    missing = [i for i in ids if not (folder / f"{i}.npy").is_file()]
    if missing:
        raise PatchFolderError(
            f"patch folder '{folder}': {len(missing)} listed patch file(s) are missing, e.g. {missing[0]}.npy")
    if labels is not None and not set(np.unique(labels)) <= {0, 1}:
        raise PatchFolderError(f"patch folder '{folder}': labels must be 0 or 1")
    return ids, labels


def _csv_of(folder: Path) -> Path | None:
    for name in LABEL_FILES + ID_FILES:
        if (folder / name).is_file():
            return folder / name
    return None


def derive_mode(patch: np.ndarray, min_valid: float = 0.5) -> str | None:
    """The combination of one (12, 64, 64) patch from its pixels: a source counts where at
    least ``min_valid`` of its pixels are finite in all its channels (an orbit: post-event
    VV, VH; "full" when its change channels are too); None when nothing does."""
    def ok(chans):
        return float(np.isfinite(patch[list(chans)]).all(axis=0).mean()) >= min_valid

    states = []
    for src in ("S1_DESC", "S1_ASC"):
        ch = SOURCE_CHANNELS[src]
        states.append("none" if not ok(ch[:2]) else "full" if ok(ch) else "post")
    c = Combination(ok(OPTICAL), *states)
    return c.name if c.name else None


def patch_modes(folder, ids, patches=None, min_valid: float = 0.5) -> list:
    """Each patch's combination name: the CSV's ``mode`` column when the folder has one
    (what ``landslide:exportpatches`` writes), else ``derive_mode`` on ``patches`` (N, 12,
    64, 64) of those ``ids``.  Unknown names in the column are an error."""
    folder = Path(folder)
    path = _csv_of(folder)
    if path is not None:
        all_ids, modes = _read_csv(path, "mode")
        if modes is not None:
            by_id = dict(zip(all_ids, modes))
            out = [by_id.get(i) or None for i in ids]
            bad = sorted({m for m in out if m is not None and m not in COMBINATION_BY_NAME})
            if bad:
                raise PatchFolderError(f"{path}: unknown mode(s) {bad}; expected combination names such as "
                                       + ", ".join(list(COMBINATION_BY_NAME)[:4]))
            return out
    if patches is None:
        _, _, patches = read_patch_folder(folder, ids=list(ids))
    return [derive_mode(p, min_valid) for p in patches]


def load_patch(path) -> np.ndarray:
    """One patch file -> (12, 64, 64) float32 (accepts channels-last or channels-first)."""
    a = np.load(path, mmap_mode="r", allow_pickle=False)
    if a.shape == (PATCH_SIZE, PATCH_SIZE, N_CHANNELS):
        a = np.moveaxis(a, -1, 0)
    elif a.shape != (N_CHANNELS, PATCH_SIZE, PATCH_SIZE):
        raise PatchFolderError(
            f"{path}: shape {a.shape}, expected ({PATCH_SIZE}, {PATCH_SIZE}, {N_CHANNELS}) channels last")
    return np.asarray(a, dtype=np.float32)


def read_patch_folder(folder, ids=None, out=None, cache=None, progress=None):
    """Read a patch folder.

    Returns (ids, labels or None, patches (N, 12, 64, 64) float32).  ``ids`` restricts to
    (and orders by) these IDs; ``out`` is a preallocated array to fill; ``cache`` a
    path for a memory-mapped ``.npy`` to fill instead of RAM."""
    folder = Path(folder)
    all_ids, labels = list_patch_folder(folder)
    if ids is not None:
        pos = {k: i for i, k in enumerate(all_ids)}
        unknown = [i for i in ids if i not in pos]
        if unknown:
            raise PatchFolderError(f"IDs not in '{folder}': {unknown[:3]}")
        sel = [pos[i] for i in ids]
        labels = labels[sel] if labels is not None else None
        all_ids = list(ids)
    n = len(all_ids)
    shape = (n, N_CHANNELS, PATCH_SIZE, PATCH_SIZE)
    if out is None:
        if cache is not None:
            Path(cache).parent.mkdir(parents=True, exist_ok=True)
            out = np.lib.format.open_memmap(cache, mode="w+", dtype=np.float32, shape=shape)
        else:
            out = np.empty(shape, dtype=np.float32)
    elif out.shape != shape:
        raise ValueError(f"out has shape {out.shape}, expected {shape}")
    for k, pid in enumerate(all_ids):
        out[k] = load_patch(folder / f"{pid}.npy")
        if progress and (k % 256 == 0 or k == n - 1):
            progress((k + 1) / n, f"read {k + 1}/{n} patches")
    if isinstance(out, np.memmap):
        out.flush()
    return all_ids, labels, out


def write_patch_folder(folder, ids, patches, labels=None, append: bool = False, modes=None) -> Path:
    """Write patches (N, 12, 64, 64) (package convention) as ``ID.npy`` (64, 64, 12) float32
    plus ``Train.csv`` (ID,label) or, without labels, ``Test.csv`` (ID).  ``append`` adds
    to an existing folder (chunked export); ``modes`` (combination names, one per patch)
    adds a ``mode`` column."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    patches = np.asarray(patches)
    if patches.ndim != 4 or patches.shape[1:] != (N_CHANNELS, PATCH_SIZE, PATCH_SIZE):
        raise ValueError(f"patches must be (N, {N_CHANNELS}, {PATCH_SIZE}, {PATCH_SIZE}), got {patches.shape}")
    ids = [str(i) for i in ids]
    if len(ids) != len(patches) or len(set(ids)) != len(ids):
        raise ValueError("ids must be unique and match the number of patches")
    bad = [i for i in ids if not i or any(c in i for c in '/\\:,"') or i.startswith(".")]
    if bad:
        raise ValueError(f"IDs must be plain file names without separators or commas: {bad[:3]}")
    if labels is not None:
        labels = np.asarray(labels).astype(np.int64)
        if len(labels) != len(ids) or not set(np.unique(labels)) <= {0, 1}:
            raise ValueError("labels must be 0/1, one per patch")
    if modes is not None:
        modes = [str(m) for m in modes]
        if len(modes) != len(ids) or not set(modes) <= set(COMBINATION_BY_NAME):
            raise ValueError("modes must be combination names, one per patch")
    for pid, p in zip(ids, patches):
        np.save(folder / f"{pid}.npy", np.ascontiguousarray(np.moveaxis(p, 0, -1), dtype=np.float32))
    name = "Train.csv" if labels is not None else "Test.csv"
    path = folder / name
    new = not (append and path.is_file())
    with open(path, "w" if new else "a", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        if new:
            w.writerow((["ID", "label"] if labels is not None else ["ID"]) + (["mode"] if modes is not None else []))
        for k, pid in enumerate(ids):
            w.writerow(([pid, int(labels[k])] if labels is not None else [pid]) + ([modes[k]] if modes is not None else []))
    return path
