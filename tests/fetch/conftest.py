"""Fixtures of the fetch tests: the STAC world (real rasters, synthetic dates and SCL) and the
servers on 127.0.0.1 that serve it; every server is stopped in teardown."""
from __future__ import annotations

import pytest

from ..helpers import shared_file
from .servers import FileServer, StacServer
from .world import World


@pytest.fixture(scope="session")
def world(tmp_path_factory):
    s2 = shared_file("scenes/chattogram_s2_rgbn_epsg4326.tif")
    s1 = shared_file("s1/sen1floods11_spain_7370579_vv_vh_db_epsg4326.tif")
    return World(tmp_path_factory.mktemp("stac_world"), s2, s1)


@pytest.fixture(scope="session")
def files(world):
    srv = FileServer(world.root / "files")
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def stac(world, files, tmp_path_factory):
    cols, items = world.catalog(files.url)
    srv = StacServer(tmp_path_factory.mktemp("stac"), cols, items)
    yield srv
    srv.stop()
