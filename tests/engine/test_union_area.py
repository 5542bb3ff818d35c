"""The processing area is the union of the inputs: a tile outside the Sentinel-2 footprint
but inside Sentinel-1 coverage is scored by the SAR members, and where all inputs overlap
the grid and the per-tile modes are today's.  SYNTHETIC scenes (engine.synthetic)."""
from __future__ import annotations

import numpy as np
import pytest
from osgeo import gdal

from sentinel_landslide.core.channels import S1_ROLES

PS = 64


def _options(scene: dict, roles=S1_ROLES, mask: bool = False, **kw):
    from sentinel_landslide.engine.align import InputLayer
    from sentinel_landslide.engine.detect import DetectOptions

    return DetectOptions(s2=InputLayer("S2", scene["S2"], [1, 2, 3, 4]) if "S2" in scene else None,
                         s1={r: InputLayer(r, scene[r], [1, 2]) for r in roles},
                         s2_mask=InputLayer("S2_MASK", scene["S2_MASK"], [1]) if mask else None, **kw)


def _crop(src: str, dst, x0: int, y0: int, w: int, h: int) -> str:
    gdal.Translate(str(dst), src, srcWin=[x0, y0, w, h])
    return str(dst)


# main (v0.4, intersection area) on make_scene(width=320, height=256, seed=5, cloud=0.3)
# with S2 + its SCL mask, descending post + pre and ascending post: grid and per-tile modes
GOLDEN_GRID = (380000.0, 2480000.0, 320, 256)
GOLDEN_MODES = ["desc+asc_post"] * 2 + ["s2+desc+asc_post"] * 3


def test_all_overlapping_scene_keeps_the_grid_and_modes_of_the_intersection_area(tmp_path, package):
    """On a scene where every input covers the area (SAR footprints reprojected from other
    CRSs reach a few pixels beyond S2), the grid and each tile's mode are those main's
    intersection-area code gave (golden above, computed with v0.4's code)."""
    from sentinel_landslide.engine.synthetic import make_scene
    from sentinel_landslide.pipeline import run_detection

    sc = make_scene(tmp_path / "scene", width=320, height=256, seed=5, cloud=0.3)
    res = run_detection(_options(sc, roles=("S1_DESC_POST", "S1_DESC_PRE", "S1_ASC_POST"), mask=True), package)
    g = res.grid
    assert (g.x0, g.y0, g.width, g.height) == GOLDEN_GRID and g.area is None
    assert (res.n_rows, res.n_cols) == (4, 5)
    assert [r.mode for r in res.records] == GOLDEN_MODES * 4


@pytest.fixture(scope="module")
def strip_scene(tmp_path_factory):
    """A SYNTHETIC 320 x 192 px scene, SAR on the S2 grid, and S2 cropped to columns
    48..240: SAR-only strips of 48 px (west) and 80 px (east) beside the S2 footprint."""
    from sentinel_landslide.engine.synthetic import make_scene

    d = tmp_path_factory.mktemp("strip")
    full = make_scene(d, width=320, height=192, seed=3, sar_native=True)
    scene = {r: full[r] for r in S1_ROLES}
    scene["S2"] = _crop(full["S2"], d / "s2_part.tif", 48, 0, 192, 192)
    common = {r: _crop(full[r], d / f"{r}_common.tif", 48, 0, 192, 192) for r in S1_ROLES}
    common["S2"] = scene["S2"]
    return {"union": scene, "common": common, "full": full}


def test_sar_only_strip_beside_s2_is_scored_in_sar_mode(strip_scene, package):
    from sentinel_landslide.pipeline import run_detection

    res = run_detection(_options(strip_scene["union"]), package)
    g = res.grid
    # tiles start at the S2 (common) corner, 380480; one whole tile west reaches the SAR's 48 px
    assert (g.x0, g.width, res.n_cols) == (380480.0 - PS * 10, 16 + 320, 6)
    assert g.area == (16, 0, 336, 192)
    by_col: dict = {}
    for r in res.records:
        by_col.setdefault(r.col, set()).add(r.mode)
    assert by_col[0] == {"desc+asc"}  # 48 of 64 columns of SAR, no S2
    assert by_col[1] == by_col[2] == by_col[3] == {"s2+desc+asc"}
    assert by_col[4] == {"desc+asc"}  # beside S2 on the east: SAR only
    assert by_col[5] == {None}  # 16 px of SAR: below min_valid_fraction
    west = [r for r in res.records if r.col == 0]
    assert all(r.status == "ok" and r.s2_valid == 0.0 and r.sar_valid == pytest.approx(0.75) for r in west)
    assert west[0].bounds[0] == pytest.approx(380000.0)  # the tile's extent stops at the area
    assert "desc+asc" in res.mode_counts and "s2+desc+asc" in res.mode_counts


def test_tiles_where_all_inputs_overlap_match_a_run_on_the_common_area(strip_scene, package):
    """Tile by tile (same bounds, mode and probability) against the run with every input
    cropped to the common area: adding coverage around it changes nothing inside."""
    from sentinel_landslide.pipeline import run_detection

    union = run_detection(_options(strip_scene["union"]), package)
    common = run_detection(_options(strip_scene["common"]), package)
    assert common.grid.area is None and common.n_cols == 3
    inside = {r.bounds: r for r in union.records if 1 <= r.col <= 3}
    assert len(inside) == len(common.records) == 9
    for r in common.records:
        u = inside[r.bounds]
        assert (u.mode, u.status, u.flagged) == (r.mode, r.status, r.flagged)
        assert u.prob == pytest.approx(r.prob, abs=1e-6)
        assert u.valid_frac == pytest.approx(r.valid_frac)


