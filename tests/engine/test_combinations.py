"""Every input combination, the Sentinel-2 cloud mask and the per-tile fallback, through
the engine on SYNTHETIC scenes (engine/synthetic.py) and the real shared S1 sample.

``combo_package``: a small package with a LightGBM member for each of the 17
combinations, trained here on the REAL per-patch features of the 7147 competition
patches (only the features whose channels the combination has; few trees, so it is
quick), plus two of the bundled networks listed for EVERY combination, so the ensemble
has to skip them wherever a channel group they read is absent.
"""
from __future__ import annotations

import json
import shutil
from collections import Counter

import numpy as np
import pytest
from osgeo import gdal, osr

from ..helpers import shared_file

gdal.UseExceptions()

NETS = ("nn_opt_vit_convnext", "nn_sar_vit_caformer")  # optical+indices; all four SAR post + change


def combo_features(combo):
    from sentinel_landslide.core.features import BASE_FEATURES, DERIVED_FEATURES, feature_channels

    have = set(combo.channels)
    return [f for f in BASE_FEATURES + DERIVED_FEATURES if set(feature_channels(f)) <= have]


@pytest.fixture(scope="module")
def combo_package(tmp_path_factory, package_dir):
    import lightgbm as lgb

    from sentinel_landslide.core.channels import COMBINATIONS
    from sentinel_landslide.core.features import feature_matrix
    from sentinel_landslide.models.package import load_package, new_manifest, write_manifest
    from sentinel_landslide.training.feature_table import load_feature_table

    _ids, y, feats = load_feature_table(shared_file("zindi/train_features_7147.csv.gz"))
    folder = tmp_path_factory.mktemp("combo_pkg")
    man = new_manifest("test-combinations", "0.0.1", "17 small LightGBM members on the real features, for tests")
    bundled = json.loads((package_dir / "manifest.json").read_text())
    for c in COMBINATIONS:
        names = combo_features(c)
        booster = lgb.train({"objective": "binary", "num_leaves": 15, "learning_rate": 0.1, "verbose": -1,
                             "num_threads": 1, "deterministic": True, "seed": 1},
                            lgb.Dataset(feature_matrix(feats, names), label=y, feature_name=names), 40)
        fname = f"lgbm_{c.name.replace('+', '__')}.txt"
        booster.save_model(str(folder / fname))
        p = booster.predict(feature_matrix(feats, names))
        ts = np.linspace(0.1, 0.9, 81)
        f1 = [2 * ((p >= t) & (y == 1)).sum() / max(1, (p >= t).sum() + (y == 1).sum()) for t in ts]
        man["modes"][c.name] = {"threshold": round(float(ts[int(np.argmax(f1))]), 3)}
        man["members"].append({"name": f"lgbm_{c.name}", "kind": "lightgbm", "file": fname, "modes": [c.name],
                               "weight": 1.0, "inputs": {"features": names}})
    for m in bundled["members"]:
        if m["name"] in NETS:
            shutil.copy(package_dir / m["file"], folder / m["file"])
            man["members"].append(dict(m, modes=[c.name for c in COMBINATIONS], weight=0.5))
    write_manifest(folder, man)
    return load_package(folder)


@pytest.fixture(scope="module")
def small_scene(tmp_path_factory):
    """A SYNTHETIC 3 x 3 tile scene (S2 UTM; SAR in EPSG:4326 and at 20 m)."""
    from sentinel_landslide.engine.synthetic import make_scene

    return make_scene(tmp_path_factory.mktemp("small"), width=192, height=192, seed=3)


def options_for(combo, scene, **kw):
    from sentinel_landslide.engine.align import InputLayer
    from sentinel_landslide.engine.detect import DetectOptions

    o = DetectOptions(**kw)
    if combo.s2:
        o.s2 = InputLayer("S2", scene["S2"], [1, 2, 3, 4])
    for role in combo.roles:
        if role != "S2":
            o.s1[role] = InputLayer(role, scene[role], [1, 2])
    return o


