"""The QGIS-free engine: alignment, units, tiling, equivalence, bad inputs."""
from __future__ import annotations

import numpy as np
import pytest
from osgeo import gdal, osr

from ..helpers import S1_ROLES, scene_options, shared_file

gdal.UseExceptions()


def write_tif(path, arr, epsg, gt, nodata=None, dtype=gdal.GDT_Float32):
    arr = np.asarray(arr)
    if arr.ndim == 2:
        arr = arr[None]
    ds = gdal.GetDriverByName("GTiff").Create(str(path), arr.shape[2], arr.shape[1], arr.shape[0], dtype)
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(epsg)
    ds.SetProjection(srs.ExportToWkt())
    ds.SetGeoTransform(gt)
    for i, a in enumerate(arr):
        b = ds.GetRasterBand(i + 1)
        if nodata is not None:
            b.SetNoDataValue(nodata)
        b.WriteArray(a)
    ds = None
    return str(path)


def golden_as_layers(tmp_path, linear=False, drop_offset=False, amplitude=False):
    """The REAL ID_005GY8 pixels as separate S2 / S1 post / S1 pre GeoTIFFs on the
    artificial georeference of the shared 12-band GeoTIFF (pre = post - diff)."""
    ds = gdal.Open(str(shared_file("zindi/ID_005GY8_12band_artificial_georef.tif")))
    a = ds.ReadAsArray().astype(np.float32)
    gt = ds.GetGeoTransform()
    s2 = a[0:4] - (1000 if drop_offset else 0)
    paths = {"S2": write_tif(tmp_path / "s2.tif", s2, 32633, gt)}
    for orbit, base in (("DESC", 4), ("ASC", 8)):
        post = a[base:base + 2]
        pre = post - a[base + 2:base + 4]
        if linear:
            post, pre = 10 ** (post / 10), 10 ** (pre / 10)
        elif amplitude:
            post, pre = 10 ** (post / 20), 10 ** (pre / 20)
        paths[f"S1_{orbit}_POST"] = write_tif(tmp_path / f"{orbit}_post.tif", post, 32633, gt)
        paths[f"S1_{orbit}_PRE"] = write_tif(tmp_path / f"{orbit}_pre.tif", pre, 32633, gt)
    return paths


def test_geotiff_path_equals_npy_path_on_the_real_golden_patch(tmp_path, package):
    """Same real pixels through the GeoTIFF/alignment path and through the .npy path:
    same features, same member probabilities."""
    from sentinel_landslide.core.features import patch_features
    from sentinel_landslide.models.ensemble import Ensemble
    from sentinel_landslide.pipeline import run_detection

    paths = golden_as_layers(tmp_path)
    res = run_detection(scene_options(paths, full_ensemble=True), package)  # every member, to compare each
    assert (res.n_rows, res.n_cols) == (1, 1)
    rec = res.records[0]
    assert rec.status == "ok" and rec.valid_frac == 1.0
    x = np.load(shared_file("zindi/ID_005GY8.npy")).transpose(2, 0, 1)[None].astype(np.float32)
    valid = np.ones((1, 64, 64), bool)
    ens = Ensemble(package, "combined")
    ref = ens.predict(x, valid, patch_features(x, valid))
    for m in res.members:
        assert rec.members[m] == pytest.approx(float(ref[m][0]), abs=2e-4), m
    assert rec.prob == pytest.approx(float(ref["prob"][0]), abs=2e-4)


def test_linear_sar_and_missing_offset_are_converted(tmp_path, package):
    """Linear-power SAR and S2 without the +1000 offset give the same result as the
    package convention, with auto detection and with explicit settings."""
    from sentinel_landslide.pipeline import run_detection

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    ref = run_detection(scene_options(golden_as_layers(tmp_path / "a")), package).records[0]
    conv = golden_as_layers(tmp_path / "b", linear=True, drop_offset=True)
    for kw in ({}, {"sar_units": "linear", "s2_offset": "absent"}):
        res = run_detection(scene_options(conv, **kw), package)
        assert sum("linear power" in line for line in res.log) == 4, res.log
        assert any("offset absent" in line for line in res.log)
        assert res.records[0].prob == pytest.approx(ref.prob, abs=1e-3)
    (tmp_path / "c").mkdir()
    amp = golden_as_layers(tmp_path / "c", amplitude=True)
    for kw in ({}, {"sar_units": "amplitude"}):
        res = run_detection(scene_options(amp, **kw), package)
        assert sum("linear amplitude" in line for line in res.log) == 4, res.log
        assert res.records[0].prob == pytest.approx(ref.prob, abs=1e-3)