def test_extent_clips_the_union_and_pixels_outside_it_are_no_data(strip_scene, package):
    """EXTENT cuts the union: the grid still starts its tiles at the common corner, and the
    part of the first tile column outside the extent is read as no data (not the SAR there)."""
    from sentinel_landslide.engine.detect import TiledScene

    x_west = 380000.0 + 8 * 10  # the extent starts 40 px west of S2
    opts = _options(strip_scene["union"], extent=(x_west, 2480000.0 - 1920, 380480.0 + 1920, 2480000.0, ""))
    tiles = TiledScene(opts, package, [])
    g = tiles.grid
    assert g.x0 == 380480.0 - PS * 10 and g.area == (24, 0, 256, 192)
    block = tiles.scene.read(0, PS)
    assert np.isnan(block[:, :, :24]).all()
    sar = block[4:6]  # descending VV, VH
    assert np.isfinite(sar[:, :, 24:]).all()
    assert np.isnan(block[:4, :, 24:64]).all() and np.isfinite(block[:4, :, 64:256]).all()


def test_s2_only_beside_sar_is_scored_with_s2(strip_scene, package):
    """The other way round: S2 over the whole scene, SAR only on part of it: the tiles
    without SAR get the optical mode."""
    from sentinel_landslide.pipeline import run_detection

    d = strip_scene["full"]
    scene = {"S2": d["S2"], **{r: strip_scene["common"][r] for r in S1_ROLES}}
    res = run_detection(_options(scene), package)
    modes = {r.col: r.mode for r in res.records}
    assert res.grid.x0 == 380480.0 - PS * 10
    assert modes[1] == modes[2] == modes[3] == "s2+desc+asc"
    assert modes[0] == "s2" and modes[4] == "s2"


def test_cloud_mask_share_counts_the_s2_footprint_only(strip_scene, package, tmp_path):
    """A clear SCL over the S2 footprint: the SAR-only strips around it (no mask there)
    are not reported as masked, and the S2 tiles stay optical."""
    from sentinel_landslide.engine.align import InputLayer
    from sentinel_landslide.pipeline import run_detection

    s2 = gdal.Open(strip_scene["union"]["S2"])
    scl = gdal.GetDriverByName("GTiff").Create(str(tmp_path / "scl.tif"), s2.RasterXSize, s2.RasterYSize, 1, gdal.GDT_Byte)
    scl.SetProjection(s2.GetProjection())
    scl.SetGeoTransform(s2.GetGeoTransform())
    scl.GetRasterBand(1).SetDescription("SCL")
    scl.GetRasterBand(1).WriteArray(np.full((s2.RasterYSize, s2.RasterXSize), 4, np.uint8))  # vegetation
    scl = None
    opts = _options(strip_scene["union"])
    opts.s2_mask = InputLayer("S2_MASK", str(tmp_path / "scl.tif"), [1])
    res = run_detection(opts, package)
    assert "Cloud mask: 0.0% of the area masked (not valid Sentinel-2 pixels)" in res.log
    assert res.timings["mask_total_px"] == 192 * 192
    assert {r.mode for r in res.records if 1 <= r.col <= 3} == {"s2+desc+asc"}


def test_reads_outside_a_layers_footprint_are_no_data(tmp_path):
    """Two rasters side by side (one on the grid, read directly; one in 20 m pixels,
    warped): on the union grid each reads its own values inside its footprint and NaN
    outside, window by window, for rows wholly outside it too."""
    from sentinel_landslide.engine.align import AlignedLayer, InputLayer, plan_grid

    from .test_detect import write_tif

    a = write_tif(tmp_path / "a.tif", np.full((4, 64, 128), 2000, np.float32), 32633, (500000, 10, 0, 5000000, 0, -10))
    # 20 m pixels, east of a by 640 m and 640 m lower: overlapping a's south-east quarter
    b = write_tif(tmp_path / "b.tif", np.full((2, 32, 64), -9.0, np.float32), 32633, (500640, 20, 0, 4999680, 0, -20))
    la, lb = InputLayer("S2", a, [1, 2, 3, 4]), InputLayer("S1_DESC_POST", b, [1, 2])
    g = plan_grid([la, lb])
    assert (g.x0, g.y0, g.width, g.height) == (500000, 5000000, 64 + 128, 32 + 64)
    ra, rb = AlignedLayer.open(la, g), AlignedLayer.open(lb, g)
    assert ra.direct and not rb.direct
    for row0, nrows in ((0, 32), (32, 32), (64, 32)):
        va, vb = ra.read(row0, nrows), rb.read(row0, nrows)
        rows = np.arange(row0, row0 + nrows)[:, None]
        cols = np.arange(g.width)[None, :]
        in_a = (rows < 64) & (cols < 128)
        in_b = (rows >= 32) & (cols >= 64)
        assert (np.isfinite(va[0]) == in_a).all() and (va[0][in_a] == 2000).all()
        assert (np.isfinite(vb[0]) == in_b).all() and np.allclose(vb[0][in_b], -9.0)
