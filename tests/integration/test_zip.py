"""./build.sh package: the zip plugins.qgis.org and "Install from ZIP" accept."""
from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def plugin_zip():
    env = dict(os.environ, PYTHONPATH=str(ROOT / ".build" / "plugins"))
    subprocess.run([sys.executable, "-m", "sentinel_landslide.scripts.package"], check=True, env=env, cwd=ROOT)
    return ROOT / "dist" / "sentinel_landslide.zip"


def test_zip_is_small_clean_and_has_metadata(plugin_zip):
    assert plugin_zip.stat().st_size < 25 * 1024 * 1024
    names = zipfile.ZipFile(plugin_zip).namelist()
    assert all(n.startswith("sentinel_landslide/") for n in names)
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc") or "/.git" in n or "/tests/" in n]
    for required in ("metadata.txt", "__init__.py", "LICENSE", "models/bundled/manifest.json",
                     "resources/landslide_grid.qml", "algorithms/detect.py", "deps/paths.py", "deps/__main__.py",
                     "gui/deps_dialog.py"):
        assert f"sentinel_landslide/{required}" in names, required
    meta = zipfile.ZipFile(plugin_zip).read("sentinel_landslide/metadata.txt").decode()
    for key in ("name=", "qgisMinimumVersion=3.22", "description=", "version=", "author=", "email=",
                "about=", "tracker=", "repository=", "hasProcessingProvider=yes", "supportsQt6=True",
                "category=Raster", "tags="):
        assert key in meta, key


@pytest.mark.slow
def test_unzipped_plugin_loads_in_qgis_process(plugin_zip, tmp_path):
    """Install the zip as QGIS would (unpack into a plugin folder) and list its algorithms."""
    from sentinel_landslide.scripts.qgis_env import QGIS_PROCESS, qgis_env

    if not os.path.exists(QGIS_PROCESS):
        pytest.skip("qgis_process.bin is not installed")
    plugins = tmp_path / "plugins"
    zipfile.ZipFile(plugin_zip).extractall(plugins)
    env = qgis_env()
    env["QGIS_PLUGINPATH"] = str(plugins)
    # the venv's packages stay visible, but not the repo checkout
    env["PYTHONPATH"] = os.pathsep.join(p for p in env["PYTHONPATH"].split(os.pathsep) if ".build" not in p)
    subprocess.run([QGIS_PROCESS, "plugins", "enable", "sentinel_landslide"], env=env, check=True,
                   capture_output=True, timeout=300)
    out = subprocess.run([QGIS_PROCESS, "list"], env=env, capture_output=True, text=True, timeout=300)
    assert "landslide:detect" in out.stdout, out.stdout[-2000:] + out.stderr[-2000:]
    help_ = subprocess.run([QGIS_PROCESS, "help", "landslide:detect"], env=env, capture_output=True,
                           text=True, timeout=300)
    assert str(plugins) in help_.stdout or "bundled" in help_.stdout