def test_reflectance_floats_are_scaled(tmp_path):
    from sentinel_landslide.engine.units import decide_s2

    rng = np.random.default_rng(0)
    refl = rng.uniform(0.02, 0.4, (4, 50, 50)).astype(np.float32)
    c = decide_s2(refl)
    out = c.to_package(refl, 1000)
    assert c.scale == 10000 and not c.offset_present
    assert out.min() == pytest.approx(1200, abs=1)


def test_sar_units_tell_db_power_and_amplitude_apart_and_refuse_raw_numbers():
    from sentinel_landslide.engine.units import decide_sar

    with pytest.raises(ValueError, match="neither dB nor"):
        decide_sar(np.full((2, 10, 10), 350.0))  # uncalibrated amplitude numbers
    with pytest.raises(ValueError, match="no positive values"):
        decide_sar(np.zeros((2, 10, 10)))  # blank, nodata undeclared
    assert decide_sar(np.full((2, 10, 10), -12.0)).scale == "dB"
    rng = np.random.default_rng(3)
    # synthetic VV/VH scenes from bright (mountain fore-slopes) to dark
    for vv, vh in ((-6.0, -12.5), (-10.0, -16.5), (-14.0, -21.0)):
        db = np.stack([rng.normal(vv, 3, (40, 40)), rng.normal(vh, 3, (40, 40))]).astype(np.float32)
        for scale, lin in (("power", 10 ** (db / 10)), ("amplitude", 10 ** (db / 20))):
            c = decide_sar(lin)
            assert c.scale == scale, (vv, vh, c.note)
            assert np.abs(c.to_db(lin.copy()) - db).max() < 1e-3
            assert np.abs(c.to_db(lin.copy(), inplace=True) - db).max() < 1e-3
    # explicit settings win over the values
    lin = np.full((2, 10, 10), 0.05, np.float32)
    assert decide_sar(lin, "amplitude").scale == "amplitude" and decide_sar(lin, "linear").scale == "power"
    assert decide_sar(lin, "amplitude").to_db(lin)[0, 0, 0] == pytest.approx(20 * np.log10(0.05), abs=1e-4)


@pytest.mark.parametrize("name", ["s1/sen1floods11_spain_7370579_vv_vh_db_epsg4326.tif", "s1/bigearthnet_33UUP_61"])
def test_sar_units_on_real_backscatter_as_power_and_as_amplitude(name):
    """REAL Sentinel-1 dB samples, converted to linear power and to linear amplitude: each
    is recognised and converted back to the same dB."""
    from sentinel_landslide.engine.units import decide_sar

    path = shared_file(name)
    if path.is_dir():  # VV and VH as separate files
        db = np.concatenate([np.stack([gdal.Open(str(next(path.glob(f"*_{p}_{pol}.tif")))).ReadAsArray()
                                       for pol in ("VV", "VH")]) for p in (39, 40, 41)], axis=2)
    else:
        db = gdal.Open(str(path)).ReadAsArray()
    db = db.astype(np.float32)
    assert decide_sar(db).scale == "dB"
    for scale, lin in (("power", 10 ** (db / 10)), ("amplitude", 10 ** (db / 20))):
        c = decide_sar(lin)
        assert c.scale == scale and "uncertain" not in c.note, c.note
        ok = np.isfinite(db)
        assert np.abs(c.to_db(lin)[ok] - db[ok]).max() < 1e-3


def test_grid_follows_s2_utm_and_covers_the_union(synthetic_scene):
    """S1 in EPSG:4326 and 20 m UTM is warped to the S2 UTM 10 m grid; the grid covers the
    union of the inputs, snapped to the S2 pixel lattice; with tiles, the few pixels the
    reprojected SAR footprints reach beyond S2 (no tile there could be scored) are left
    out, and the grid is the S2 raster's, as when it was the common extent."""
    from sentinel_landslide.engine.align import InputLayer, plan_grid

    layers = [InputLayer("S2", synthetic_scene["S2"], [1, 2, 3, 4])] + [
        InputLayer(r, synthetic_scene[r], [1, 2]) for r in S1_ROLES]
    g = plan_grid(layers)
    srs = osr.SpatialReference()
    srs.ImportFromWkt(g.crs_wkt)
    assert srs.GetAuthorityCode(None) == "32646"
    s2 = gdal.Open(synthetic_scene["S2"])
    gt = s2.GetGeoTransform()
    assert g.res == 10
    assert (g.x0 - gt[0]) % 10 == pytest.approx(0, abs=1e-6)
    assert g.x0 <= gt[0] and g.y0 >= gt[3] and g.width >= s2.RasterXSize and g.height >= s2.RasterYSize
    assert g.width <= s2.RasterXSize + 20 and g.height <= s2.RasterYSize + 20
    tiled = plan_grid(layers, tile_px=64, min_reach=0.5)
    assert (tiled.x0, tiled.y0, tiled.width, tiled.height, tiled.area) == (gt[0], gt[3], s2.RasterXSize,
                                                                         s2.RasterYSize, None)


