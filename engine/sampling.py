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


# -- rounds: a sample that grows ------------------------------------------------------------
# An existing sample is never replaced.  Its tiles keep their numbers; the sizes asked for are
# the sample's size in each stratum after the draw ("top up"): only the missing tiles are
# drawn, at random among the stratum's scored tiles not yet in the sample and not reviewed
# purposively, and numbered on from the largest number in use.  Strata are the map classes recorded in ``stratum`` at the
# first draw (today's flags where no stratum was recorded), so a re-scored grid keeps the
# strata its sample was drawn in.  A simple random sample of a stratum's remaining tiles
# added to a simple random sample of it is again one: design weights stay M_h / n_h
# (engine/design.py; M_h: the stratum's tiles not reviewed purposively).
ADD_RULE = ("an existing sample is kept and topped up: the sizes are the sample's size per stratum (map class at "
            "the first draw, field 'stratum'), only the missing tiles are drawn, among tiles not yet in the sample and "
            "not reviewed purposively, and numbered on")


def strata_of(flagged, scored, stratum=None) -> np.ndarray:
    """Per tile: the stratum (1 flagged / 0 not) of the first draw where recorded, else today's
    map class; -1 for tiles not scored."""
    flagged = np.asarray(flagged, dtype=bool)
    out = np.where(flagged, 1, 0).astype(np.int64)
    if stratum is not None:
        st = np.array([-2 if v is None else int(v) for v in stratum], dtype=np.int64)
        out = np.where(st >= 0, st, out)
    out[~np.asarray(scored, dtype=bool)] = -1
    return out


def extend_sample(flagged, scored, sample, n_flagged: int = DEFAULT_PER_CLASS,
                  n_unflagged: int = DEFAULT_PER_CLASS, seed: int = 42, stratum=None,
                  exclude=None) -> tuple[np.ndarray, np.ndarray]:
    """Top an existing sample (``sample`` > 0) up to ``n_flagged`` / ``n_unflagged`` tiles
    per stratum (ADD_RULE).  ``exclude``: tiles never drawn (those reviewed purposively: the
    random sample is one of the other tiles, as engine/design.py weighs it).  Returns (indices
    of the new tiles, sorted; their sample numbers).  With no existing sample and nothing
    excluded it draws exactly what ``draw_sample`` draws."""
    sample = np.asarray(sample, dtype=np.int64)
    strata = strata_of(flagged, scored, stratum)
    scored = strata >= 0
    if exclude is not None:
        strata = np.where(np.asarray(exclude, dtype=bool) & (sample <= 0), -1, strata)
    if not scored.any():
        raise InputError("The grid has no scored tile (all nodata): nothing to sample.")
    if n_flagged < 0 or n_unflagged < 0 or n_flagged + n_unflagged == 0:
        raise InputError("Sample sizes must be non-negative and not both zero.")
    inside = sample > 0
    if not inside.any():
        chosen = draw_sample(strata == 1, strata >= 0, n_flagged, n_unflagged, seed=seed)
    else:
        rng = np.random.default_rng(seed)
        parts = []
        for value, n in ((1, n_flagged), (0, n_unflagged)):
            pool = np.flatnonzero((strata == value) & ~inside)
            k = min(max(0, int(n) - int((inside & (strata == value)).sum())), len(pool))
            if k:
                parts.append(rng.choice(pool, size=k, replace=False))
        chosen = np.sort(np.concatenate(parts)) if parts else np.array([], dtype=np.int64)
    start = int(sample.max()) + 1 if len(sample) and sample.max() > 0 else 1
    return chosen, np.arange(start, start + len(chosen), dtype=np.int64)


def stratum_to_record(flagged, scored, stratum=None) -> dict:
    """{tile index: stratum} to write where no stratum is recorded yet (at the first draw:
    every scored tile; later only tiles that have none)."""
    strata = strata_of(flagged, scored, stratum)
    have = np.zeros(len(strata), dtype=bool) if stratum is None else np.array([v is not None for v in stratum])
    return {int(i): int(strata[i]) for i in np.flatnonzero((strata >= 0) & ~have)}
