"""Shared fixtures.  The plugin is imported as ``sentinel_landslide`` through a symlink
in .build/plugins (what QGIS_PLUGINPATH points at), exactly as QGIS loads it."""
from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PLUGINS = ROOT / ".build" / "plugins"
PLUGINS.mkdir(parents=True, exist_ok=True)
if not (PLUGINS / "sentinel_landslide").exists():
    (PLUGINS / "sentinel_landslide").symlink_to(ROOT)
sys.path.insert(0, str(PLUGINS))
os.environ.setdefault("XDG_RUNTIME_DIR", "/tmp/runtime-" + str(os.getuid()))
Path(os.environ["XDG_RUNTIME_DIR"]).mkdir(mode=0o700, exist_ok=True)

SHARED = ROOT.parent / "shared" / "data"
S1_ROLES = ("S1_DESC_POST", "S1_DESC_PRE", "S1_ASC_POST", "S1_ASC_PRE")


def shared_file(rel: str) -> Path:
    """A file of ../shared/data, or skip the test cleanly where it is absent."""
    p = SHARED / rel
    if not p.exists():
        pytest.skip(f"../shared/data/{rel} is not available on this machine")
    return p


@pytest.fixture(scope="session")
def package_dir() -> Path:
    from sentinel_landslide.models.package import BUNDLED

    d = Path(os.environ.get("SENTINEL_LANDSLIDE_TEST_PACKAGE", BUNDLED))
    if not (d / "manifest.json").exists():
        pytest.skip("no model package built yet (./build.sh train)")
    return d


@pytest.fixture(scope="session")
def package(package_dir):
    from sentinel_landslide.models.package import load_package

    return load_package(package_dir)


@pytest.fixture()
def package_copy(package_dir, tmp_path) -> Path:
    """A private copy of the package, for tampering tests."""
    dst = tmp_path / "pkg"
    shutil.copytree(package_dir, dst)
    return dst


@pytest.fixture(scope="session")
def synthetic_scene(tmp_path_factory) -> dict:
    """SYNTHETIC S2 (UTM, 10 m) + S1 (EPSG:4326 and 20 m UTM) scene with planted scars."""
    from sentinel_landslide.engine.synthetic import make_scene

    return make_scene(tmp_path_factory.mktemp("synthetic"), width=640, height=448, seed=11)


def scene_options(scene: dict, sar: bool = True, s2: bool = True, **kw):
    from sentinel_landslide.engine.align import InputLayer
    from sentinel_landslide.engine.detect import DetectOptions

    o = DetectOptions(**kw)
    if s2:
        o.s2 = InputLayer("S2", scene["S2"], [1, 2, 3, 4])
    if sar:
        o.s1 = {r: InputLayer(r, scene[r], [1, 2]) for r in S1_ROLES}
    return o


def scene_params(scene: dict, out, sar: bool = True, s2: bool = True, **extra) -> dict:
    """landslide:detect parameters for a scene dict; MODEL from the test package override."""
    p = {"OUTPUT": str(out)}
    if os.environ.get("SENTINEL_LANDSLIDE_TEST_PACKAGE"):  # default: the bundled package
        p["MODEL"] = os.environ["SENTINEL_LANDSLIDE_TEST_PACKAGE"]
    if s2:
        p["S2"] = scene["S2"]
    if sar:
        p.update({r: scene[r] for r in S1_ROLES})
    p.update(extra)
    return p


_PROVIDER = []  # keep the Python wrapper alive: QGIS does not own it


def ensure_provider():
    """Register the 'landslide' provider with QGIS Processing unless it already is."""
    from qgis.core import QgsApplication

    from sentinel_landslide.algorithms.provider import LandslideProvider

    reg = QgsApplication.processingRegistry()
    if reg.providerById("landslide") is None:
        _PROVIDER.append(LandslideProvider())
        assert reg.addProvider(_PROVIDER[-1])
    return reg.providerById("landslide")


@pytest.fixture(scope="session")
def provider(qgis_processing):
    return ensure_provider()


@pytest.fixture(scope="session", autouse=True)
def _collect_before_qgis_exits(qgis_app):
    """Python wrappers of QGIS objects must die while QGIS is alive: collect them before
    pytest-qgis calls exitQgis (after it, a late garbage collection segfaults)."""
    import gc

    yield
    gc.collect()
