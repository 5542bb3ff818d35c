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
