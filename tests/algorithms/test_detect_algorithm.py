"""landslide:detect as analysts run it: processing.run inside QGIS (pytest-qgis) and
qgis_process.bin in a subprocess."""
from __future__ import annotations

import os
import shutil

import pytest
from qgis.core import QgsApplication, QgsProcessingException, QgsProcessingFeedback, QgsVectorLayer

from ..helpers import scene_params, shared_file


def test_provider_and_parameter_names_are_stable(provider):
    alg = QgsApplication.processingRegistry().algorithmById("landslide:detect")
    assert alg is not None and alg.displayName() == "Detect landslides (Sentinel-1/2)"
    names = {p.name() for p in alg.parameterDefinitions()}
    assert {"S2", "S2_RED", "S2_GREEN", "S2_BLUE", "S2_NIR", "S1_DESC_POST", "S1_DESC_PRE", "S1_ASC_POST",
            "S1_ASC_PRE", "S2_MASK", "MODEL", "THRESHOLD", "EXTENT", "OUTPUT", "OUTPUT_RASTER"} <= names
    assert alg.shortHelpString()
    # the unit enums' options map by index onto the engine's choices (saved models and batch
    # files store the index, so new options go at the end)
    from sentinel_landslide.engine.units import S2_OFFSET_CHOICES, S2_SCALE_CHOICES, SAR_UNIT_CHOICES

    for name, choices in (("S2_SCALE", S2_SCALE_CHOICES), ("S2_OFFSET", S2_OFFSET_CHOICES),
                          ("SAR_UNITS", SAR_UNIT_CHOICES)):
        assert len(alg.parameterDefinition(name).options()) == len(choices), name
    assert SAR_UNIT_CHOICES[:3] == ("auto", "dB", "linear")


def test_sar_units_parameter_reaches_the_engine(provider, synthetic_scene, tmp_path):
    """SYNTHETIC scene: SAR_UNITS = 3 (linear amplitude) on dB layers is the analyst's word,
    so the log says amplitude and the dB values are read as amplitudes (different scores)."""
    import processing

    fb = QgsProcessingFeedback()
    lines = []
    fb.pushInfo = lambda m: lines.append(m)  # noqa: E731
    base = processing.run("landslide:detect", scene_params(synthetic_scene, tmp_path / "a.gpkg"))
    forced = processing.run("landslide:detect", scene_params(synthetic_scene, tmp_path / "b.gpkg", SAR_UNITS=3),
                            feedback=fb)
    assert sum("linear amplitude (set)" in line for line in lines) == 4
    probs = [[f["prob"] for f in QgsVectorLayer(r["OUTPUT"], "g", "ogr").getFeatures()] for r in (base, forced)]
    assert len(probs[0]) == len(probs[1]) and probs[0] != probs[1]


def test_qt5_scanner_catches_each_qt5_only_spelling():
    """The scanner's self-test: every rule fires on its Qt5 form and not on the Qt6-safe one."""
    from sentinel_landslide.scripts.qt5_scan import scan_text

    qt5 = {
        "unscoped enum": ["lbl.setAlignment(Qt.AlignLeft)", "t = QgsWkbTypes.PolygonGeometry",
                          "img = QImage(s, QImage.Format_ARGB32)", "sink.addFeature(f, QgsFeatureSink.FastInsert)"],
        "exec_()": ["dialog.exec_()"],
        "QRegExp": ["rx = QRegExp('a+')"],
        "QVariant type enum": ["QgsField('n', QVariant.Double)"],
        "PyQt5 import": ["from PyQt5.QtCore import Qt"],
        "QAction from QtWidgets without a QtGui fallback": ["from qgis.PyQt.QtWidgets import QAction, QMenu"],
    }
    for rule, lines in qt5.items():
        for line in lines:
            assert [r for _, r, _ in scan_text(line)] == [rule], line
    safe = ["lbl.setAlignment(Qt.AlignmentFlag.AlignLeft)", "t = Qgis.GeometryType.Polygon",
            "img = QImage(s, QImage.Format.Format_ARGB32)", "dialog.exec()", "p = QgsProject.instance()",
            "out = QgsProcessing.TEMPORARY_OUTPUT", "x = 1  # Qt.AlignLeft in a comment",
            "from qgis.PyQt.QtWidgets import QMenu",
            "try:\n    from qgis.PyQt.QtGui import QAction\nexcept ImportError:\n"
            "    from qgis.PyQt.QtWidgets import QAction"]
    for line in safe:
        assert scan_text(line) == [], line