def test_geographic_s2_gets_a_utm_grid(tmp_path):
    from sentinel_landslide.engine.align import InputLayer, plan_grid

    # 0.001 deg pixels around Chattogram (91.8E, 22.3N) -> UTM 46N
    p = write_tif(tmp_path / "geo.tif", np.ones((4, 50, 50)) * 2000, 4326, (91.8, 0.0001, 0, 22.3, 0, -0.0001))
    g = plan_grid([InputLayer("S2", p, [1, 2, 3, 4])])
    srs = osr.SpatialReference()
    srs.ImportFromWkt(g.crs_wkt)
    assert srs.GetAuthorityCode(None) == "32646"
    assert g.res == 10 and 50 <= g.width <= 54


def test_resampled_sar_keeps_values_and_marks_outside_as_nodata(tmp_path):
    """A 20 m SAR layer covering half the S2 area: values carried over, NaN outside."""
    from sentinel_landslide.engine.align import AlignedLayer, InputLayer, plan_grid

    s2 = write_tif(tmp_path / "s2.tif", np.full((4, 128, 128), 2000, np.float32), 32633, (500000, 10, 0, 5000000, 0, -10))
    sar = write_tif(tmp_path / "sar.tif", np.full((2, 64, 32), -11.0, np.float32), 32633, (500000, 20, 0, 5000000, 0, -20))
    g = plan_grid([InputLayer("S2", s2, [1, 2, 3, 4])])
    al = AlignedLayer.open(InputLayer("S1_DESC_POST", sar, [1, 2]), g)
    block = al.read(0, 128)
    assert block.shape == (2, 128, 128)
    assert np.allclose(block[:, :, :60], -11.0)
    assert np.isnan(block[:, :, 68:]).all()


def _rotated_ramp(tmp_path, name, deg, origin, n=300, bands=2):
    """A raster whose geotransform is rotated by ``deg``, holding in every pixel a linear
    ramp of its centre's map coordinates: bilinear warping must reproduce the ramp."""
    t = np.radians(deg)
    gt = (origin[0], 10 * np.cos(t), 10 * np.sin(t), origin[1], 10 * np.sin(t), -10 * np.cos(t))
    i, j = np.meshgrid(np.arange(n) + 0.5, np.arange(n) + 0.5)
    x, y = gt[0] + i * gt[1] + j * gt[2], gt[3] + i * gt[4] + j * gt[5]
    ramp = (-20 + 0.004 * (x - 500000) + 0.002 * (5000000 - y)).astype(np.float32)
    return write_tif(tmp_path / name, np.stack([ramp + k for k in range(bands)]), 32633, gt), gt


def ramp_at(xs, ys):
    return -20 + 0.004 * (xs - 500000) + 0.002 * (5000000 - ys)


