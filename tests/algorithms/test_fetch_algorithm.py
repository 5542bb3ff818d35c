"""landslide:fetch in QGIS Processing against real servers on 127.0.0.1 (rustac serve + a
range-honouring file server; real rasters with synthetic dates and SCL, see tests/fetch/world.py),
and fetch -> detect chained in ONE Graphical Modeler model."""
from __future__ import annotations

import csv
import os

import pytest
from qgis.core import (
    QgsApplication,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingModelAlgorithm,
    QgsProcessingModelChildAlgorithm,
    QgsProcessingModelChildParameterSource,
    QgsProcessingModelOutput,
    QgsProcessingModelParameter,
    QgsProcessingParameterExtent,
    QgsProject,
    QgsVectorLayer,
)

from ..fetch.servers import FileServer, StacServer
from ..fetch.world import EVENT, S1_EXPECTED, World
from ..helpers import shared_file

ROLES = ("S2", "S2_MASK", "S1_DESC_POST", "S1_DESC_PRE", "S1_ASC_POST", "S1_ASC_PRE")


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    world = World(tmp_path_factory.mktemp("world"), shared_file("scenes/chattogram_s2_rgbn_epsg4326.tif"),
                  shared_file("s1/sen1floods11_spain_7370579_vv_vh_db_epsg4326.tif"))
    files = FileServer(world.root / "files")
    cols, items = world.catalog(files.url)
    try:
        stac = StacServer(tmp_path_factory.mktemp("stac"), cols, items)
    except Exception:
        files.stop()
        raise
    yield world, files, stac
    stac.stop()
    files.stop()


def extent_string(world):
    x0, y0, x1, y1, crs = world.extent
    return f"{x0},{x1},{y0},{y1} [{crs}]"


def params(world, stac, out, **kw):
    p = {"EXTENT": extent_string(world), "EVENT_DATE": EVENT, "POST_DAYS": 15, "PRE_DAYS": 20, "MAX_CLOUD": 20,
         "CATALOG": 2, "CATALOG_URL": stac.url, "SOURCES": [0, 1, 2], "OUTPUT_FOLDER": str(out)}
    p.update(kw)
    return p


def test_fetch_outputs_log_and_loaded_layers(provider, servers, tmp_path):
    import processing

    world, files, stac = servers
    alg = QgsApplication.processingRegistry().algorithmById("landslide:fetch")
    assert alg.displayName() == "Fetch Sentinel-1/2 for an event (STAC)"
    assert {"EXTENT", "EVENT_DATE", "POST_DAYS", "PRE_DAYS", "MAX_CLOUD", "CATALOG", "CATALOG_URL", "SOURCES",
            "OUTPUT_FOLDER", "CACHE_FOLDER"} <= {p.name() for p in alg.parameterDefinitions()}
    assert alg.parameterDefinition("CATALOG").options()[0] == "Microsoft Planetary Computer"
    fb = QgsProcessingFeedback()
    lines = []
    fb.pushInfo = lambda m: lines.append(m)  # noqa: E731
    context = QgsProcessingContext()
    context.setProject(QgsProject.instance())
    res = processing.run("landslide:fetch", params(world, stac, tmp_path / "out"), feedback=fb, context=context)
    for role in ROLES:
        assert os.path.isfile(res[role]), role
    with open(res["ITEMS"], encoding="utf-8") as f:
        rows = {r["role"]: r for r in csv.DictReader(f)}
    assert rows["S1_DESC_PRE"]["id"] == world.s1_id(S1_EXPECTED["S1_DESC_PRE"])
    text = "\n".join(lines)
    assert "S2 rule: least cloud over the area" in text and "S1 ascending rule" in text
    loaded = {d.name for d in context.layersToLoadOnCompletion().values()}
    assert set(ROLES) <= loaded


def test_errors_are_processing_exceptions_and_leave_nothing(provider, servers, tmp_path):
    import processing

    world, _files, stac = servers
    with pytest.raises(QgsProcessingException, match="No Sentinel-2 L2A item"):
        processing.run("landslide:fetch", params(world, stac, tmp_path / "o", EVENT_DATE="2020-01-01", SOURCES=[0]))
    with pytest.raises(QgsProcessingException, match="could not be reached"):
        processing.run("landslide:fetch", params(world, stac, tmp_path / "o", CATALOG_URL="http://127.0.0.1:9"))
    assert os.listdir(tmp_path / "o") == []


