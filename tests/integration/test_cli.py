"""The QGIS-free command line gives the same grid as the engine."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow  # fresh Python processes


def _run(args):
    env = dict(os.environ, PYTHONPATH=str(ROOT / ".build" / "plugins"))
    return subprocess.run([sys.executable, "-m", "sentinel_landslide.cli"] + args, capture_output=True,
                          text=True, env=env, timeout=600)


def test_cli_detect_and_export(tmp_path, synthetic_scene, package_dir):
    from osgeo import ogr

    args = ["--s2", synthetic_scene["S2"], "--model", str(package_dir)]
    for flag in ("desc-post", "desc-pre", "asc-post", "asc-pre"):
        args += [f"--s1-{flag}", synthetic_scene["S1_" + flag.upper().replace("-", "_")]]
    p = _run(["detect"] + args + ["--out", str(tmp_path / "g.fgb"), "--raster", str(tmp_path / "p.tif")])
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout.strip().splitlines()[-1])
    assert out["mode"] == "s2+desc+asc" and out["tiles"] == 70
    assert sum(out["tiles_per_mode"].values()) == 70
    ds = ogr.Open(str(tmp_path / "g.fgb"))
    assert ds.GetLayer(0).GetFeatureCount() == 70
    p = _run(["export"] + args + ["--out", str(tmp_path / "patches"), "--inventory", synthetic_scene["truth"]])
    assert p.returncode == 0, p.stderr
    n = json.loads(p.stdout.strip().splitlines()[-1])["patches"]
    assert n == len(list((tmp_path / "patches").glob("*.npy"))) > 0
    rows = (tmp_path / "patches" / "Train.csv").read_text().splitlines()
    assert rows[0] == "ID,label,mode" and len(rows) - 1 == n  # the inventory gave labels; mode: each patch's combination
    assert (tmp_path / "patches" / "Train.csv").exists()


def test_cli_reports_errors_plainly(tmp_path, package_dir):
    p = _run(["detect", "--model", str(package_dir), "--out", str(tmp_path / "x.gpkg")])
    assert p.returncode == 2 and "No input was given" in p.stderr
    assert not (tmp_path / "x.gpkg").exists()