def test_rotated_rasters_are_warped_to_north_up_map_positions(tmp_path):
    """Geotransforms with rotation terms (gt[2], gt[4] != 0) go through the warp, not the
    direct read, and every grid pixel gets the value at its own map position."""
    from sentinel_landslide.engine.align import AlignedLayer, InputLayer, plan_grid

    s2 = write_tif(tmp_path / "s2.tif", np.full((4, 128, 128), 2000, np.float32), 32633,
                   (500000, 10, 0, 5000000, 0, -10))
    sar, _ = _rotated_ramp(tmp_path, "sar_rot.tif", 20, (499000, 5000600))
    # the grid is the union of both; the extent keeps it to the S2 raster (the SAR covers it all)
    g = plan_grid([InputLayer("S2", s2, [1, 2, 3, 4]), InputLayer("S1_DESC_POST", sar, [1, 2])],
                  extent=(500000, 5000000 - 1280, 501280, 5000000, ""))
    assert (g.x0, g.y0, g.width, g.height) == (500000, 5000000, 128, 128)
    al = AlignedLayer.open(InputLayer("S1_DESC_POST", sar, [1, 2]), g)
    assert not al.direct and al.resampling == "bilinear"
    block = al.read(0, 128)
    xs = g.x0 + (np.arange(128) + 0.5) * 10
    ys = g.y0 - (np.arange(128) + 0.5) * 10
    want = ramp_at(xs[None, :], ys[:, None])
    assert np.isfinite(block).all()
    # GDAL's warp kernel on a rotated source lands within ~0.1 px; a half-pixel or
    # rotation-sign slip would shift the ramp by >= 5 m (0.022 here) everywhere
    tol = 2.5 * np.hypot(0.004, 0.002)  # a quarter pixel of the ramp
    for k in (0, 1):
        err = block[k] - (want + k)
        assert np.abs(err).max() < tol and abs(err.mean()) < 1e-3

    # a rotated reference: the grid is its north-up bounding box on the 10 m grid, and
    # the corners outside the rotated footprint are no data
    ref, gt = _rotated_ramp(tmp_path, "s2_rot.tif", 30, (500000, 5000000), n=100, bands=4)
    g = plan_grid([InputLayer("S2", ref, [1, 2, 3, 4])])
    xs_c = [gt[0] + i * gt[1] + j * gt[2] for i in (0, 100) for j in (0, 100)]
    ys_c = [gt[3] + i * gt[4] + j * gt[5] for i in (0, 100) for j in (0, 100)]
    assert abs(g.width * 10 - (max(xs_c) - min(xs_c))) <= 20 and abs(g.height * 10 - (max(ys_c) - min(ys_c))) <= 20
    block = AlignedLayer.open(InputLayer("S2", ref, [1, 2, 3, 4]), g).read(0, g.height)
    assert np.isnan(block[:, 0, 0]).all() and np.isnan(block[:, -1, -1]).all()  # outside the footprint
    xs = g.x0 + (np.arange(g.width) + 0.5) * 10
    ys = g.y0 - (np.arange(g.height) + 0.5) * 10
    want = ramp_at(xs[None, :], ys[:, None])
    inside = np.isfinite(block[0])
    assert inside.mean() > 0.45  # a square turned 30 degrees fills ~59 % of its bounding box
    # away from the footprint's edge (3 px: the kernel's reach) every value is the one at
    # its map position
    core = inside.copy()
    for _ in range(3):
        pad = np.pad(core, 1, constant_values=False)
        core = core & pad[:-2, 1:-1] & pad[2:, 1:-1] & pad[1:-1, :-2] & pad[1:-1, 2:]
    assert core.sum() > 0.7 * inside.sum()
    err = block[3][core] - (want[core] + 3)
    assert np.abs(err).max() < tol and abs(err.mean()) < 1e-3


@pytest.mark.parametrize("nodata", [-99.0, 9999.0])  # 10^(9999/10) would overflow if mapped to power
@pytest.mark.parametrize("scale", ["dB", "amplitude", "power"])
def test_finer_sar_is_averaged_as_linear_power(tmp_path, scale, nodata):
    """SYNTHETIC single-look speckle at 5 m onto the 10 m grid: each grid pixel is the dB of
    the mean power of its 2 x 2 source pixels (the mean of dB values would be ~2 dB low),
    whatever the file's units; nodata pixels are left out of the mean."""
    from sentinel_landslide.engine.align import AlignedLayer, InputLayer, plan_grid
    from sentinel_landslide.engine.units import decide_sar

    rng = np.random.default_rng(11)
    power = (rng.exponential(1.0, (2, 128, 128)) * np.array([0.1, 0.02])[:, None, None]).astype(np.float32)
    db = 10 * np.log10(power)
    data = {"dB": db, "amplitude": np.sqrt(power), "power": power}[scale].copy()
    data[:, :8, :8] = nodata  # a 4 x 4 grid-pixel corner of nodata
    data[:, 8:10, 8:9] = nodata  # half of one grid pixel
    s2 = write_tif(tmp_path / "s2.tif", np.full((4, 64, 64), 2000, np.float32), 32633, (500000, 10, 0, 5000000, 0, -10))
    sar = write_tif(tmp_path / "sar.tif", data, 32633, (500000, 5, 0, 5000000, 0, -5), nodata=nodata)
    g = plan_grid([InputLayer("S2", s2, [1, 2, 3, 4])])
    al = AlignedLayer.open(InputLayer("S1_DESC_POST", sar, [1, 2]), g)
    assert al.resampling == "average"
    conv = decide_sar(al.sample(), label="test")
    assert conv.scale == scale
    if al.average_linear_power(conv.scale):
        conv = conv.averaged_as_power()
        assert scale != "power" and al.resampling == "average of linear power"
    got = conv.to_db(al.read(0, 64))
    p4 = power.reshape(2, 64, 2, 64, 2)
    ok4 = (data != nodata).reshape(2, 64, 2, 64, 2)
    with np.errstate(divide="ignore"):
        want = 10 * np.log10((p4 * ok4).sum((2, 4)) / ok4.sum((2, 4)).clip(1))
    assert np.isnan(got[:, :4, :4]).all()
    fine = np.isfinite(got)
    assert fine.sum() == 2 * (64 * 64 - 16)
    assert np.abs(got[fine] - want[fine]).max() < 1e-3
    # the half-nodata grid pixel: its two valid source pixels only...
    assert got[0, 4, 4] == pytest.approx(10 * np.log10(power[0, 8:10, 9].mean()), abs=1e-3)
    mean_of_db = db.reshape(2, 64, 2, 64, 2).mean((2, 4))
    assert (want - mean_of_db)[:, 8:, 8:].mean() > 1.5  # ...and what averaging dB would have lost


