"""Review in rounds, outside QGIS: what a batch of tiles to review writes into the grid, and
how a grid's review state is carried over to the grid of a re-scored run of the same layers.

A batch (``engine/review_select.next_batch``) returns tile indices and how each was picked.
Random picks join the stratified sample: ``pick = random`` and the next free ``sample``
numbers, so each round adds to the sample and never replaces it.  Purposive picks get their
``pick`` and no sample number.  ``stratum`` (map class at the first draw) is written on every
scored tile that has none, so a re-scored grid keeps the strata the sample was drawn in.
"""
from __future__ import annotations

import numpy as np

from .sampling import stratum_to_record
from .verdicts import PICK_FIELD, PICK_RANDOM, STRATUM_FIELD, GridTiles

# the review state of a tile: carried to a re-scored grid of the same tiles
CARRIED_FIELDS = ("review", "review_note", "sample", PICK_FIELD, STRATUM_FIELD)


def batch_values(flagged, scored, sample, stratum, chosen, picks) -> dict:
    """{field: {tile index: value}} a batch writes: ``pick`` on the chosen tiles, sample
    numbers (continuing from the largest in use) on the random ones, ``stratum`` where none
    is recorded.  A tile already in the sample keeps its number and pick."""
    sample = np.asarray(sample, dtype=np.int64)
    nxt = int(sample.max()) + 1 if len(sample) and sample.max() > 0 else 1
    out: dict = {PICK_FIELD: {}, "sample": {}, STRATUM_FIELD: stratum_to_record(flagged, scored, stratum)}
    for i, p in zip(np.asarray(chosen, dtype=np.int64).tolist(), picks):
        if sample[i] > 0:
            continue
        out[PICK_FIELD][i] = p
        if p == PICK_RANDOM:
            out["sample"][i] = nxt
            nxt += 1
    return {k: v for k, v in out.items() if v}


def batch_threshold(prob, flagged, default: float = 0.5) -> float:
    """The grid's threshold as its flags show it (the lowest probability flagged; per-mode
    thresholds differ a little, this is the one of the tiles flagged)."""
    prob = np.asarray(prob, dtype=np.float64)
    flagged = np.asarray(flagged, dtype=bool) & np.isfinite(prob)
    return float(prob[flagged].min()) if flagged.any() else default


def match_tiles(old: GridTiles, new: GridTiles, tol: float | None = None) -> np.ndarray:
    """Per tile of ``new``: the index of the tile of ``old`` at the same position (same row,
    col and bounds within ``tol``, default 5 % of a tile's width), else -1.  Grids of other
    extents number rows differently: then tiles are matched by bounds alone."""
    out = np.full(len(new.fid), -1, dtype=np.int64)
    if not len(old.fid) or not len(new.fid):
        return out
    if tol is None:
        w = np.nanmedian(new.bounds[:, 2] - new.bounds[:, 0])
        tol = 0.05 * float(w) if np.isfinite(w) else 1.0
    by_rc = {(int(r), int(c)): i for i, (r, c) in enumerate(zip(old.row, old.col))}
    by_corner = {(round(b[0] / tol), round(b[1] / tol)): i for i, b in enumerate(old.bounds)}
    for j in range(len(new.fid)):
        i = by_rc.get((int(new.row[j]), int(new.col[j])))
        if i is None or not np.allclose(old.bounds[i], new.bounds[j], atol=tol):
            b = new.bounds[j]
            i = by_corner.get((round(b[0] / tol), round(b[1] / tol)))
            if i is None or not np.allclose(old.bounds[i], b, atol=tol):
                continue
        out[j] = i
    return out


def carry_values(old: GridTiles, new: GridTiles, old_values: dict) -> tuple[dict, int]:
    """{field: {new fid: value}} of the review state (``old_values``: {field: list per old
    tile}, CARRIED_FIELDS present in the old grid) for the tiles of ``new`` matched by
    position; and the number of old tiles with a verdict or a pick that found no match."""
    idx = match_tiles(old, new)
    out: dict = {k: {} for k in old_values}
    for j, i in enumerate(idx):
        if i < 0:
            continue
        for k, vals in old_values.items():
            v = vals[i]
            if v is not None and v != "" and not (k == "sample" and not v):
                out[k][int(new.fid[j])] = v
    matched = set(int(i) for i in idx if i >= 0)
    state = [any(vals[i] not in (None, "", 0) for k, vals in old_values.items() if k != STRATUM_FIELD)
             for i in range(len(old.fid))]
    lost = sum(1 for i, s in enumerate(state) if s and i not in matched)
    return {k: v for k, v in out.items() if v}, lost


def review_state(path: str) -> dict:
    """{field: list per tile} of CARRIED_FIELDS a grid has (OGR)."""
    from osgeo import ogr

    ds = ogr.Open(str(path))
    lyr = ds.GetLayer(0)
    defn = lyr.GetLayerDefn()
    names = [n for n in CARRIED_FIELDS if defn.GetFieldIndex(n) >= 0]
    out: dict = {n: [] for n in names}
    for f in lyr:
        for n in names:
            i = defn.GetFieldIndex(n)
            out[n].append(f.GetField(i) if f.IsFieldSetAndNotNull(i) else None)
    ds = None
    return out
