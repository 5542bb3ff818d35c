"""engine.align: the grid is planned from the area processed.  A SYNTHETIC geographic
Sentinel-2 mosaic much larger than the area (a VRT reaching 7 degrees west, so its own
centre lies in another UTM zone) gives the same grid and the same probabilities as a crop
of it, for the same EXTENT."""
from __future__ import annotations

import numpy as np
import pytest
from osgeo import gdal, osr

from ..helpers import scene_options


def _epsg(wkt: str) -> int:
    s = osr.SpatialReference()
    s.ImportFromWkt(wkt)
    s.AutoIdentifyEPSG()
    return int(s.GetAuthorityCode(None))


@pytest.fixture(scope="module")
def geographic_s2(synthetic_scene, tmp_path_factory):
    """The synthetic S2 (UTM 46N) warped to EPSG:4326, and a continental VRT holding it."""
    d = tmp_path_factory.mktemp("geo")
    crop = str(d / "s2_crop_4326.tif")
    gdal.Warp(crop, synthetic_scene["S2"], dstSRS="EPSG:4326", xRes=0.0001, yRes=0.0001,
              resampleAlg="near", dstNodata=0, creationOptions=["TILED=YES"])
    src = gdal.Open(crop)
    gt = src.GetGeoTransform()
    x1, y0 = gt[0] + src.RasterXSize * gt[1], gt[3] + src.RasterYSize * gt[5]
    mosaic = str(d / "s2_mosaic_4326.vrt")
    gdal.BuildVRT(mosaic, [crop], outputBounds=(gt[0] - 7.0, y0, x1, gt[3]), srcNodata=0, VRTNodata=0)
    src = None
    return crop, mosaic


def test_mosaic_and_crop_give_one_grid_and_the_same_probabilities(geographic_s2, synthetic_scene, package):
    from sentinel_landslide.engine.align import InputLayer, native_bounds, utm_wkt_for
    from sentinel_landslide.pipeline import run_detection

    crop, mosaic = geographic_s2
    b = native_bounds(gdal.Open(mosaic))
    assert _epsg(utm_wkt_for((b[0] + b[2]) / 2, (b[1] + b[3]) / 2)) == 32645  # the mosaic's centre: zone 45
    utm = osr.SpatialReference()
    utm.ImportFromEPSG(32646)
    s2 = gdal.Open(synthetic_scene["S2"])
    gt = s2.GetGeoTransform()
    ux0, uy1 = gt[0], gt[3]
    ux1, uy0 = ux0 + s2.RasterXSize * gt[1], uy1 + s2.RasterYSize * gt[5]
    extent = (ux0 + 700, uy0 + 700, ux1 - 700, uy1 - 700, utm.ExportToWkt())  # well inside the crop
    results = []
    for path in (crop, mosaic):
        opts = scene_options(synthetic_scene, sar=False, extent=extent)
        opts.s2 = InputLayer("S2", path, [1, 2, 3, 4])
        results.append(run_detection(opts, package))
    a, m = results
    assert _epsg(a.grid.crs_wkt) == _epsg(m.grid.crs_wkt) == 32646  # the area's zone, not the mosaic's
    assert (a.grid.x0, a.grid.y0, a.grid.width, a.grid.height) == (m.grid.x0, m.grid.y0, m.grid.width, m.grid.height)
    assert len(a.records) == len(m.records) >= 20
    pa = np.array([np.nan if r.prob is None else r.prob for r in a.records])
    pm = np.array([np.nan if r.prob is None else r.prob for r in m.records])
    assert np.isfinite(pa).sum() >= 20
    np.testing.assert_allclose(pm, pa, rtol=0, atol=1e-6, equal_nan=True)


def test_processing_area_follows_the_extent_not_the_raster(geographic_s2):
    from sentinel_landslide.engine.align import InputLayer, plan_grid

    _, mosaic = geographic_s2
    ds = gdal.Open(mosaic)
    gt = ds.GetGeoTransform()
    y0 = gt[3] + ds.RasterYSize * gt[5]
    layer = InputLayer("S2", mosaic, [1, 2, 3, 4])
    west = plan_grid([layer], extent=(gt[0] + 0.5, y0, gt[0] + 0.52, gt[3], osr.SRS_WKT_WGS84_LAT_LONG))
    east = plan_grid([layer], extent=(gt[0] + 6.9, y0, gt[0] + 6.92, gt[3], osr.SRS_WKT_WGS84_LAT_LONG))
    assert (_epsg(west.crs_wkt), _epsg(east.crs_wkt)) == (32645, 32646)
    assert abs(west.width - east.width) <= 2  # the same ~2 km in both zones