def test_power_averaging_leaves_layers_with_an_internal_mask_alone(tmp_path):
    """A per-dataset mask band would be lost by the derived power bands: such a layer keeps
    the plain average (and its mask)."""
    from sentinel_landslide.engine.align import AlignedLayer, InputLayer, plan_grid

    s2 = write_tif(tmp_path / "s2.tif", np.full((4, 16, 16), 2000, np.float32), 32633, (500000, 10, 0, 5000000, 0, -10))
    ds = gdal.GetDriverByName("GTiff").Create(str(tmp_path / "m.tif"), 32, 32, 2, gdal.GDT_Float32)
    ds.SetProjection(gdal.Open(s2).GetProjection())
    ds.SetGeoTransform((500000, 5, 0, 5000000, 0, -5))
    for b in (1, 2):
        ds.GetRasterBand(b).WriteArray(np.full((32, 32), -12.0, np.float32))
    ds.CreateMaskBand(gdal.GMF_PER_DATASET)
    m = np.full((32, 32), 255, np.uint8)
    m[:4, :4] = 0
    ds.GetRasterBand(1).GetMaskBand().WriteArray(m)
    ds = None
    g = plan_grid([InputLayer("S2", s2, [1, 2, 3, 4])])
    al = AlignedLayer.open(InputLayer("S1_DESC_POST", str(tmp_path / "m.tif"), [1, 2]), g)
    assert al.resampling == "average" and not al.average_linear_power("dB")
    block = al.read(0, 16)
    assert np.isnan(block[:, :2, :2]).all() and np.allclose(block[:, 4:, 4:], -12.0)


def test_extent_parameter_clips_the_grid(synthetic_scene):
    from sentinel_landslide.engine.align import InputLayer, plan_grid

    s2 = InputLayer("S2", synthetic_scene["S2"], [1, 2, 3, 4])
    full = plan_grid([s2])
    x0, y0, x1, y1 = full.bounds
    g = plan_grid([s2], extent=(x0 + 1000, y0 + 1000, x0 + 2280, y0 + 1640, full.crs_wkt))
    assert (g.width, g.height) == (128, 64)


def test_tiling_edges_cover_the_whole_area_and_mark_slivers_nodata(tmp_path, package):
    """A 150 x 100 px scene gives 3 x 2 tiles; edge tiles carry their true valid
    fraction, and those under the minimum are 'nodata' with no probability."""
    from sentinel_landslide.pipeline import run_detection

    rng = np.random.default_rng(3)
    arr = (1500 + 200 * rng.standard_normal((4, 100, 150))).astype(np.float32)
    p = write_tif(tmp_path / "s2.tif", arr, 32633, (500000, 10, 0, 5000000, 0, -10))
    res = run_detection(scene_options({"S2": p}, sar=False), package)
    assert (res.n_rows, res.n_cols) == (2, 3)
    fr = {(r.row, r.col): r.valid_frac for r in res.records}
    assert fr[(0, 0)] == 1.0
    assert fr[(0, 2)] == pytest.approx(22 / 64)
    assert fr[(1, 0)] == pytest.approx(36 / 64)
    assert fr[(1, 2)] == pytest.approx(22 * 36 / 64 / 64)
    for r in res.records:
        if r.valid_frac < 0.5:
            assert r.status == "nodata" and r.prob is None and r.flagged is None
        else:
            assert r.status == "ok" and 0.0 <= r.prob <= 1.0
    # tiles tessellate the grid exactly, clipped at the scene edge
    assert res.records[2].bounds[2] == pytest.approx(500000 + 1500)
    assert res.records[-1].bounds[1] == pytest.approx(5000000 - 1000)


