"""Read the real per-patch feature table (``train_features_7147.csv.gz``) without pandas."""
from __future__ import annotations

import csv
import gzip
from pathlib import Path

import numpy as np

from ..core.features import add_derived


def load_feature_table(path: str | Path):
    """Return (ids, labels int array, {column: float32 array}) with derived features added."""
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rt", newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader)
        rows = list(reader)
    ids = [r[0] for r in rows]
    labels = np.array([int(r[1]) for r in rows], dtype=np.int64)
    data = np.array([[float(v) if v != "" else np.nan for v in r[2:]] for r in rows], dtype=np.float32)
    feats = {name: data[:, j] for j, name in enumerate(header[2:])}
    return ids, labels, add_derived(feats)
