"""training/train_package.py on patch folders exported from PARTIAL inputs (channels of
the missing sources are NaN): the GBM pairs are trained for exactly the combinations
the patches support and the package detects with them.  SYNTHETIC scenes
(engine/synthetic.py), no QGIS."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from osgeo import ogr

from ..helpers import scene_options

pytestmark = pytest.mark.slow  # export + GBM cross-validation, ~20 s
pytest.importorskip("lightgbm")
pytest.importorskip("xgboost")
pytest.importorskip("sklearn")


def _inventory(path):
    from sentinel_landslide.engine.export import Inventory

    ds = ogr.Open(str(path))
    lyr = ds.GetLayer()
    return Inventory(lyr.GetSpatialRef().ExportToWkt(), [f.GetGeometryRef().ExportToWkt() for f in lyr])


def _s2_desc_post(scene, **kw):
    """Options with Sentinel-2 and the descending post-event scene only."""
    from sentinel_landslide.engine.align import InputLayer

    o = scene_options(scene, sar=False, **kw)
    o.s1 = {"S1_DESC_POST": InputLayer("S1_DESC_POST", scene["S1_DESC_POST"], [1, 2])}
    return o


@pytest.fixture(scope="module")
def partial_package(tmp_path_factory, synthetic_scene, package):
    """Patches of a SYNTHETIC scene exported with S2 + descending post only, and the
    package trained on them (GBM only, 2 folds)."""
    from sentinel_landslide.engine.export import export_patches
    from sentinel_landslide.training.train_package import train_package

    tmp = tmp_path_factory.mktemp("partial")
    exp = export_patches(_s2_desc_post(synthetic_scene), package, tmp / "patches", _inventory(synthetic_scene["truth"]))
    logs: list = []
    out = train_package(exp.folder, tmp / "pkg", members="none", folds=2, log=logs.append)
    return exp, out, logs


def test_export_writes_each_patch_mode_and_nan_for_missing_channels(partial_package):
    from sentinel_landslide.core.channels import COMBINATION_BY_NAME
    from sentinel_landslide.engine.patch_folder import derive_mode, patch_modes, read_patch_folder

    exp, _out, _logs = partial_package
    with open(exp.folder / "Train.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert {r["mode"] for r in rows} == {"s2+desc_post"}
    ids, _labels, px = read_patch_folder(exp.folder)
    have = COMBINATION_BY_NAME["s2+desc_post"].channels
    lacking = [c for c in range(12) if c not in have]
    assert np.isnan(px[:, lacking]).all() and np.isfinite(px[:, list(have)]).all()
    assert patch_modes(exp.folder, ids) == ["s2+desc_post"] * len(ids)
    # a folder without the column: the mode comes from which channels hold data
    assert {derive_mode(p) for p in px} == {"s2+desc_post"}


def test_train_on_partial_patches_trains_only_the_supported_combinations(partial_package):
    from sentinel_landslide.core.features import feature_channels
    from sentinel_landslide.models.package import load_package

    exp, out, logs = partial_package
    pkg = load_package(out)
    supported = {"s2", "s2+desc_post", "desc_post"}
    assert set(pkg.available_modes()) == supported
    gbm = [m for m in pkg.manifest["members"] if m["kind"] in ("lightgbm", "xgboost")]
    assert {m["modes"][0] for m in gbm} == supported and len(gbm) == 6
    for m in gbm:  # no member reads a feature of a channel the patches lack
        assert all(set(feature_channels(f)) <= {0, 1, 2, 3, 4, 5} for f in m["inputs"]["features"])
    rec = pkg.manifest["metrics"]["gbm_real_features"]
    assert "s2+desc+asc" in rec["provenance"]["modes_skipped"]
    # the trees learnt something from the finite features (NaN everywhere would give AUC ~0.5)
    for mode in supported:
        assert rec["ensembles"][mode]["oof_auc"] > 0.8, (mode, rec["ensembles"][mode])
    assert any("trained for s2, s2+desc_post, desc_post" in line for line in logs)
    assert any("not trained" in line and "desc+asc" in line for line in logs)
    # OOF file: every trained member has a probability for every patch (all support them)
    with open(out / "training_oof" / "gbm_oof.csv", newline="") as fh:
        oof = list(csv.DictReader(fh))
    assert len(oof) == exp.n_patches and all(r["lgbm_desc_post"] != "" for r in oof)


def test_partial_package_detects_with_the_trained_combinations(partial_package, synthetic_scene):
    from sentinel_landslide.engine.align import InputLayer
    from sentinel_landslide.engine.truth import Truth, is_landslide, reproject_wkts
    from sentinel_landslide.models.package import load_package
    from sentinel_landslide.pipeline import run_detection

    _exp, out, _logs = partial_package
    pkg = load_package(out)
    res = run_detection(_s2_desc_post(synthetic_scene), pkg)
    assert res.mode == "s2+desc_post" and res.mode_counts == {"s2+desc_post": 70}
    assert set(res.members) == {"lgbm_s2+desc_post", "xgb_s2+desc_post"}
    inv = _inventory(synthetic_scene["truth"])
    truth = Truth(reproject_wkts(inv.wkts, inv.crs_wkt, res.grid.crs_wkt))
    y = is_landslide(truth.box_fractions([r.bounds for r in res.records]), 0.01)
    flagged = np.array([bool(r.flagged) for r in res.records])
    assert (flagged & y).sum() >= 0.5 * y.sum() and (flagged & ~y).sum() <= y.sum()  # in-sample, but not trivial
    # the descending post-event scene alone: the package's desc_post pair scores it
    o = scene_options(synthetic_scene, sar=False, s2=False)
    o.s1 = {"S1_DESC_POST": InputLayer("S1_DESC_POST", synthetic_scene["S1_DESC_POST"], [1, 2])}
    res2 = run_detection(o, pkg)
    assert res2.mode == "desc_post" and set(res2.members) == {"lgbm_desc_post", "xgb_desc_post"}
    # inputs richer than anything trained: tiles fall back to the richest trained combination
    res3 = run_detection(scene_options(synthetic_scene), pkg)
    assert set(res3.mode_counts) == {"s2+desc_post"}


def test_partly_cloudy_export_trains_each_combination_on_the_patches_that_have_it(tmp_path, package):
    """A SYNTHETIC cloud over the left half (with its SCL mask): those tiles export as
    ``desc_post`` with NaN optics, so the optical combinations train on the clear patches only."""
    from sentinel_landslide.engine.align import InputLayer
    from sentinel_landslide.engine.export import export_patches
    from sentinel_landslide.engine.synthetic import make_scene
    from sentinel_landslide.training.train_package import train_package

    scene = make_scene(tmp_path / "cloudy", width=640, height=448, seed=11, cloud=0.45)
    exp = export_patches(_s2_desc_post(scene, s2_mask=InputLayer("S2_MASK", scene["S2_MASK"], [1])), package,
                         tmp_path / "patches", _inventory(scene["truth"]))
    with open(exp.folder / "Train.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    modes = {r["mode"] for r in rows}
    assert modes == {"s2+desc_post", "desc_post"}
    n_clear = sum(r["mode"] == "s2+desc_post" for r in rows)
    out = train_package(exp.folder, tmp_path / "pkg", members="none", folds=2, log=lambda m: None)
    man = json.loads((out / "manifest.json").read_text())
    ens = man["metrics"]["gbm_real_features"]["ensembles"]
    assert ens["s2+desc_post"]["rows_used"] == ens["s2"]["rows_used"] == n_clear < len(rows)
    assert "rows_used" not in ens["desc_post"]  # every patch has the descending post-event channels
    with open(out / "training_oof" / "gbm_oof.csv", newline="") as fh:
        oof = list(csv.DictReader(fh))
    by_id = {r["ID"]: r["mode"] for r in rows}
    assert all((r["lgbm_s2"] == "") == (by_id[r["ID"]] == "desc_post") for r in oof)