def test_mode_follows_the_inputs(synthetic_scene, package):
    from sentinel_landslide.models.ensemble import package_mode
    from sentinel_landslide.pipeline import run_detection

    opt = run_detection(scene_options(synthetic_scene, sar=False), package)
    assert opt.mode == "s2" and {r.mode for r in opt.records if r.status == "ok"} == {"s2"}
    assert all(m in [s["name"] for s in package.members_for(package_mode(package, "s2"))] for m in opt.members)
    sar = run_detection(scene_options(synthetic_scene, s2=False), package)
    assert sar.mode == "desc+asc"
    comb = run_detection(scene_options(synthetic_scene), package)
    own = package_mode(package, "s2+desc+asc")
    assert comb.mode == "s2+desc+asc" and comb.threshold == package.threshold(own)
    assert set(comb.members) == {m["name"] for m in package.members_for(own)}
    assert all(r.s2_valid == 1.0 and r.sar_valid == 1.0 for r in comb.records if r.status == "ok")
    # one orbit without its pre-event layer: the run's combination says so; tiles are
    # scored by the richest combination the package offers within it
    o = scene_options(synthetic_scene)
    del o.s1["S1_ASC_PRE"]
    part = run_detection(o, package)
    assert part.mode == "s2+desc+asc_post"
    assert any("ascending: post-event only" in line for line in part.log)
    offered = {c for c in ("s2+desc+asc_post", "s2+desc", "s2+asc_post", "s2") if package_mode(package, c) in
               package.available_modes()}
    best = max(offered, key=lambda c: len(c))  # every candidate here has S2; the longest name is the richest
    assert {r.mode for r in part.records if r.status == "ok"} == {best}


def test_bad_inputs_raise_clear_errors(tmp_path, synthetic_scene, package):
    from sentinel_landslide.core.errors import InputError
    from sentinel_landslide.engine.align import InputLayer
    from sentinel_landslide.engine.detect import DetectOptions
    from sentinel_landslide.pipeline import run_detection

    with pytest.raises(InputError, match="No input was given"):
        run_detection(DetectOptions(), package)
    far = write_tif(tmp_path / "far.tif", np.full((2, 64, 64), -10, np.float32), 32633, (300000, 10, 0, 4000000, 0, -10))
    o = scene_options(synthetic_scene)
    o.s1["S1_DESC_POST"] = InputLayer("S1_DESC_POST", far, [1, 2])
    with pytest.raises(InputError, match="descending post-event layer does not overlap"):
        run_detection(o, package)
    o = scene_options(synthetic_scene, sar=False)
    o.s2.bands = [1, 2, 3, 7]
    with pytest.raises(InputError, match="band 7 does not exist"):
        run_detection(o, package)
    empty = write_tif(tmp_path / "empty.tif", np.zeros((4, 70, 70), np.uint16), 32633,
                      (500000, 10, 0, 5000000, 0, -10), nodata=0, dtype=gdal.GDT_UInt16)
    with pytest.raises(InputError, match="no valid pixels|No tile has enough valid data"):
        run_detection(scene_options({"S2": empty}, sar=False), package)


def test_cancel_stops_between_batches(synthetic_scene, package):
    from sentinel_landslide.core.errors import Cancelled
    from sentinel_landslide.pipeline import run_detection

    calls = []

    def cancelled():
        calls.append(1)
        return len(calls) > 1

    with pytest.raises(Cancelled):
        run_detection(scene_options(synthetic_scene, rows_per_batch=1), package, is_cancelled=cancelled)
    assert len(calls) == 2


def test_a_failing_member_stops_the_reader_thread_at_once(synthetic_scene, package, monkeypatch):
    """When scoring fails, the tile reader is shut down while the error propagates, not when
    the traceback (held here by pytest.raises) is freed."""
    import threading

    from sentinel_landslide.models.ensemble import Ensemble
    from sentinel_landslide.pipeline import run_detection

    def boom(self, *a, **k):
        raise RuntimeError("member failed")

    monkeypatch.setattr(Ensemble, "_predict_slice", boom)
    before = set(threading.enumerate())
    with pytest.raises(RuntimeError, match="member failed") as err:
        run_detection(scene_options(synthetic_scene, rows_per_batch=1), package)
    assert err.value is not None  # the traceback and its frames are still alive here
    assert not [t for t in set(threading.enumerate()) - before if t.is_alive()]