def test_qgis_facing_code_uses_no_qt5_only_spellings():
    """All shell code (plugin.py, algorithms/, gui/, rendering/, scripts/) keeps to spellings
    QGIS 4 (Qt6) accepts; rendering/compat.py alone holds the Qt5 fallbacks."""
    from sentinel_landslide.scripts.qt5_scan import ROOT, scan_tree, shell_files

    scanned = {p.relative_to(ROOT).as_posix() for p in shell_files()}
    assert {"plugin.py", "algorithms/detect.py", "gui/review_dock.py", "rendering/chips.py",
            "scripts/render.py"} <= scanned and "rendering/compat.py" not in scanned
    assert scan_tree() == []
    # and what compat gives works in this QGIS: parameters built with it keep their types
    from qgis.core import QgsProcessingParameterFile, QgsProcessingParameterNumber

    from sentinel_landslide.rendering import compat

    assert QgsProcessingParameterNumber("x", "x", compat.NUMBER_DOUBLE).dataType() == compat.NUMBER_DOUBLE
    assert QgsProcessingParameterNumber("n", "n", compat.NUMBER_INTEGER).dataType() == compat.NUMBER_INTEGER
    assert compat.NUMBER_DOUBLE != compat.NUMBER_INTEGER
    assert QgsProcessingParameterFile("f", "f", compat.FILE_FOLDER).behavior() == compat.FILE_FOLDER


def test_metadata_lists_the_plugin_for_qgis_4():
    """plugins.qgis.org decides QGIS 4 compatibility from qgisMaximumVersion (>= 4.0)."""
    import configparser

    from sentinel_landslide.scripts.qt5_scan import ROOT

    meta = configparser.ConfigParser()
    meta.read(ROOT / "metadata.txt", encoding="utf-8")
    general = meta["general"]
    major = int(general["qgisMaximumVersion"].split(".")[0])
    assert major >= 4
    assert general["supportsQt6"] == "True"
    assert tuple(map(int, general["qgisMinimumVersion"].split("."))) <= (3, 22)


def test_detect_combined_writes_a_grid(provider, synthetic_scene, tmp_path, package):
    import processing

    out = tmp_path / "grid.gpkg"
    res = processing.run("landslide:detect", scene_params(synthetic_scene, out, OUTPUT_RASTER=str(tmp_path / "p.tif")))
    assert res["MODE"] == "s2+desc+asc"
    assert res["TILES_PER_MODE"] == f"s2+desc+asc: {res['TILES'] - res['NODATA']}" + (
        f"; nodata: {res['NODATA']}" if res["NODATA"] else "")
    layer = QgsVectorLayer(res["OUTPUT"], "grid", "ogr")
    assert layer.isValid() and layer.featureCount() == res["TILES"] == 70
    fields = [f.name() for f in layer.fields()]
    for f in ("tile_id", "row", "col", "prob", "flagged", "status", "mode", "s2_valid", "sar_valid", "valid_frac",
              "model"):
        assert f in fields
    members = [m["name"] for m in package.members_for("combined")]
    assert all("p_" + m in fields for m in members)
    feats = list(layer.getFeatures())
    assert sum(1 for f in feats if f["flagged"]) == res["FLAGGED"]
    assert all(f["mode"] == "s2+desc+asc" for f in feats if f["status"] == "ok")
    assert layer.crs().authid() == "EPSG:32646"
    assert os.path.exists(res["OUTPUT_RASTER"])


def test_detect_optical_only_and_sar_only(provider, synthetic_scene, tmp_path):
    import processing

    r1 = processing.run("landslide:detect", scene_params(synthetic_scene, tmp_path / "o.gpkg", sar=False))
    assert r1["MODE"] == "s2"
    r2 = processing.run("landslide:detect", scene_params(synthetic_scene, tmp_path / "s.gpkg", s2=False))
    assert r2["MODE"] == "desc+asc"