def test_gdal_cache_is_bounded_during_a_run_and_restored_after(synthetic_scene, package):
    """The SYNTHETIC scene's SAR is warped (EPSG:4326, 20 m UTM): during the run GDAL's
    block cache is held at the bound, afterwards (and after a cancelled run) it is back."""
    from sentinel_landslide.core.errors import Cancelled
    from sentinel_landslide.engine.align import GDAL_CACHE_BYTES
    from sentinel_landslide.pipeline import run_detection

    before = gdal.GetCacheMax()
    try:
        gdal.SetCacheMax(512 * 1024 * 1024)
        seen = []
        run_detection(scene_options(synthetic_scene), package, progress=lambda *a: seen.append(gdal.GetCacheMax()))
        assert seen and set(seen) == {GDAL_CACHE_BYTES}
        assert gdal.GetCacheMax() == 512 * 1024 * 1024
        with pytest.raises(Cancelled):
            run_detection(scene_options(synthetic_scene), package, is_cancelled=lambda: True)
        assert gdal.GetCacheMax() == 512 * 1024 * 1024
        gdal.SetCacheMax(16 * 1024 * 1024)  # an analyst's smaller cache is kept
        seen.clear()
        run_detection(scene_options(synthetic_scene, sar=False), package, progress=lambda *a: seen.append(gdal.GetCacheMax()))
        assert set(seen) == {16 * 1024 * 1024} and gdal.GetCacheMax() == 16 * 1024 * 1024
    finally:
        gdal.SetCacheMax(before)


def test_the_cache_bound_holds_one_block_row_of_wide_inputs(tmp_path):
    """A SYNTHETIC sparse 40 000 px wide, 512 px blocked float32 input: one block row of its
    two bands is 165 MB, so the run's cache bound is that (+25 %), not 64 MB; a narrow
    input keeps 64 MB; nothing is ever above the cap."""
    from sentinel_landslide.engine.align import (
        GDAL_CACHE_BYTES,
        GDAL_CACHE_CAP_BYTES,
        InputLayer,
        block_row_bytes,
        cache_bytes_for,
    )

    def make(name, w, bands, block):
        path = str(tmp_path / name)
        ds = gdal.GetDriverByName("GTiff").Create(path, w, 1024, bands, gdal.GDT_Float32, options=[
            "TILED=YES", f"BLOCKXSIZE={block}", f"BLOCKYSIZE={block}", "SPARSE_OK=TRUE"])
        ds.SetProjection("EPSG:32646")
        ds.SetGeoTransform((500000, 10, 0, 3000000, 0, -10))
        ds = None
        return path

    wide = InputLayer("S1_DESC_POST", make("wide.tif", 40000, 2, 512), [1, 2])
    assert block_row_bytes([wide]) == 40448 * 512 * 4 * 2
    assert cache_bytes_for([wide]) == int(1.25 * 40448 * 512 * 4 * 2)
    narrow = InputLayer("S1_DESC_POST", make("narrow.tif", 1000, 2, 256), [1, 2])
    assert cache_bytes_for([narrow]) == GDAL_CACHE_BYTES
    assert cache_bytes_for([wide] * 4) == GDAL_CACHE_CAP_BYTES
    assert cache_bytes_for([InputLayer("S2", str(tmp_path / "missing.tif"), [1])]) == GDAL_CACHE_BYTES
    assert block_row_bytes([InputLayer("S2", wide.path, None)]) == block_row_bytes([wide])  # bands not chosen: all


def test_decode_threads_read_the_same_pixels_and_leave_the_option_as_it_was(tmp_path):
    """A SYNTHETIC deflated, tiled raster read through a band of rows spanning many blocks:
    the same pixels with two decode threads as with one; the thread-local option is back
    afterwards (the analyst's GDAL settings are untouched)."""
    from sentinel_landslide.engine.align import InputLayer, decode_threads, open_layer

    path = str(tmp_path / "deflate.tif")
    rng = np.random.default_rng(1)
    arr = rng.normal(0, 1, (2, 300, 2000)).astype(np.float32)
    ds = gdal.GetDriverByName("GTiff").Create(path, 2000, 300, 2, gdal.GDT_Float32, options=[
        "TILED=YES", "BLOCKXSIZE=128", "BLOCKYSIZE=128", "COMPRESS=DEFLATE", "PREDICTOR=3"])
    ds.SetProjection("EPSG:32646")
    ds.SetGeoTransform((500000, 10, 0, 3000000, 0, -10))
    ds.WriteArray(arr)
    ds = None
    lyr = InputLayer("S1_DESC_POST", path, [1, 2])
    gdal.SetThreadLocalConfigOption("GDAL_NUM_THREADS", None)
    one = open_layer(lyr).ReadAsArray(0, 50, 2000, 200)
    with decode_threads(2):
        assert gdal.GetThreadLocalConfigOption("GDAL_NUM_THREADS", None) == "2"
        many = open_layer(lyr)
    assert gdal.GetThreadLocalConfigOption("GDAL_NUM_THREADS", None) is None
    np.testing.assert_array_equal(many.ReadAsArray(0, 50, 2000, 200), one)
    np.testing.assert_array_equal(one, arr[:, 50:250])
    with decode_threads(1):  # one thread: nothing set
        assert gdal.GetThreadLocalConfigOption("GDAL_NUM_THREADS", None) is None