def test_grid_and_raster_writers(tmp_path, synthetic_scene, package):
    from osgeo import ogr

    from sentinel_landslide.engine.outputs import write_grid, write_probability_raster
    from sentinel_landslide.pipeline import run_detection

    res = run_detection(scene_options(synthetic_scene), package)
    gpkg = write_grid(str(tmp_path / "g.gpkg"), res, package.name)
    ds = ogr.Open(gpkg)
    lyr = ds.GetLayer(0)
    assert lyr.GetFeatureCount() == len(res.records)
    names = [lyr.GetLayerDefn().GetFieldDefn(i).GetName() for i in range(lyr.GetLayerDefn().GetFieldCount())]
    for f in ("tile_id", "row", "col", "prob", "flagged", "status", "mode", "valid_frac", "model"):
        assert f in names
    assert all(("p_" + m) in names for m in res.members)
    tif = write_probability_raster(str(tmp_path / "p.tif"), res, 64)
    r = gdal.Open(tif)
    assert (r.RasterXSize, r.RasterYSize) == (res.n_cols, res.n_rows)
    a = r.ReadAsArray()
    assert a[0, 0] == pytest.approx(res.records[0].prob, abs=1e-6)
    assert r.GetGeoTransform()[1] == 640


def test_patches_are_cut_exactly_including_a_partial_right_column():
    from sentinel_landslide.engine.detect import to_patches

    rng = np.random.default_rng(5)
    for width, n_cols in ((640, 10), (645, 11), (700, 11), (30, 1)):
        block = rng.random((3, 128, width)).astype(np.float32)
        p = to_patches(block, 64, n_cols)
        assert p.shape == (2 * n_cols, 3, 64, 64)
        for r in range(2):
            for c in range(n_cols):
                want = np.full((3, 64, 64), np.nan, np.float32)
                part = block[:, r * 64:(r + 1) * 64, c * 64:(c + 1) * 64]
                want[:, :, :part.shape[2]] = part
                assert np.array_equal(p[r * n_cols + c], want, equal_nan=True), (width, r, c)


def test_aligned_read_into_a_given_array_marks_nodata(tmp_path):
    from sentinel_landslide.engine.align import AlignedLayer, InputLayer, plan_grid

    arr = np.arange(2 * 64 * 96, dtype=np.float32).reshape(2, 64, 96) + 1
    arr[0, 5, 7] = -9999
    s2 = write_tif(tmp_path / "s2.tif", np.full((4, 64, 96), 2000, np.float32), 32633, (500000, 10, 0, 5000000, 0, -10))
    sar = write_tif(tmp_path / "sar.tif", arr, 32633, (500000, 10, 0, 5000000, 0, -10), nodata=-9999)
    al = AlignedLayer.open(InputLayer("S1_DESC_POST", sar, [1, 2]), plan_grid([InputLayer("S2", s2, [1, 2, 3, 4])]))
    dest = np.zeros((4, 32, 96), np.float32)
    got = al.read(0, 32, out=dest[1:3])
    assert np.shares_memory(got, dest)
    assert np.isnan(dest[1, 5, 7]) and np.isnan(got[0, 5, 7])
    want = arr[:, :32].copy()
    want[0, 5, 7] = np.nan
    assert np.array_equal(dest[1:3], want, equal_nan=True)
    assert (dest[0] == 0).all() and (dest[3] == 0).all()
    assert np.array_equal(al.read(0, 32), want, equal_nan=True)
    with pytest.raises(ValueError):
        al.read(0, 32, out=np.zeros((2, 16, 96), np.float32))


