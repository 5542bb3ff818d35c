"""Fixtures for the installer tests: QGIS's own Python (what the plugin's pip runs with) and
whether the package index is reachable (network tests skip with the reason where not)."""
from __future__ import annotations

import os
import sys
import urllib.request

import pytest

INDEX = os.environ.get("SENTINEL_LANDSLIDE_TEST_INDEX", "https://pypi.org/simple/")


@pytest.fixture(scope="session")
def qgis_python() -> str:
    """/usr/bin/python3 on Debian (QGIS's Python: no onnxruntime, externally managed)."""
    for p in ("/usr/bin/python3",):
        if os.path.exists(p):
            return p
    return sys.executable


_REACH: list = []


def index_reachable() -> str | None:
    """None when the index answers a short HTTPS request, else why not."""
    if not _REACH:
        try:
            with urllib.request.urlopen(INDEX + "pip/", timeout=8) as r:
                _REACH.append(None if r.status == 200 else f"{INDEX} answered HTTP {r.status}")
        except Exception as exc:  # noqa: BLE001 - any failure means: no network for these tests
            _REACH.append(f"the package index {INDEX} is not reachable ({type(exc).__name__}: {exc})")
    return _REACH[0]


@pytest.fixture
def network():
    why = index_reachable()
    if why:
        pytest.skip(why)