def _all_combinations():
    from sentinel_landslide.core.channels import COMBINATIONS

    return [c.name for c in COMBINATIONS]


@pytest.fixture
def member_inputs(monkeypatch):
    """Record what every member is given: GBMs their feature matrix, networks their feeds."""
    from sentinel_landslide.models import ensemble as ens

    seen: list = []
    gbm_predict, nn_predict = ens._GBMMember.predict, ens._OnnxMember.predict

    def gbm(self, patches, valid, feats):
        seen.append((self.spec["name"], "gbm", ens.feature_matrix(feats, self.features)))
        return gbm_predict(self, patches, valid, feats)

    def nn(self, patches, valid, feats, cache=None):
        seen.append((self.spec["name"], "onnx", self.feeds(patches)))
        return nn_predict(self, patches, valid, feats, cache)

    monkeypatch.setattr(ens._GBMMember, "predict", gbm)
    monkeypatch.setattr(ens._OnnxMember, "predict", nn)
    return seen


@pytest.mark.parametrize("name", _all_combinations())
def test_every_combination_runs_end_to_end_and_members_see_only_their_channels(name, combo_package, small_scene,
                                                                                member_inputs):
    from sentinel_landslide.core.channels import COMBINATION_BY_NAME
    from sentinel_landslide.models.ensemble import member_channels
    from sentinel_landslide.pipeline import run_detection

    combo = COMBINATION_BY_NAME[name]
    res = run_detection(options_for(combo, small_scene), combo_package)
    assert res.mode == name
    ok = [r for r in res.records if r.status == "ok"]
    assert len(ok) >= 6  # 3 x 3 tiles; a sliver at the reprojected SAR edges may fall back or be nodata
    modes = Counter(r.mode for r in ok)
    assert modes.most_common(1)[0][0] == name, modes
    assert all(COMBINATION_BY_NAME[m].channels == tuple(c for c in combo.channels if c in COMBINATION_BY_NAME[m].channels)
               for m in modes)  # a fallback only drops sources
    specs = {m["name"]: m for m in combo_package.manifest["members"]}
    expected = {f"lgbm_{name}"} | {n for n in NETS if set(member_channels(specs[n])) <= set(combo.channels)}
    assert {m for r in ok if r.mode == name for m in r.members} == expected
    assert any(line.startswith(f"Mode {name}: members") for line in res.log)
    if not expected & set(NETS):
        assert any("GBMs alone score it" in line for line in res.log)
    else:
        assert not any(f"Mode {name}:" in line and "GBMs alone" in line for line in res.log)
    skipped = set(NETS) - expected
    if skipped:
        assert any(f"Mode {name}:" in line and all(s in line for s in skipped) for line in res.log)
    for r in ok:
        assert 0.0 <= r.prob <= 1.0 and r.flagged == (r.prob >= res.thresholds[r.mode])
        assert (r.s2_valid is None) == (not combo.s2)
        assert (r.sar_valid is None) == (combo.desc == "none" and combo.asc == "none")
    # members never see a channel group they were not trained on: every member that ran
    # reads only channels the combination has, and its inputs hold no absent (all-NaN) group
    assert member_inputs
    for member, kind, inputs in member_inputs:
        assert set(member_channels(specs[member])) <= set(combo.channels), member
        if kind == "gbm":
            assert not np.isnan(inputs).all(axis=0).any(), member
        else:
            assert all(np.isfinite(a).all() for a in inputs.values()), member


def test_an_orbit_with_only_a_pre_event_layer_is_refused(small_scene, combo_package):
    from sentinel_landslide.core.errors import InputError
    from sentinel_landslide.engine.align import InputLayer
    from sentinel_landslide.engine.detect import DetectOptions
    from sentinel_landslide.pipeline import run_detection

    o = DetectOptions(s2=InputLayer("S2", small_scene["S2"], [1, 2, 3, 4]))
    o.s1["S1_ASC_PRE"] = InputLayer("S1_ASC_PRE", small_scene["S1_ASC_PRE"], [1, 2])
    with pytest.raises(InputError, match="ascending orbit has only a pre-event layer"):
        run_detection(o, combo_package)


