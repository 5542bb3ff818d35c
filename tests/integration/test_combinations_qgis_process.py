"""A partial, cloudy input combination through QGIS's command-line runner (qgis_process.bin),
as on a server: S2 with its SCL mask, the descending orbit post and pre, the ascending
orbit post-event only (SYNTHETIC scene)."""
from __future__ import annotations

import os
import shutil

import pytest
from qgis.core import QgsVectorLayer

from ..helpers import scene_params


@pytest.mark.slow
def test_qgis_process_runs_a_partial_cloudy_combination(tmp_path_factory, tmp_path):
    if not shutil.which("qgis_process.bin") and not os.path.exists("/usr/bin/qgis_process.bin"):
        pytest.skip("qgis_process.bin is not installed")
    from sentinel_landslide.engine.synthetic import make_scene
    from sentinel_landslide.scripts.qgis_env import run_algorithm

    scene = make_scene(tmp_path_factory.mktemp("cloudy_qp"), width=256, height=256, seed=3, cloud=0.55)
    params = scene_params(scene, tmp_path / "qp.gpkg", S2_MASK=scene["S2_MASK"])
    del params["S1_ASC_PRE"]
    rc, res, log = run_algorithm("landslide:detect", params)
    assert rc == 0, log
    out = res["results"]
    assert out["MODE"] == "s2+desc+asc_post"
    layer = QgsVectorLayer(str(tmp_path / "qp.gpkg"), "g", "ogr")
    feats = list(layer.getFeatures())
    assert len(feats) == out["TILES"] == 16
    from sentinel_landslide.core.channels import COMBINATION_BY_NAME
    from sentinel_landslide.engine.detect import offered_combinations, ranked_within
    from sentinel_landslide.models.package import load_package

    offered = offered_combinations(load_package(params.get("MODEL")))
    clear = ranked_within(COMBINATION_BY_NAME["s2+desc+asc_post"], offered)[0].name
    cloudy = ranked_within(COMBINATION_BY_NAME["desc+asc_post"], offered)
    under = [f for f in feats if f["col"] < 2]  # under the cloud's core (x < 1350 m)
    assert all(f["mode"] == clear for f in feats if f["col"] == 3)
    if cloudy:
        assert all(f["mode"] == cloudy[0].name and f["status"] == "ok" for f in under)
    else:  # the package offers nothing for SAR alone: those tiles are nodata
        assert all(f["status"] == "nodata" for f in under)
    assert sum(f["status"] == "nodata" for f in feats) == out["NODATA"]
    assert any(line for line in log.splitlines() if "Cloud mask:" in line and "% of the area masked" in line)
