"""The Sentinel-2 unit decision (engine.units.decide_s2, called by engine.detect.Scene)
honours the cloud mask: a bright SYNTHETIC cloud would raise the percentiles it reads."""
from __future__ import annotations

import re

import numpy as np
import pytest
from osgeo import gdal

from ..helpers import scene_options

gdal.UseExceptions()
CLOUD = 0.45


@pytest.fixture(scope="module")
def cloudy(tmp_path_factory):
    from sentinel_landslide.engine.synthetic import make_scene

    return make_scene(tmp_path_factory.mktemp("cloudy_units"), width=640, height=448, seed=11, cloud=CLOUD)


def _s2_log(scene, package, mask=None) -> str:
    from sentinel_landslide.core.channels import COMBINATIONS
    from sentinel_landslide.engine.align import InputLayer
    from sentinel_landslide.engine.detect import TiledScene

    kw = {} if mask is None else {"s2_mask": InputLayer("S2_MASK", mask, [1])}
    log: list = []
    TiledScene(scene_options(scene, **kw), package, log, allowed_modes=[c.name for c in COMBINATIONS])
    (line,) = [m for m in log if m.startswith("Sentinel-2 convention")]
    return line


def _p(line: str, which: str) -> float:
    return float(re.search(rf"{which} percentile ([-\d.e+]+)", line).group(1))


def test_unit_decision_samples_only_pixels_the_cloud_mask_leaves_clear(cloudy, package):
    from sentinel_landslide.engine.synthetic import cloud_columns

    masked = _s2_log(cloudy, package, cloudy["S2_MASK"])
    unmasked = _s2_log(cloudy, package)
    # the clear ground, straight from the file: columns right of the cloud, its fringe and
    # its 100 m shadow strip (SCL pixels are 20 m, in another CRS: a margin of 4 more)
    s2 = gdal.Open(cloudy["S2"]).ReadAsArray().astype(np.float64)
    clear = s2[:, :, cloud_columns(640, CLOUD) + 14:]
    v = clear[clear > 0]
    expected = float(np.percentile(v, 99))
    cloud_px = s2[:, :, : cloud_columns(640, CLOUD) - 8]
    assert cloud_px.min() > 6000 > expected  # the synthetic cloud is far brighter than any ground
    assert _p(unmasked, "99th") > 6000  # without the mask, the cloud sets the 99th percentile
    assert _p(masked, "99th") == pytest.approx(expected, rel=0.03)  # with it, the clear ground does
    assert _p(masked, "1st") == pytest.approx(float(np.percentile(v, 1)), rel=0.03)
    m = re.search(r"on the (\d+) sampled pixels the cloud mask leaves clear \((\d+)% of the sample masked\)", masked)
    assert m, masked
    assert int(m.group(1)) > 100_000 and 45 <= int(m.group(2)) <= 60
    assert "cloud mask" not in unmasked
    # the decisions agree here (scale x 10000, offset present): only the figures moved
    assert "scale x 10000" in masked and "offset present" in masked and "offset present" in unmasked


def test_an_all_masked_sample_falls_back_to_every_pixel(cloudy, package, tmp_path):
    """A 0/1 mask that masks everything: the decision still has pixels, and says so."""
    src = gdal.Open(cloudy["S2"])
    ds = gdal.GetDriverByName("GTiff").Create(str(tmp_path / "all.tif"), src.RasterXSize, src.RasterYSize, 1, gdal.GDT_Byte)
    ds.SetProjection(src.GetProjection())
    ds.SetGeoTransform(src.GetGeoTransform())
    ds.GetRasterBand(1).Fill(1)
    ds = None
    line = _s2_log(cloudy, package, str(tmp_path / "all.tif"))
    assert "leaves only 0 clear pixels" in line and "decided on every pixel" in line
    assert _p(line, "99th") > 6000


def test_read_window_matches_row_reads(cloudy, package):
    """AlignedLayer.read_window gives the pixels read() gives, read directly (S2 on the grid)
    or through a warp (descending SAR in EPSG:4326, the SCL at 20 m)."""
    from sentinel_landslide.engine.align import AlignedLayer, InputLayer, plan_grid, sample_windows

    s2 = InputLayer("S2", cloudy["S2"], [1, 2, 3, 4])
    grid = plan_grid([s2])
    layers = [s2, InputLayer("S1_DESC_POST", cloudy["S1_DESC_POST"], [1, 2]), InputLayer("S2_MASK", cloudy["S2_MASK"], [1])]
    wins = sample_windows(grid, max_size=128, k=4)
    assert len(wins) == 16 and all(0 <= x and x + w <= grid.width and 0 <= y and y + h <= grid.height
                                   for x, y, w, h in wins)
    assert sample_windows(grid, max_size=1024) == [(0, 0, grid.width, grid.height)]  # small grid: all of it
    for lyr in layers:
        al = AlignedLayer.open(lyr, grid, resampling="near" if lyr.role == "S2_MASK" else None)
        full = al.read(0, grid.height)
        for x, y, w, h in wins + [(0, 0, grid.width, grid.height)]:
            np.testing.assert_array_equal(al.read_window(x, y, w, h), full[:, y:y + h, x:x + w])