def test_sar_only_strip_beside_s2_is_scored_in_sar_mode(provider, tmp_path):
    """The processing area is the union of the inputs: S2 cut to the scene's middle, SAR
    over all of it (SYNTHETIC); the tiles beside the S2 footprint are in the grid, scored
    by the SAR members, their mode field saying so."""
    import processing
    from osgeo import gdal

    from sentinel_landslide.engine.synthetic import make_scene

    scene = make_scene(tmp_path / "scene", width=320, height=192, seed=3)
    scene["S2"] = str(tmp_path / "s2_part.tif")
    gdal.Translate(scene["S2"], str(tmp_path / "scene" / "s2.tif"), srcWin=[48, 0, 192, 192])
    res = processing.run("landslide:detect", scene_params(scene, tmp_path / "g.gpkg"))
    assert res["MODE"] == "s2+desc+asc"
    layer = QgsVectorLayer(res["OUTPUT"], "grid", "ogr")
    feats = {(f["row"], f["col"]): f for f in layer.getFeatures()}
    cols = {c for _r, c in feats}
    assert cols == set(range(6))  # a tile column west of S2, two east (the last too thin to score)
    for (_r, c), f in feats.items():
        want = {0: "desc+asc", 4: "desc+asc", 5: None}.get(c, "s2+desc+asc")
        assert (f["mode"] or None) == want, (c, f["mode"])
        if want == "desc+asc":
            assert f["status"] == "ok" and f["s2_valid"] == 0 and f["prob"] is not None
    assert "desc+asc: 6" in res["TILES_PER_MODE"]


@pytest.mark.parametrize("case, message", [
    ("nothing", "No input was given"),
    ("badband", "band 9 does not exist"),
    ("tampered", "checksum"),
    ("notpackage", "no manifest.json"),
])
def test_bad_input_raises_and_writes_nothing(provider, synthetic_scene, tmp_path, package_copy, case, message):
    import json

    import processing

    out = tmp_path / "never.gpkg"
    params = scene_params(synthetic_scene, out, sar=False)
    if case == "nothing":
        params = {k: v for k, v in params.items() if k in ("OUTPUT", "MODEL")}
    elif case == "badband":
        params["S2_NIR"] = 9
    elif case == "tampered":
        man = json.loads((package_copy / "manifest.json").read_text())
        f = package_copy / man["members"][0]["file"]
        f.write_bytes(f.read_bytes() + b" ")
        params["MODEL"] = str(package_copy)
    elif case == "notpackage":
        params["MODEL"] = str(tmp_path)
    with pytest.raises(QgsProcessingException, match=message):
        processing.run("landslide:detect", params)
    assert not out.exists()


def test_cancel_leaves_no_output(provider, synthetic_scene, tmp_path):
    import processing

    out = tmp_path / "cancelled.gpkg"
    fb = QgsProcessingFeedback()
    fb.progressChanged.connect(lambda _p: fb.cancel())
    with pytest.raises(QgsProcessingException, match="Cancelled"):
        processing.run("landslide:detect", scene_params(synthetic_scene, out), feedback=fb)
    assert not out.exists()


def test_threshold_parameter_overrides_the_package(provider, synthetic_scene, tmp_path):
    import processing

    res = processing.run("landslide:detect", scene_params(synthetic_scene, tmp_path / "t.gpkg", THRESHOLD=0.0001))
    assert res["THRESHOLD"] == pytest.approx(0.0001)
    assert res["FLAGGED"] == res["TILES"]  # every scored tile passes a ~0 threshold


def test_real_chattogram_scene_optical_only(provider, tmp_path):
    """REAL Sentinel-2 (EPSG:4326, no offset, 0 = nodata): warped to UTM 46N, offset added."""
    import processing

    scene = shared_file("scenes/chattogram_s2_rgbn_epsg4326.tif")
    fb = QgsProcessingFeedback()
    logs = []
    fb.pushInfo = lambda m: logs.append(m)  # noqa: E731
    res = processing.run("landslide:detect", scene_params({"S2": str(scene)}, tmp_path / "ctg.gpkg", sar=False), feedback=fb)
    assert res["MODE"] == "s2"
    layer = QgsVectorLayer(res["OUTPUT"], "g", "ogr")
    assert layer.crs().authid() == "EPSG:32646"
    statuses = [f["status"] for f in layer.getFeatures()]
    assert statuses.count("ok") > 100
    assert any("offset absent" in m for m in logs)


@pytest.mark.slow
def test_qgis_process_subprocess(synthetic_scene, tmp_path):
    """The same algorithm through QGIS's command-line runner, as on a server."""
    if not shutil.which("qgis_process.bin") and not os.path.exists("/usr/bin/qgis_process.bin"):
        pytest.skip("qgis_process.bin is not installed")
    from sentinel_landslide.scripts.qgis_env import run_algorithm

    out = tmp_path / "cli.gpkg"
    rc, res, log = run_algorithm("landslide:detect", scene_params(synthetic_scene, out))
    assert rc == 0, log
    assert res["results"]["MODE"] == "s2+desc+asc"
    assert QgsVectorLayer(str(out), "g", "ogr").featureCount() == res["results"]["TILES"] == 70


