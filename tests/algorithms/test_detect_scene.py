"""ADAPT_TO_SCENE on landslide:detect and the command line (SYNTHETIC scene, SYNTHETIC training
table that resembles it: tests/helpers.scene_like_table): the grid is scored by the
scene-adapted package, the log says so, and QGIS and the command line give the same grid."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from ..helpers import PLUGINS, grid_rows, scene_like_table, scene_params

pytestmark = pytest.mark.slow




@pytest.fixture(scope="module")
def like_table(synthetic_scene, package, tmp_path_factory):
    return scene_like_table(synthetic_scene, package, tmp_path_factory.mktemp("scene_alg") / "table.csv.gz")


def test_parameter_and_its_default(provider):
    from qgis.core import QgsApplication

    from sentinel_landslide.training.scene_adapt import ADAPT_TO_SCENE_DEFAULT

    alg = QgsApplication.processingRegistry().algorithmById("landslide:detect")
    p = alg.parameterDefinition("ADAPT_TO_SCENE")
    assert p is not None and p.type() == "boolean" and p.defaultValue() == ADAPT_TO_SCENE_DEFAULT
    notes = (PLUGINS / "sentinel_landslide" / "docs" / "algorithms" / "_notes" / "detect.md").read_text(encoding="utf-8")
    assert "ADAPT_TO_SCENE" in notes and "train_features_7147" in notes  # the help's page says what it needs


def test_detect_adapted_to_the_scene_in_qgis_equals_the_command_line(provider, synthetic_scene, package_dir,
                                                                    like_table, tmp_path, monkeypatch):
    import processing
    from qgis.core import QgsProcessingFeedback

    monkeypatch.setenv("SENTINEL_LANDSLIDE_BASE_FEATURES", str(like_table))
    tmp_root = Path(tempfile.gettempdir())
    before = set(tmp_root.glob("sentinel-scene-*"))
    lines = []
    fb = QgsProcessingFeedback()
    fb.pushInfo = lambda m: lines.append(m)  # noqa: E731
    fb.pushWarning = lambda m: lines.append("WARNING " + m)  # noqa: E731
    res = processing.run("landslide:detect", scene_params(synthetic_scene, tmp_path / "qgis.gpkg",
                                                          MODEL=str(package_dir), ADAPT_TO_SCENE=True), feedback=fb)
    assert res["TILES"] == 70
    text = "\n".join(lines)
    assert "Scene tiles for adaptation: s2+desc+asc 70 (of 70 read)" in text
    assert "Scene weights: effective sample size" in text and "Scene-adapted package" in text
    names, qgis_rows = grid_rows(tmp_path / "qgis.gpkg")
    models = {r[names.index("model")] for r in qgis_rows}
    assert len(models) == 1 and models.pop().endswith("+scene")
    assert set(tmp_root.glob("sentinel-scene-*")) == before  # the temporary package is gone
    # the base package's grid differs (the GBMs were refitted), the command line's is the same
    plain = processing.run("landslide:detect", scene_params(synthetic_scene, tmp_path / "plain.gpkg",
                                                            MODEL=str(package_dir), ADAPT_TO_SCENE=False))
    assert plain["TILES"] == 70
    assert grid_rows(tmp_path / "plain.gpkg")[1] != qgis_rows
    args = ["detect", "--s2", synthetic_scene["S2"], "--model", str(package_dir), "--out", str(tmp_path / "cli.gpkg"),
            "--adapt-to-scene", "--base-features", str(like_table)]
    for flag in ("desc-post", "desc-pre", "asc-post", "asc-pre"):
        args += [f"--s1-{flag}", synthetic_scene["S1_" + flag.upper().replace("-", "_")]]
    env = dict(os.environ, PYTHONPATH=str(PLUGINS))
    p = subprocess.run([sys.executable, "-m", "sentinel_landslide.cli"] + args, capture_output=True, text=True,
                       env=env, timeout=600)
    assert p.returncode == 0, p.stderr
    assert "Scene-adapted package" in p.stderr
    assert json.loads(p.stdout.strip().splitlines()[-1])["tiles"] == 70
    cli_names, cli_rows = grid_rows(tmp_path / "cli.gpkg")
    assert cli_names == names and cli_rows == qgis_rows
