"""Shared fixtures.  The plugin is imported as ``sentinel_landslide`` through a symlink
in .build/plugins (what QGIS_PLUGINPATH points at), exactly as QGIS loads it.

Two groups: tests under ``algorithms/``, ``gui/`` and ``integration/`` (and any test
using a QGIS fixture) are marked ``qgis``; the rest run with no QGIS application at all
(``./build.sh test`` runs them first with ``-p no:pytest_qgis``, and fails if anything
imported qgis)."""
from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

from .helpers import ROOT, ensure_provider

os.environ.setdefault("XDG_RUNTIME_DIR", "/tmp/runtime-" + str(os.getuid()))
Path(os.environ["XDG_RUNTIME_DIR"]).mkdir(mode=0o700, exist_ok=True)

QGIS_DIRS = ("algorithms", "gui", "integration")
# fixtures that need a running QGIS (qgis_app, qgis_iface and qgis_parent are autouse: not telling)
QGIS_FIXTURES = {"provider", "qgis_canvas", "qgis_processing", "qgis_new_project"}


def pytest_ignore_collect(collection_path, config):
    """Without pytest-qgis the QGIS folders are not even imported (their modules import qgis)."""
    if not config.pluginmanager.has_plugin("pytest_qgis"):
        p = Path(collection_path)
        return p.parent == ROOT / "tests" and p.name in QGIS_DIRS or None
    return None


def pytest_collection_modifyitems(config, items):
    tests = ROOT / "tests"
    for item in items:
        rel = Path(str(item.fspath)).relative_to(tests).parts
        if rel[0] in QGIS_DIRS or QGIS_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.qgis)


def pytest_sessionfinish(session, exitstatus):
    """Without pytest-qgis nothing may have imported QGIS: the engine runs without it."""
    if not session.config.pluginmanager.has_plugin("pytest_qgis") and "qgis.core" in sys.modules:
        print("\nERROR: a test outside the qgis group imported qgis.core", file=sys.stderr)
        session.exitstatus = 1


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


@pytest.fixture(scope="session")
def provider(qgis_processing):
    return ensure_provider()


@pytest.fixture(scope="session", autouse=True)
def _collect_before_qgis_exits(request):
    """Python wrappers of QGIS objects must die while QGIS is alive: collect them before
    pytest-qgis calls exitQgis (after it, a late garbage collection segfaults)."""
    import gc

    if request.config.pluginmanager.has_plugin("pytest_qgis"):
        request.getfixturevalue("qgis_app")  # torn down after this fixture
    yield
    gc.collect()