def test_a_layer_that_does_not_overlap_is_refused_even_if_a_poorer_combination_would_do(tmp_path, small_scene,
                                                                                        combo_package):
    from sentinel_landslide.core.channels import COMBINATION_BY_NAME
    from sentinel_landslide.core.errors import InputError
    from sentinel_landslide.engine.align import InputLayer
    from sentinel_landslide.pipeline import run_detection

    from .test_detect import write_tif

    far = write_tif(tmp_path / "far.tif", np.full((2, 64, 64), -10, np.float32), 32633, (300000, 10, 0, 4000000, 0, -10))
    o = options_for(COMBINATION_BY_NAME["s2"], small_scene)
    o.s1["S1_DESC_POST"] = InputLayer("S1_DESC_POST", far, [1, 2])
    with pytest.raises(InputError, match="descending post-event layer does not overlap"):
        run_detection(o, combo_package)


@pytest.fixture(scope="module")
def legacy_package(tmp_path_factory, package_dir):
    """The bundled package cut back to a package of earlier versions: schema 1, the three
    modes "combined", "optical", "sar" and only their members."""
    from sentinel_landslide.models.package import load_package

    legacy = {"s2+desc+asc": "combined", "s2": "optical", "desc+asc": "sar"}
    folder = tmp_path_factory.mktemp("legacy_pkg")
    man = json.loads((package_dir / "manifest.json").read_text())
    man["schema_version"] = 1
    man["modes"] = {legacy[k]: v for k, v in man["modes"].items() if k in legacy}
    man["members"] = [dict(m, modes=[legacy[x] for x in m["modes"] if x in legacy]) for m in man["members"]
                      if set(m["modes"]) & set(legacy)]
    for m in man["members"]:
        shutil.copy(package_dir / m["file"], folder / m["file"])
    (folder / "manifest.json").write_text(json.dumps(man))
    return load_package(folder)


def test_the_bundled_package_scores_every_combination_with_its_own_members(small_scene, package):
    from sentinel_landslide.core.channels import COMBINATION_BY_NAME
    from sentinel_landslide.pipeline import run_detection

    for name in ("s2+desc", "desc_post"):
        res = run_detection(options_for(COMBINATION_BY_NAME[name], small_scene), package)
        assert res.mode == name and {r.mode for r in res.records if r.status == "ok"} == {name}


def test_a_package_of_earlier_versions_scores_what_it_can_and_names_what_it_cannot(small_scene, legacy_package):
    """A package of earlier versions (3 combinations): s2+desc is scored with its s2
    members (said in the log); desc_post alone it cannot score (clear error)."""
    from sentinel_landslide.core.channels import COMBINATION_BY_NAME
    from sentinel_landslide.core.errors import InputError
    from sentinel_landslide.pipeline import run_detection

    package = legacy_package
    res = run_detection(options_for(COMBINATION_BY_NAME["s2+desc"], small_scene), package)
    assert res.mode == "s2+desc" and {r.mode for r in res.records if r.status == "ok"} == {"s2"}
    assert any("no members for s2+desc" in line for line in res.log)
    with pytest.raises(InputError, match="cannot score desc_post inputs"):
        run_detection(options_for(COMBINATION_BY_NAME["desc_post"], small_scene), package)