def test_output_is_loaded_styled(provider, synthetic_scene, tmp_path, qgis_new_project):
    """runAndLoadResults (what the toolbox does) puts the grid on the map with the bundled style."""
    import processing
    from qgis.core import QgsGraduatedSymbolRenderer, QgsProject

    res = processing.runAndLoadResults("landslide:detect", scene_params(synthetic_scene, tmp_path / "styled.gpkg"))
    layers = [lyr for lyr in QgsProject.instance().mapLayers().values() if lyr.source().startswith(str(tmp_path))]
    assert layers, res
    r = layers[0].renderer()
    assert isinstance(r, QgsGraduatedSymbolRenderer) and r.classAttribute() == "prob"
    assert len(r.ranges()) == 5
    assert layers[0].name() == "Landslide probability grid"


def test_detect_inside_a_graphical_model(provider, synthetic_scene, tmp_path):
    """A model (what the Graphical Modeler builds) chains detect with a native algorithm,
    twice in a row: the algorithm keeps no state between runs."""
    import processing
    from qgis.core import (
        QgsProcessingModelAlgorithm,
        QgsProcessingModelChildAlgorithm,
        QgsProcessingModelChildParameterSource,
        QgsProcessingModelOutput,
        QgsProcessingModelParameter,
        QgsProcessingParameterRasterLayer,
    )

    model = QgsProcessingModelAlgorithm("flagged tiles", "landslide tests")
    model.addModelParameter(QgsProcessingParameterRasterLayer("s2", "S2"), QgsProcessingModelParameter("s2"))
    det = QgsProcessingModelChildAlgorithm("landslide:detect")
    det.setChildId("detect")
    det.addParameterSources("S2", [QgsProcessingModelChildParameterSource.fromModelParameter("s2")])
    det.addParameterSources("OUTPUT", [QgsProcessingModelChildParameterSource.fromStaticValue("TEMPORARY_OUTPUT")])
    if os.environ.get("SENTINEL_LANDSLIDE_TEST_PACKAGE"):
        det.addParameterSources("MODEL", [QgsProcessingModelChildParameterSource.fromStaticValue(
            os.environ["SENTINEL_LANDSLIDE_TEST_PACKAGE"])])
    # as the Modeler's dialog does: every other mandatory parameter gets its default
    from qgis.core import QgsApplication, QgsProcessingParameterDefinition
    alg = QgsApplication.processingRegistry().algorithmById("landslide:detect")
    for p in alg.parameterDefinitions():
        if p.name() not in det.parameterSources() and not p.flags() & QgsProcessingParameterDefinition.FlagOptional:
            det.addParameterSources(p.name(), [QgsProcessingModelChildParameterSource.fromStaticValue(p.defaultValue())])
    model.addChildAlgorithm(det)
    ext = QgsProcessingModelChildAlgorithm("native:extractbyattribute")
    ext.setChildId("extract")
    ext.addParameterSources("INPUT", [QgsProcessingModelChildParameterSource.fromChildOutput("detect", "OUTPUT")])
    ext.addParameterSources("FIELD", [QgsProcessingModelChildParameterSource.fromStaticValue("status")])
    ext.addParameterSources("OPERATOR", [QgsProcessingModelChildParameterSource.fromStaticValue(0)])
    ext.addParameterSources("VALUE", [QgsProcessingModelChildParameterSource.fromStaticValue("ok")])
    out = QgsProcessingModelOutput("scored", "Scored tiles")
    out.setChildOutputName("OUTPUT")
    ext.setModelOutputs({"scored": out})
    model.addChildAlgorithm(ext)
    ok, errors = model.validate()
    assert ok, errors
    counts = []
    for i in range(2):
        res = processing.run(model, {"s2": synthetic_scene["S2"], "extract:scored": str(tmp_path / f"m{i}.gpkg")})
        counts.append(QgsVectorLayer(res["extract:scored"], "m", "ogr").featureCount())
    assert counts[0] == counts[1] == 70


