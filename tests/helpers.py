"""Helpers shared by the tests (plain functions; fixtures live in conftest.py)."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PLUGINS = ROOT / ".build" / "plugins"
PLUGINS.mkdir(parents=True, exist_ok=True)
if not (PLUGINS / "sentinel_landslide").exists():
    (PLUGINS / "sentinel_landslide").symlink_to(ROOT)
if str(PLUGINS) not in sys.path:
    sys.path.insert(0, str(PLUGINS))

from sentinel_landslide.core.channels import S1_ROLES  # noqa: E402

SHARED = ROOT.parent / "shared" / "data"


def shared_file(rel: str) -> Path:
    """A file of ../shared/data, or skip the test cleanly where it is absent."""
    p = SHARED / rel
    if not p.exists():
        pytest.skip(f"../shared/data/{rel} is not available on this machine")
    return p


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