def test_real_sentinel1_sample_as_a_post_event_only_orbit(tmp_path, combo_package):
    """The REAL Sen1Floods11 VV/VH sample (dB, EPSG:4326) as the only input: a
    descending post-event-only run, scored by that combination's GBM alone."""
    from sentinel_landslide.engine.align import InputLayer
    from sentinel_landslide.engine.detect import DetectOptions
    from sentinel_landslide.pipeline import run_detection

    path = str(shared_file("s1/sen1floods11_spain_7370579_vv_vh_db_epsg4326.tif"))
    o = DetectOptions(s1={"S1_DESC_POST": InputLayer("S1_DESC_POST", path, [1, 2])})
    res = run_detection(o, combo_package)
    ok = [r for r in res.records if r.status == "ok"]
    assert res.mode == "desc_post" and len(ok) >= 40  # ~5 x 5 km at 10 m: 8 x 8 tiles, less the warped edges
    assert {r.mode for r in ok} == {"desc_post"} and set(res.members) == {"lgbm_desc_post"}
    assert any("GBMs alone score it" in line for line in res.log)
    assert any("units: dB" in line or "dB" in line for line in res.log if "units" in line)
    assert all(r.sar_valid >= 0.5 and r.s2_valid is None for r in ok)


# ---- clouds -----------------------------------------------------------------------------

CLOUD = 0.55  # the cloud core (class 9) then covers three whole tile columns


@pytest.fixture(scope="module")
def cloudy_scene(tmp_path_factory):
    """A SYNTHETIC 6 x 6 tile scene whose left half is under an opaque cloud, with its SCL
    (20 m, EPSG:4326)."""
    from sentinel_landslide.engine.synthetic import make_scene

    return make_scene(tmp_path_factory.mktemp("cloudy"), width=384, height=384, seed=3, cloud=CLOUD)


def _scar_tiles(scene, res, under_cloud: bool):
    """Tiles a planted scar covers by at least 3 %, under the cloud's core or well clear of it."""
    from osgeo import ogr

    from sentinel_landslide.engine.synthetic import cloud_columns

    ds = ogr.Open(scene["truth"])
    scars = [f.GetGeometryRef().Clone() for f in ds.GetLayer()]
    edge = res.grid.x0 + cloud_columns(384, CLOUD) * 10.0 - 60.0  # inside the cloud's class-9 core
    out = []
    for r in res.records:
        x0, y0, x1, y1 = r.bounds
        if under_cloud != (x1 <= edge):
            continue
        if not under_cloud and x0 < edge + 200:  # away from the cloud and its shadow strip
            continue
        box = ogr.CreateGeometryFromWkt(f"POLYGON(({x0} {y0},{x1} {y0},{x1} {y1},{x0} {y1},{x0} {y0}))")
        if sum(box.Intersection(s).GetArea() for s in scars) >= 0.03 * box.GetArea():
            out.append(r)
    return out


def _cloud_tiles(res):
    from sentinel_landslide.engine.synthetic import cloud_columns

    edge = res.grid.x0 + cloud_columns(384, CLOUD) * 10.0 - 60.0
    return [r for r in res.records if r.bounds[2] <= edge]


def test_cloud_over_scars_with_sar_falls_back_to_sar_and_still_finds_them(cloudy_scene, package):
    from sentinel_landslide.engine.align import InputLayer
    from sentinel_landslide.pipeline import run_detection

    from ..helpers import scene_options

    o = scene_options(cloudy_scene, s2_mask=InputLayer("S2_MASK", cloudy_scene["S2_MASK"], [1]))
    res = run_detection(o, package)
    under = _cloud_tiles(res)
    assert len(under) == 3 * 6  # three whole tile columns lie inside the cloud's core
    assert {r.mode for r in under} == {"desc+asc"}
    assert all(r.s2_valid == 0.0 and r.sar_valid > 0.9 for r in under)
    assert all(r.flagged == (r.prob >= res.thresholds["desc+asc"]) for r in under)
    clear = [r for r in res.records if r.bounds[0] >= res.grid.x0 + CLOUD * 3840 + 200]
    assert clear and {r.mode for r in clear} == {"s2+desc+asc"}
    assert res.mode_counts["desc+asc"] >= 12 and res.mode_counts["s2+desc+asc"] >= 12
    scars = _scar_tiles(cloudy_scene, res, under_cloud=True)
    assert scars, "the synthetic scene must plant scars under the cloud"
    assert sum(r.flagged for r in scars) >= 0.5 * len(scars)
    masked = [line for line in res.log if line.startswith("Cloud mask:")]
    frac = float(masked[0].split(": ")[1].split("%")[0]) / 100
    assert CLOUD <= frac <= CLOUD + 0.08  # the cloud, the 100 m shadow strip and a little resampling
    assert any("classes 0 (no data), 1" in line and "10 (thin cirrus)" in line for line in res.log)
    assert not any("clouds were not masked" in line for line in res.log)


