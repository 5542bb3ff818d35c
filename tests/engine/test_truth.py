"""engine.truth, the one definition of "a tile holds a landslide": exact area fractions
checked by hand, and patch export (training labels) agreeing with evaluation (truth) on a
SYNTHETIC scene where inventory squares cover tiles at, just under and just over the
minimum fraction."""
from __future__ import annotations

import math

import numpy as np
import pytest
from osgeo import ogr

from ..helpers import scene_options


def square(x0, y0, x1, y1) -> bytes:
    return ogr.CreateGeometryFromWkt(f"POLYGON(({x0} {y0},{x1} {y0},{x1} {y1},{x0} {y1},{x0} {y0}))").ExportToWkb()


def test_fractions_by_hand():
    from sentinel_landslide.engine.truth import Truth, tile_landslide_fractions

    tiles = [square(0, 0, 10, 10), square(10, 0, 20, 10), square(20, 0, 30, 10), square(30, 0, 40, 10)]
    inventory = [
        square(-5, -5, 12, 15),  # tile 0 wholly inside, and 2 x 10 of tile 1
        square(15, 0, 20, 10), square(14, 0, 18, 10),  # overlapping: tile 1 covered 12..20 once, not twice
        ogr.CreateGeometryFromWkt("POLYGON((21 1,29 9,29 1,21 9,21 1))").ExportToWkb(),  # bow-tie (invalid)
        square(100, 100, 110, 110),  # far away
    ]
    frac = tile_landslide_fractions(tiles, inventory)
    assert frac[0] == pytest.approx(1.0)
    assert frac[1] == pytest.approx(0.8)  # 10..12 from the first, 14..20 from the union of the others
    assert frac[2] == pytest.approx(0.32)  # two triangles of 4 x 8 / 2 = 16 each, after MakeValid
    assert frac[3] == 0.0
    boxes = Truth(inventory).box_fractions([(0, 0, 10, 10), (10, 0, 20, 10), (20, 0, 30, 10), (30, 0, 40, 10)])
    assert np.allclose(boxes, frac)


def test_is_landslide_needs_some_landslide_even_at_a_zero_minimum():
    from sentinel_landslide.engine.truth import is_landslide

    assert is_landslide([0.0, 0.005, 0.01, 0.5], 0.01).tolist() == [False, False, True, True]
    assert is_landslide([0.0, 1e-9], 0.0).tolist() == [False, True]


def test_cancel_stops_the_intersection():
    from sentinel_landslide.core.errors import Cancelled
    from sentinel_landslide.engine.truth import tile_landslide_fractions

    with pytest.raises(Cancelled):
        tile_landslide_fractions([square(0, 0, 1, 1)], [square(0, 0, 1, 1)], is_cancelled=lambda: True)


@pytest.mark.slow
def test_export_label_and_evaluate_truth_agree_near_min_fraction(tmp_path, synthetic_scene, package):
    """Squares of 0.99 %, exactly 1 % and 1.01 % of a tile, placed off the 10 m pixel
    lattice (where rasterising the inventory miscounts): the exported label and the
    evaluated truth are the same tile by tile, and both follow the exact fraction."""
    from osgeo import osr

    from sentinel_landslide.engine.evaluation import evaluate_tiles
    from sentinel_landslide.engine.export import Inventory, export_patches
    from sentinel_landslide.engine.outputs import write_grid
    from sentinel_landslide.pipeline import run_detection

    min_frac = 0.01
    opts = scene_options(synthetic_scene, min_valid_fraction=0.9)
    det = run_detection(opts, package)
    ok = {(r.row, r.col): r for r in det.records if r.status == "ok" and r.valid_frac >= 0.9}
    chosen = [(1, 1), (1, 3), (2, 2), (2, 4)]
    assert set(chosen) <= set(ok)
    shares = [0.0099, 0.01, 0.0101, 0.5]
    inv = []
    for (row, col), share in zip(chosen, shares):
        x0, y0, x1, y1 = ok[(row, col)].bounds
        side = (x1 - x0) * math.sqrt(share)
        inv.append(ogr.CreateGeometryFromWkb(square(x0 + 103, y0 + 97, x0 + 103 + side, y0 + 97 + side)).ExportToWkt())
    srs = osr.SpatialReference()
    srs.ImportFromWkt(det.grid.crs_wkt)

    # export: labels in patches.gpkg
    export_patches(opts, package, tmp_path / "p", Inventory(srs.ExportToWkt(), inv), min_frac)
    ds = ogr.Open(str(tmp_path / "p" / "patches.gpkg"))
    exported = {(f.GetField("row"), f.GetField("col")): (f.GetField("label"), f.GetField("landslide_frac"))
                for f in ds.GetLayer(0)}
    ds = None

    # evaluate: truth on detect's grid as written
    grid = write_grid(str(tmp_path / "grid.gpkg"), det, "test")
    ds = ogr.Open(grid)
    feats = [(f.GetField("row"), f.GetField("col"), bytes(f.GetGeometryRef().ExportToWkb()),
              f.GetField("prob"), f.GetField("status")) for f in ds.GetLayer(0)]
    ds = None
    ev = evaluate_tiles([w for *_, w, _, _ in feats], [bytes(ogr.CreateGeometryFromWkt(w).ExportToWkb()) for w in inv],
                        [math.nan if p is None else p for *_, p, _ in feats], [s for *_, s in feats],
                        threshold=0.5, min_fraction=min_frac)
    truth = {(r, c): (bool(t), fr) for (r, c, *_), t, fr in zip(feats, ev.truth, ev.frac)}

    for key in exported:  # every exported tile: same label, same fraction
        assert bool(exported[key][0]) == truth[key][0], key
        assert exported[key][1] == pytest.approx(truth[key][1], abs=1e-12)
    for key, share in zip(chosen, shares):
        assert truth[key][1] == pytest.approx(share, rel=1e-9)
        assert truth[key][0] == (truth[key][1] >= min_frac)
    assert [truth[k][0] for k in chosen] == [False, truth[chosen[1]][1] >= min_frac, True, True]
    assert sum(t for t, _ in truth.values()) == sum(t for t, _ in (truth[k] for k in chosen))
