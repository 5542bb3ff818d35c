"""Patch export: the competition layout from georeferenced layers and an inventory."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from ..helpers import scene_options


def _inventory(scene):
    from osgeo import ogr, osr

    from sentinel_landslide.engine.export import Inventory

    gj = json.loads(Path(scene["truth"]).read_text())
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(32646)
    return Inventory(srs.ExportToWkt(), [ogr.CreateGeometryFromJson(json.dumps(f["geometry"])).ExportToWkt()
                                         for f in gj["features"]])


def test_export_writes_the_competition_layout(tmp_path, synthetic_scene, package):
    from sentinel_landslide.core.features import patch_features
    from sentinel_landslide.engine.export import export_patches
    from sentinel_landslide.pipeline import run_detection
    from sentinel_landslide.training.feature_table import load_feature_table  # noqa: F401

    opts = scene_options(synthetic_scene, min_valid_fraction=0.9)
    res = export_patches(opts, package, tmp_path / "patches", _inventory(synthetic_scene), 0.01)
    rows = list(csv.reader((tmp_path / "patches" / "Train.csv").read_text().splitlines()))
    assert rows[0] == ["ID", "label", "mode"] and len(rows) - 1 == res.n_patches > 0
    assert {r[2] for r in rows[1:]} == {"s2+desc+asc"}  # each patch's input combination
    labels = {r[0]: int(r[1]) for r in rows[1:]}
    assert 0 < sum(labels.values()) == res.n_positive < len(labels)
    pid = rows[1][0]
    x = np.load(tmp_path / "patches" / f"{pid}.npy")
    assert x.shape == (64, 64, 12) and x.dtype == np.float32
    # the exported pixels are exactly what detection scored for that tile
    det = run_detection(opts, package)
    r, c = int(pid.split("_r")[1][:4]), int(pid.split("_c")[1])
    rec = next(t for t in det.records if t.row == r and t.col == c)
    f = patch_features(x.transpose(2, 0, 1)[None])
    assert np.isfinite(f["band1_mean"][0])
    assert rec.status == "ok"
    # labels agree with the polygons: the tile containing a scar's centre is positive
    gj = json.loads(Path(synthetic_scene["truth"]).read_text())
    from osgeo import ogr
    ds = ogr.Open(str(tmp_path / "patches" / "patches.gpkg"))  # keep: the layer dies with it
    lyr = ds.GetLayer(0)
    centre = ogr.CreateGeometryFromJson(json.dumps(gj["features"][0]["geometry"])).Centroid()
    hits = [f for f in lyr if f.GetGeometryRef().Contains(centre)]
    if hits:  # the scar may sit in a skipped edge tile
        assert hits[0].GetField("label") == 1 and hits[0].GetField("landslide_frac") > 0.01


def test_export_without_inventory_writes_test_csv(tmp_path, synthetic_scene, package):
    from sentinel_landslide.engine.export import export_patches

    res = export_patches(scene_options(synthetic_scene, sar=False), package, tmp_path / "p")
    assert (tmp_path / "p" / "Test.csv").exists() and not (tmp_path / "p" / "Train.csv").exists()
    assert any("only s2 inputs" in line and "S1_ASC_DVH" in line for line in res.log)
    x = np.load(next((tmp_path / "p").glob("*.npy")))
    assert np.isnan(x[..., 4:]).all() and np.isfinite(x[..., :4]).all()


def test_export_rejects_an_id_prefix_that_is_not_a_file_name(tmp_path, synthetic_scene, package):
    from sentinel_landslide.core.errors import InputError
    from sentinel_landslide.engine.export import export_patches

    with pytest.raises(InputError, match="Cannot write the patch folder: IDs must be plain file names"):
        export_patches(scene_options(synthetic_scene, sar=False), package, tmp_path / "p", prefix="site/a")
    assert not list((tmp_path / "p").glob("*.npy"))