def test_cloud_with_optics_only_leaves_the_clouded_tiles_nodata(cloudy_scene, package):
    from sentinel_landslide.engine.align import InputLayer
    from sentinel_landslide.pipeline import run_detection

    from ..helpers import scene_options

    o = scene_options(cloudy_scene, sar=False, s2_mask=InputLayer("S2_MASK", cloudy_scene["S2_MASK"], [1]))
    res = run_detection(o, package)
    under = _cloud_tiles(res)
    assert under and all(r.status == "nodata" and r.prob is None and r.mode is None for r in under)
    assert res.mode_counts.get("nodata", 0) >= len(under) and res.mode_counts["s2"] >= 12


def test_without_a_mask_the_log_warns_and_clouds_are_scored_as_ground(cloudy_scene, package):
    from sentinel_landslide.pipeline import run_detection

    from ..helpers import scene_options

    res = run_detection(scene_options(cloudy_scene, sar=False), package)
    assert any(line.startswith("Warning") and "clouds were not masked" in line for line in res.log)
    assert all(r.status == "ok" and r.mode == "s2" for r in _cloud_tiles(res))


# ---- the mask itself ----------------------------------------------------------------------

def _mask_tif(path, arr, epsg=32646, gt=(380000.0, 20.0, 0, 2480000.0, 0, -20.0), dtype=gdal.GDT_Byte,
              desc=None, nodata=None):
    ds = gdal.GetDriverByName("GTiff").Create(str(path), arr.shape[1], arr.shape[0], 1, dtype)
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(epsg)
    ds.SetProjection(srs.ExportToWkt())
    ds.SetGeoTransform(gt)
    if desc:
        ds.GetRasterBand(1).SetDescription(desc)
    if nodata is not None:
        ds.GetRasterBand(1).SetNoDataValue(nodata)
    ds.GetRasterBand(1).WriteArray(arr)
    ds = None
    return str(path)


def _grid(width=96, height=96):
    from osgeo import osr as _osr

    from sentinel_landslide.engine.align import Grid

    s = _osr.SpatialReference()
    s.ImportFromEPSG(32646)
    return Grid(s.ExportToWkt(), 380000.0, 2480000.0, 10.0, width, height)


def test_scl_classes_are_decoded_at_20_m_onto_the_10_m_grid(tmp_path):
    from sentinel_landslide.engine.align import InputLayer
    from sentinel_landslide.engine.masks import S2Mask

    scl = np.tile(np.arange(12, dtype=np.uint8), (48, 4))  # 48 x 48 at 20 m, columns cycle 0..11
    log: list = []
    m = S2Mask(InputLayer("S2_MASK", _mask_tif(tmp_path / "scl.tif", scl), [1]), _grid(), log)
    assert m.kind == "scl"
    inv = m.invalid(0, 96)
    cls = np.repeat(np.repeat(scl, 2, axis=0), 2, axis=1)  # nearest neighbour: each 20 m pixel -> 2 x 2
    assert np.array_equal(inv, np.isin(cls, (0, 1, 3, 8, 9, 10)))
    assert m.masked_fraction == pytest.approx(6 / 12)
    assert "3 (cloud shadow)" in log[0] and "nearest" in log[0]