def test_unit_detection_samples_windows_not_the_whole_layer(tmp_path):
    """A layer of a few dozen blocks without overviews is sampled in small windows
    (decoding only some blocks), with about max_size^2 pixels of the real values."""
    from sentinel_landslide.engine.align import AlignedLayer, InputLayer, plan_grid

    n = 2304  # 9 x 9 blocks of 256 px
    vals = (np.arange(n, dtype=np.float32)[:, None] * n + np.arange(n, dtype=np.float32)[None, :])
    path = str(tmp_path / "big.tif")
    ds = gdal.GetDriverByName("GTiff").Create(path, n, n, 1, gdal.GDT_Float32, ["TILED=YES", "COMPRESS=DEFLATE"])
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(32633)
    ds.SetProjection(srs.ExportToWkt())
    ds.SetGeoTransform((500000, 10, 0, 5000000, 0, -10))
    ds.GetRasterBand(1).WriteArray(vals)
    ds = None
    layer = InputLayer("S2", path, [1])
    al = AlignedLayer.open(layer, plan_grid([InputLayer("S2", path, [1])]))
    s = al.sample(max_size=512)
    k = 4  # isqrt(81 // 4): windows in 16 of the 81 blocks
    assert s.shape == (1, k * (512 // k), k * (512 // k))
    win = 512 // k
    for i in range(k):
        for j in range(k):
            w = s[0, i * win:(i + 1) * win, j * win:(j + 1) * win]
            r0, c0 = int(w[0, 0]) // n, int(w[0, 0]) % n
            assert r0 % 256 + win <= 256 and c0 % 256 + win <= 256  # inside one block
            assert np.array_equal(w, vals[r0:r0 + win, c0:c0 + win])
    rows = {int(s[0, i * win, 0]) // n // 256 for i in range(k)}
    assert len(rows) == k  # spread over the layer, not one corner


def _described_tif(path, arrays, descriptions):
    ds = gdal.GetDriverByName("GTiff").Create(str(path), arrays[0].shape[1], arrays[0].shape[0], len(arrays),
                                              gdal.GDT_UInt16)
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(32633)
    ds.SetProjection(srs.ExportToWkt())
    ds.SetGeoTransform((500000, 10, 0, 5000000, 0, -10))
    for i, (a, d) in enumerate(zip(arrays, descriptions)):
        b = ds.GetRasterBand(i + 1)
        b.WriteArray(a)
        if d:
            b.SetDescription(d)
    ds = None
    return str(path)


def rgbn_stack(s2_path, path):
    """The R, G, B, NIR image as a named 6-band stack: B1 (junk), B2, B3, B4, B5 (junk), B8."""
    src = gdal.Open(s2_path)
    r, g, b, nir = (src.GetRasterBand(i).ReadAsArray() for i in (1, 2, 3, 4))
    stack = _described_tif(path, [b // 2, b, g, r, (r + nir) // 2, nir], ["B1", "B2", "B3", "B4", "B5", "B8"])
    ds = gdal.Open(stack, gdal.GA_Update)
    ds.SetProjection(src.GetProjection())
    ds.SetGeoTransform(src.GetGeoTransform())
    nd = src.GetRasterBand(1).GetNoDataValue()
    if nd is not None:
        for i in range(1, 7):
            ds.GetRasterBand(i).SetNoDataValue(nd)
    ds = None
    return stack


@pytest.mark.parametrize("names, want", [
    (["B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B11", "B12"], [4, 3, 2, 8]),
    (["B02", "B03", "B04", "B08"], [3, 2, 1, 4]),
    (["Coastal", "Blue", "Green", "Red", "Red Edge 1", "NIR"], [4, 3, 2, 6]),
    (["B4", "B3", "B2", "B8A", "B8"], [1, 2, 3, 5]),  # B8A is not NIR B8
    (["", "", "", ""], [1, 2, 3, 4]),
])
def test_sentinel2_band_numbers_come_from_the_band_names(tmp_path, names, want):
    from sentinel_landslide.engine.align import guess_s2_bands

    a = np.ones((8, 8), np.uint16)
    bands, note = guess_s2_bands(_described_tif(tmp_path / "s2.tif", [a] * len(names), names))
    assert bands == want and "taken as R, G, B, NIR" in note


def test_unnamed_many_band_sentinel2_falls_back_to_1_4_with_a_warning(tmp_path):
    from sentinel_landslide.engine.align import guess_s2_bands

    a = np.ones((8, 8), np.uint16)
    bands, note = guess_s2_bands(_described_tif(tmp_path / "s2.tif", [a] * 6, [""] * 6))
    assert bands == [1, 2, 3, 4] and note.startswith("Warning") and "6 bands" in note


def test_detection_finds_named_bands_in_a_stack_and_scores_as_the_plain_4_band_image(tmp_path, synthetic_scene,
                                                                                      package):
    """A 6-band stack (coastal, B, G, R, red edge, NIR, named) with no band numbers given
    scores exactly like the plain R, G, B, NIR image."""
    from sentinel_landslide.engine.align import InputLayer
    from sentinel_landslide.pipeline import run_detection

    stack = rgbn_stack(synthetic_scene["S2"], tmp_path / "stack.tif")
    plain = run_detection(scene_options(synthetic_scene, sar=False), package)
    opts = scene_options(synthetic_scene, sar=False)
    opts.s2 = InputLayer("S2", stack, None)
    named = run_detection(opts, package)
    assert "Sentinel-2 bands 4, 3, 2, 6 taken as R, G, B, NIR (from the band names)" in named.log
    assert [t.prob for t in named.records] == [t.prob for t in plain.records]
