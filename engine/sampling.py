"""A seeded stratified random sample of tiles for honest accuracy (Olofsson et al. 2014).

Strata are the map classes: flagged (the map says landslide) and not flagged.  Reviewing
only flagged tiles measures precision, never recall; a random sample of the unflagged
tiles finds the landslides the map missed.  Sizes per stratum are the user's choice; the
default, 50 per class (capped at the stratum size), follows Olofsson et al.'s advice of
at least 50-100 sample units for a rare class, and is about what an analyst reviews in an
hour.  The same seed and grid give the same sample.
"""
from __future__ import annotations

import numpy as np

from ..core.errors import InputError

DEFAULT_PER_CLASS = 50
STRATA = ((1, "flagged"), (0, "not flagged"))


def draw_sample(flagged, scored, n_flagged: int = DEFAULT_PER_CLASS, n_unflagged: int = DEFAULT_PER_CLASS,
                seed: int = 42) -> np.ndarray:
    """Indices (sorted) of a stratified random sample: ``n_flagged`` scored tiles drawn
    without replacement among the flagged ones and ``n_unflagged`` among the others
    (each capped at its stratum size).  Nodata tiles are never drawn."""
    flagged = np.asarray(flagged, dtype=bool)
    scored = np.asarray(scored, dtype=bool)
    if not scored.any():
        raise InputError("The grid has no scored tile (all nodata): nothing to sample.")
    if n_flagged < 0 or n_unflagged < 0 or n_flagged + n_unflagged == 0:
        raise InputError("Sample sizes must be non-negative and not both zero.")
    rng = np.random.default_rng(seed)
    chosen = []
    for value, n in ((True, n_flagged), (False, n_unflagged)):
        pool = np.flatnonzero(scored & (flagged == value))
        k = min(int(n), len(pool))
        if k:
            chosen.append(rng.choice(pool, size=k, replace=False))
    return np.sort(np.concatenate(chosen)) if chosen else np.array([], dtype=np.int64)


def sample_report(flagged, scored, chosen) -> str:
    flagged = np.asarray(flagged, dtype=bool)
    scored = np.asarray(scored, dtype=bool)
    inside = np.zeros(len(flagged), dtype=bool)
    inside[np.asarray(chosen, dtype=int)] = True
    parts = []
    for value, name in ((True, "flagged"), (False, "not flagged")):
        stratum = scored & (flagged == value)
        parts.append(f"{int((inside & stratum).sum())} of {int(stratum.sum())} {name} tiles")
    return "Sample: " + ", ".join(parts)