def test_a_binary_mask_in_another_crs_masks_its_ones(tmp_path):
    from sentinel_landslide.engine.align import InputLayer, transform_bounds
    from sentinel_landslide.engine.masks import S2Mask

    g = _grid()
    b = transform_bounds(g.bounds, g.crs_wkt, osr.SRS_WKT_WGS84_LAT_LONG)
    d = 0.00018
    w, h = int((b[2] - b[0]) / d) + 2, int((b[3] - b[1]) / d) + 2
    arr = np.zeros((h, w), np.uint8)
    arr[:, : w // 2] = 1  # west half invalid
    m = S2Mask(InputLayer("S2_MASK", _mask_tif(tmp_path / "m.tif", arr, 4326, (b[0] - d, d, 0, b[3] + d, 0, -d)), [1]),
               g, [])
    assert m.kind == "binary"
    inv = m.invalid(0, 96)
    assert inv[:, :40].all() and not inv[:, 56:].any()


@pytest.mark.parametrize("values,dtype", [((0, 4, 15), gdal.GDT_Byte), ((-1, 0, 1), gdal.GDT_Int16),
                                          ((0.0, 0.5, 1.0), gdal.GDT_Float32)])
def test_mask_values_outside_scl_or_0_1_are_refused_naming_what_is_expected(tmp_path, values, dtype):
    from sentinel_landslide.core.errors import InputError
    from sentinel_landslide.engine.align import InputLayer
    from sentinel_landslide.engine.masks import S2Mask

    arr = np.resize(np.array(values, np.float32), (48, 48))
    path = _mask_tif(tmp_path / "bad.tif", arr, dtype=dtype)
    with pytest.raises(InputError, match=r"scene classification \(SCL, integer classes 0-11\) or a 0/1 mask"):
        S2Mask(InputLayer("S2_MASK", path, [1]), _grid(), [])


def test_a_mask_that_does_not_overlap_is_refused(tmp_path, cloudy_scene, package):
    from sentinel_landslide.core.errors import InputError
    from sentinel_landslide.engine.align import InputLayer
    from sentinel_landslide.pipeline import run_detection

    from ..helpers import scene_options

    far = _mask_tif(tmp_path / "far.tif", np.zeros((20, 20), np.uint8), gt=(600000.0, 20.0, 0, 2000000.0, 0, -20.0))
    o = scene_options(cloudy_scene, s2_mask=InputLayer("S2_MASK", far, [1]))
    with pytest.raises(InputError, match="cloud mask does not overlap the processing area"):
        run_detection(o, package)


def test_an_scl_band_of_the_sentinel2_layer_is_used_automatically(tmp_path, cloudy_scene, package):
    from sentinel_landslide.engine.align import InputLayer
    from sentinel_landslide.engine.detect import DetectOptions
    from sentinel_landslide.pipeline import run_detection

    s2 = gdal.Open(cloudy_scene["S2"])
    scl = gdal.Warp("", cloudy_scene["S2_MASK"], format="MEM", dstSRS=s2.GetProjection(),
                    outputBounds=(380000.0, 2480000.0 - 3840, 380000.0 + 3840, 2480000.0), xRes=10, yRes=10,
                    resampleAlg="near").ReadAsArray()
    stack = gdal.GetDriverByName("GTiff").Create(str(tmp_path / "s2_scl.tif"), 384, 384, 5, gdal.GDT_UInt16)
    stack.SetProjection(s2.GetProjection())
    stack.SetGeoTransform(s2.GetGeoTransform())
    for i, name in enumerate(("B04", "B03", "B02", "B08")):
        band = stack.GetRasterBand(i + 1)
        band.WriteArray(s2.GetRasterBand(i + 1).ReadAsArray())
        band.SetDescription(name)
    stack.GetRasterBand(5).WriteArray(scl)
    stack.GetRasterBand(5).SetDescription("SCL")
    stack = None
    res = run_detection(DetectOptions(s2=InputLayer("S2", str(tmp_path / "s2_scl.tif"), None)), package)
    assert any("band 5 is described as SCL" in line for line in res.log)
    assert any("taken as R, G, B, NIR" in line and "1, 2, 3, 4" in line for line in res.log)
    assert all(r.status == "nodata" for r in _cloud_tiles(res))
