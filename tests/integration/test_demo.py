"""./build.sh demo's job, small: scene -> qgis_process -> grid + map, exit code 0."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_demo_runs_end_to_end(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT / ".build" / "plugins"), QT_QPA_PLATFORM="offscreen")
    p = subprocess.run([sys.executable, "-m", "sentinel_landslide.scripts.demo", "--out", str(tmp_path),
                        "--size", "384"], env=env, capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]  # a crash at exit fails build.sh demo
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["tiles"] == 30 and summary["mode"] == "s2+desc+asc"
    from osgeo import gdal, ogr

    grid = ogr.Open(str(tmp_path / "landslide_grid.gpkg"))
    assert grid.GetLayer(0).GetFeatureCount() == summary["tiles"]
    png = gdal.Open(str(tmp_path / "landslide_map.png")).ReadAsArray()
    assert png.ndim == 3 and png.shape[0] >= 3 and min(png.shape[1:]) >= 200
    # a drawn map, not a blank canvas: many distinct colours (tiles, scene, legend)
    assert len(np.unique(png[:3].reshape(3, -1), axis=1).T) > 100
    assert "tiles flagged" in p.stdout