def test_band_parameters_unset_read_the_band_names_and_set_ones_are_kept(provider, synthetic_scene, tmp_path):
    """An S2 stack with named bands: leaving S2_RED.. unset scores like giving 4, 3, 2, 6;
    a wrong explicit choice is honoured (and scores differently)."""
    import processing

    from ..engine.test_detect import rgbn_stack

    stack = rgbn_stack(synthetic_scene["S2"], tmp_path / "stack.tif")

    def probs(name, **bands):
        res = processing.run("landslide:detect", scene_params(synthetic_scene, tmp_path / f"{name}.gpkg", sar=False,
                                                              S2=stack, **bands))
        return [f["prob"] for f in QgsVectorLayer(res["OUTPUT"], name, "ogr").getFeatures()]

    auto = probs("auto")
    assert auto == probs("explicit", S2_RED=4, S2_GREEN=3, S2_BLUE=2, S2_NIR=6)
    assert auto != probs("wrong", S2_RED=1, S2_GREEN=2, S2_BLUE=3, S2_NIR=4)


def test_cloud_mask_parameter_and_per_mode_counts(provider, tmp_path_factory, tmp_path):
    """S2_MASK (a 20 m SCL in EPSG:4326 of a SYNTHETIC cloudy scene): the clouded tiles are
    scored by the SAR members, and the outputs count tiles per mode."""
    import processing

    from sentinel_landslide.engine.synthetic import make_scene

    scene = make_scene(tmp_path_factory.mktemp("cloudy_alg"), width=256, height=256, seed=3, cloud=0.55)
    res = processing.run("landslide:detect", scene_params(scene, tmp_path / "c.gpkg", S2_MASK=scene["S2_MASK"]))
    counts = dict(kv.split(": ") for kv in res["TILES_PER_MODE"].split("; "))
    assert int(counts["desc+asc"]) >= 4 and int(counts["s2+desc+asc"]) >= 4
    layer = QgsVectorLayer(res["OUTPUT"], "g", "ogr")
    feats = list(layer.getFeatures())
    assert sum(1 for f in feats if f["mode"] == "desc+asc") == int(counts["desc+asc"])
    assert all(f["s2_valid"] < 0.5 for f in feats if f["mode"] == "desc+asc")


def test_cascade_parameters_and_scored_by_field(provider, synthetic_scene, tmp_path):
    """FULL_ENSEMBLE, CASCADE_MARGIN and EXECUTION_PROVIDER are advanced parameters; the
    default run records scored_by per tile, FULL_ENSEMBLE scores every tile 'full' with the
    same flags, and a provider this build lacks falls back to the CPU with a warning."""
    import processing
    from qgis.core import QgsProcessingParameterDefinition

    alg = QgsApplication.processingRegistry().algorithmById("landslide:detect")
    for name in ("FULL_ENSEMBLE", "CASCADE_MARGIN", "EXECUTION_PROVIDER"):
        p = alg.parameterDefinition(name)
        assert p is not None and p.flags() & QgsProcessingParameterDefinition.FlagAdvanced, name
    assert alg.parameterDefinition("FULL_ENSEMBLE").defaultValue() is False
    adapt = QgsApplication.processingRegistry().algorithmById("landslide:adapt")
    assert adapt.parameterDefinition("EXECUTION_PROVIDER") is not None

    class Feedback(QgsProcessingFeedback):
        def __init__(self):
            super().__init__()
            self.lines = []

        def pushWarning(self, text):  # noqa: N802 (QGIS API)
            self.lines.append(text)

        def pushInfo(self, text):  # noqa: N802 (QGIS API)
            self.lines.append(text)

    runs = {}
    for key, extra in (("cascade", {"EXECUTION_PROVIDER": "NoSuchExecutionProvider"}), ("full", {"FULL_ENSEMBLE": True})):
        fb = Feedback()
        res = processing.run("landslide:detect", scene_params(synthetic_scene, tmp_path / f"{key}.gpkg", **extra),
                             feedback=fb)
        layer = QgsVectorLayer(res["OUTPUT"], key, "ogr")
        assert "scored_by" in layer.fields().names()
        runs[key] = ({f["tile_id"]: (f["flagged"], f["scored_by"]) for f in layer.getFeatures() if f["status"] == "ok"},
                     fb.lines)
    cas, full = runs["cascade"][0], runs["full"][0]
    assert {k: v[0] for k, v in cas.items()} == {k: v[0] for k, v in full.items()}  # same flags
    assert {v[1] for v in full.values()} == {"full"} and "gbm" in {v[1] for v in cas.values()}
    lines = runs["cascade"][1]
    assert any(ln.startswith("Warning: execution provider 'NoSuchExecutionProvider'") for ln in lines)
    assert any("networks run on CPUExecutionProvider" in ln for ln in lines)
    assert any(ln.startswith("Cascade: the networks ran on") for ln in lines)