@pytest.mark.slow
def test_fetch_then_detect_in_one_model(provider, servers, tmp_path):
    """One Graphical Modeler model: fetch's outputs feed detect's inputs of the same names."""
    import processing

    world, _files, stac = servers
    m = QgsProcessingModelAlgorithm("fetch_then_detect", "landslide tests")
    m.addModelParameter(QgsProcessingParameterExtent("area", "Area"), QgsProcessingModelParameter("area"))
    f = QgsProcessingModelChildAlgorithm("landslide:fetch")
    f.setChildId("fetch")
    f.addParameterSources("EXTENT", [QgsProcessingModelChildParameterSource.fromModelParameter("area")])
    for k, v in params(world, stac, tmp_path / "fetched").items():
        if k != "EXTENT":
            f.addParameterSources(k, [QgsProcessingModelChildParameterSource.fromStaticValue(v)])
    d = QgsProcessingModelChildAlgorithm("landslide:detect")
    d.setChildId("detect")
    for role in ROLES:  # S2_MASK too: fetch's SCL band masks detect's clouds
        d.addParameterSources(role, [QgsProcessingModelChildParameterSource.fromChildOutput("fetch", role)])
    if os.environ.get("SENTINEL_LANDSLIDE_TEST_PACKAGE"):
        d.addParameterSources("MODEL", [QgsProcessingModelChildParameterSource.fromStaticValue(
            os.environ["SENTINEL_LANDSLIDE_TEST_PACKAGE"])])
    out = QgsProcessingModelOutput("grid", "Landslide grid")
    out.setChildId("detect")
    out.setChildOutputName("OUTPUT")
    d.setModelOutputs({"grid": out})
    for child in (f, d):  # what the modeler's dialog fills in: each remaining parameter's default
        for pdef in child.algorithm().parameterDefinitions():
            if pdef.name() not in child.parameterSources() and not pdef.isDestination() \
                    and pdef.defaultValue() is not None:
                child.addParameterSources(pdef.name(), [
                    QgsProcessingModelChildParameterSource.fromStaticValue(pdef.defaultValue())])
    m.addChildAlgorithm(f)
    m.addChildAlgorithm(d)
    m.updateDestinationParameters()
    ok, errors = m.validate()
    assert ok, errors
    res = processing.run(m, {"area": extent_string(world), "detect:grid": str(tmp_path / "grid.gpkg")})
    grid = QgsVectorLayer(res["detect:grid"], "grid", "ogr")
    assert grid.isValid() and grid.featureCount() > 0
    probs = [ft["prob"] for ft in grid.getFeatures() if ft["status"] != "nodata"]
    assert probs and all(0.0 <= p <= 1.0 for p in probs)
    assert set(grid.fields().names()) >= {"prob", "flagged", "s2_valid", "sar_valid"}
    # the fetched SCL reached detect: the tiles' optical valid fractions come from it
    s2_valid = [ft["s2_valid"] for ft in grid.getFeatures()]
    assert min(s2_valid) < 1.0 <= max(s2_valid)  # the chosen date has a 2 % strip of cloud shadow
    fetched = [n for n in os.listdir(tmp_path / "fetched") if not n.endswith(".aux.xml")]  # GDAL statistics
    assert sorted(fetched) == sorted([f"{r}.tif" for r in ROLES] + ["items.csv"])


def test_event_date_is_a_utc_datetime_parameter(provider, servers, tmp_path):
    """EVENT_DATE is a date-time parameter; strings from qgis_process / models still work. The
    event-day descending scene D0 (2024-07-30 12:00 UTC) moves between the windows with the time."""
    import processing
    from qgis.core import QgsProcessingParameterDateTime
    from qgis.PyQt.QtCore import QDate, QDateTime, QTime

    from sentinel_landslide.rendering.compat import DATETIME_TYPE

    world, _files, stac = servers
    pdef = QgsApplication.processingRegistry().algorithmById("landslide:fetch").parameterDefinition("EVENT_DATE")
    assert isinstance(pdef, QgsProcessingParameterDateTime) and pdef.dataType() == DATETIME_TYPE

    def chosen(event, name):
        res = processing.run("landslide:fetch", params(world, stac, tmp_path / name, EVENT_DATE=event, SOURCES=[1]))
        with open(res["ITEMS"], encoding="utf-8") as f:
            rows = {r["role"]: r["id"] for r in csv.DictReader(f)}
        return rows["S1_DESC_PRE"], rows["S1_DESC_POST"]

    ids = {k: world.s1_id(k) for k in ("D0", "D1", "D3")}
    day = (ids["D3"], ids["D1"])  # a bare date: the event day's D0 is neither pre nor post
    assert chosen(EVENT, "s") == day
    assert chosen(QDateTime(QDate(2024, 7, 30), QTime(0, 0)), "q0") == day  # the widget's 00:00: the whole day
    assert chosen(QDateTime(QDate(2024, 7, 30), QTime(10, 0)), "q10") == (ids["D3"], ids["D0"])  # before D0
    assert chosen("2024-07-30T13:00", "s13") == (ids["D0"], ids["D1"])  # after D0: D0 is the pre scene
    assert chosen("2024-07-30T13:00+02:00", "off") == (ids["D3"], ids["D0"])  # 11:00 UTC: before D0
    with pytest.raises(QgsProcessingException, match="EVENT_DATE"):
        processing.run("landslide:fetch", params(world, stac, tmp_path / "bad", EVENT_DATE="30/07/2024"))
