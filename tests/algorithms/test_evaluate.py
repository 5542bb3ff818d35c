"""landslide:evaluate (the maths: tests/engine/test_evaluation.py and test_truth.py): the
algorithm on a real detect output of the SYNTHETIC scene with its
planted scars (scars.geojson) as the inventory."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from osgeo import gdal, ogr, osr
from qgis.core import QgsApplication, QgsProcessingException, QgsProcessingFeedback, QgsVectorLayer
from qgis.PyQt.QtGui import QImage

from ..helpers import ROOT, scene_params


@pytest.fixture(scope="module")
def detect_grid(provider, synthetic_scene, tmp_path_factory) -> str:
    import processing

    out = tmp_path_factory.mktemp("evaluate") / "grid.gpkg"
    return processing.run("landslide:detect", scene_params(synthetic_scene, out))["OUTPUT"]


def square(x0, y0, x1, y1) -> bytes:
    return ogr.CreateGeometryFromWkt(f"POLYGON(({x0} {y0},{x1} {y0},{x1} {y1},{x0} {y1},{x0} {y0}))").ExportToWkb()


# -- the QGIS-free maths -----------------------------------------------------------------
# -- the algorithm -------------------------------------------------------------------------
def _features(path):
    layer = QgsVectorLayer(str(path), "g", "ogr")
    assert layer.isValid()
    return list(layer.getFeatures())


def _bounds(f):
    bb = f.geometry().boundingBox()
    return bb.xMinimum(), bb.yMinimum(), bb.xMaximum(), bb.yMaximum()


def write_inventory(path: Path, polygons_utm: list[bytes], epsg_out: int = 4326) -> str:
    """An inventory GeoPackage in another CRS than the grid (the algorithm must reproject)."""
    src = osr.SpatialReference()
    src.ImportFromEPSG(32646)
    dst = osr.SpatialReference()
    dst.ImportFromEPSG(epsg_out)
    for s in (src, dst):
        s.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    ct = osr.CoordinateTransformation(src, dst)
    ds = ogr.GetDriverByName("GPKG").CreateDataSource(str(path))
    lyr = ds.CreateLayer("inventory", dst, ogr.wkbPolygon)
    for w in polygons_utm:
        g = ogr.CreateGeometryFromWkb(w)
        g.Segmentize(10.0)  # keep straight UTM edges straight enough in degrees
        g.Transform(ct)
        f = ogr.Feature(lyr.GetLayerDefn())
        f.SetGeometry(g)
        lyr.CreateFeature(f)
    ds = None
    return str(path)


def run_evaluate(grid, inventory, tmp_path, **extra):
    import processing

    params = {"GRID": str(grid), "INVENTORY": str(inventory), "OUTPUT": str(tmp_path / "evaluated.gpkg"),
              "OUTPUT_ROC": str(tmp_path / "roc.png"), "OUTPUT_PR": str(tmp_path / "pr.png"),
              "OUTPUT_HTML": str(tmp_path / "report.html")}
    params.update(extra)
    return processing.run("landslide:evaluate", params)


def test_hand_made_inventory_gives_the_expected_truth(provider, detect_grid, tmp_path):
    feats = {(f["row"], f["col"]): f for f in _features(detect_grid)}
    x0, y0, x1, y1 = _bounds(feats[(0, 0)])
    size = x1 - x0
    a = _bounds(feats[(0, 1)])
    b = _bounds(feats[(0, 2)])
    c = _bounds(feats[(1, 1)])
    polys = [
        square(x0 - 50, y0, x1, y1 + 50),  # tile (0,0) wholly inside a landslide (spilling off the grid)
        square(a[0], a[1], a[0] + size / 2, a[1] + size / 2),  # a quarter of tile (0,1)
        square(b[0] + 100, b[1] + 100, b[0] + 100 + size * 0.07, b[1] + 100 + size * 0.07),  # 0.49 % of (0,2)
        square(c[0] + 100, c[1] + 100, c[0] + 100 + size * 0.11, c[1] + 100 + size * 0.11),  # 1.21 % of (1,1)
    ]
    inv = write_inventory(tmp_path / "inventory.gpkg", polys)
    res = run_evaluate(detect_grid, inv, tmp_path, MIN_FRACTION=0.01)
    out = {(f["row"], f["col"]): f for f in _features(res["OUTPUT"])}
    assert out[(0, 0)]["truth"] and out[(0, 0)]["area_frac"] == pytest.approx(1.0, abs=1e-3)
    assert out[(0, 1)]["truth"] and out[(0, 1)]["area_frac"] == pytest.approx(0.25, abs=1e-3)
    assert not out[(0, 2)]["truth"] and out[(0, 2)]["area_frac"] == pytest.approx(0.0049, abs=2e-4)
    assert out[(1, 1)]["truth"] and out[(1, 1)]["area_frac"] == pytest.approx(0.0121, abs=2e-4)
    assert out[(1, 0)]["area_frac"] == pytest.approx(0.0, abs=1e-4)  # a shared edge is no overlap
    assert sum(1 for f in out.values() if f["truth"]) == res["POSITIVES"] == 3
    assert res["POSITIVES"] == sum(1 for f in out.values() if f["area_frac"] >= 0.01)
    # the output keeps every grid field
    assert {"tile_id", "prob", "flagged", "status", "review"} <= set(next(iter(out.values())).fields().names())


def test_metrics_match_a_direct_computation_on_the_scars(provider, detect_grid, synthetic_scene, tmp_path):
    from sklearn import metrics as skm

    # the planted scars, reprojected to EPSG:4326 first: any CRS must do
    scars = json.loads(Path(synthetic_scene["truth"]).read_text())
    polys = [ogr.CreateGeometryFromJson(json.dumps(f["geometry"])).ExportToWkb() for f in scars["features"]]
    inv = write_inventory(tmp_path / "scars_4326.gpkg", polys)
    res = run_evaluate(detect_grid, inv, tmp_path, MIN_FRACTION=0.01)
    out = _features(res["OUTPUT"])
    y = np.array([bool(f["truth"]) for f in out])
    s = np.array([f["prob"] for f in out], dtype=float)
    pred = np.array([bool(f["flagged"]) for f in out])
    assert res["NODATA"] == 0 and res["EVALUATED"] == len(out) == 70
    assert res["POSITIVES"] == y.sum() > 0
    tn, fp, fn, tp = skm.confusion_matrix(y, pred, labels=[False, True]).ravel()
    assert (res["TP"], res["FP"], res["TN"], res["FN"]) == (tp, fp, tn, fn)
    p, r, f1, _ = skm.precision_recall_fscore_support(y, pred, average="binary", zero_division=0)
    assert (res["PRECISION"], res["RECALL"], res["F1"]) == pytest.approx((p, r, f1))
    assert res["AUC"] == pytest.approx(skm.roc_auc_score(y, s))
    assert res["AVERAGE_PRECISION"] == pytest.approx(skm.average_precision_score(y, s))
    # each tile's fraction agrees with an independent QGIS computation in UTM (no reprojection)
    from qgis.core import QgsGeometry

    union = QgsGeometry.unaryUnion([QgsGeometry.fromWkt(ogr.CreateGeometryFromWkb(w).ExportToWkt()) for w in polys])
    for f in out:
        direct = f.geometry().intersection(union).area() / f.geometry().area()
        assert f["area_frac"] == pytest.approx(direct, abs=2e-3)
    # outcomes are consistent with truth and prediction
    for f in out:
        assert f["outcome"] == ("T" if bool(f["truth"]) == bool(f["flagged"]) else "F") + ("P" if f["flagged"] else "N")
    # figures and report
    for key in ("OUTPUT_ROC", "OUTPUT_PR"):
        img = QImage(res[key])
        assert not img.isNull() and img.width() > 300
    html = Path(res["OUTPUT_HTML"]).read_text()
    assert html.count("data:image/png;base64,") == 3  # ROC, PR, map
    assert f"TP {tp}" in html and "0 <code>nodata</code> tile(s) excluded" in html


def test_threshold_and_nodata_tiles(provider, detect_grid, synthetic_scene, tmp_path):
    """nodata tiles are excluded (and counted); a THRESHOLD replaces the flagged field."""
    grid = tmp_path / "with_nodata.gpkg"
    gdal.VectorTranslate(str(grid), str(detect_grid).split("|")[0])
    ds = ogr.Open(str(grid), 1)
    lyr = ds.GetLayer(0)
    for f in lyr:
        if f["row"] == 0:
            f["status"] = "nodata"
            f.SetFieldNull("prob")
            f["flagged"] = 0
            lyr.SetFeature(f)
    ds = None
    scars = json.loads(Path(synthetic_scene["truth"]).read_text())
    inv = write_inventory(tmp_path / "scars.gpkg",
                          [ogr.CreateGeometryFromJson(json.dumps(f["geometry"])).ExportToWkb() for f in scars["features"]])
    res = run_evaluate(grid, inv, tmp_path, THRESHOLD=0.3)
    out = _features(res["OUTPUT"])
    nodata = [f for f in out if f["row"] == 0]
    assert res["NODATA"] == len(nodata) == 10 and res["EVALUATED"] == 60
    assert all(f["outcome"] == "nodata" for f in nodata)
    ok = [f for f in out if f["row"] != 0]
    assert res["TP"] + res["FP"] == sum(1 for f in ok if f["prob"] >= 0.3)
    assert res["TP"] + res["FN"] == sum(1 for f in ok if f["truth"]) == res["POSITIVES"]
    assert "10 <code>nodata</code> tile(s) excluded" in Path(res["OUTPUT_HTML"]).read_text()


def test_inventory_elsewhere_gives_undefined_auc(provider, detect_grid, tmp_path):
    inv = write_inventory(tmp_path / "far.gpkg", [square(500000, 2000000, 501000, 2001000)])
    fb = QgsProcessingFeedback()
    warnings = []
    fb.pushWarning = lambda m: warnings.append(m)  # noqa: E731
    import processing

    res = processing.run("landslide:evaluate", {"GRID": str(detect_grid), "INVENTORY": inv,
                                                "OUTPUT": str(tmp_path / "o.gpkg")}, feedback=fb)
    assert res["AUC"] is None and res["POSITIVES"] == 0 and res["RECALL"] == 0.0
    assert any("No inventory polygon overlaps the grid" in w for w in warnings)


@pytest.mark.parametrize("case, message", [("noprob", "no 'prob' field"), ("empty", "has no polygons")])
def test_bad_inputs_raise_and_write_nothing(provider, detect_grid, tmp_path, case, message):
    import processing

    grid, inv = str(detect_grid), write_inventory(tmp_path / "i.gpkg", [square(0, 0, 1, 1)])
    if case == "noprob":
        grid = str(tmp_path / "noprob.gpkg")
        gdal.VectorTranslate(grid, str(detect_grid).split("|")[0], options=["-select", "tile_id,status"])
    else:
        inv = write_inventory(tmp_path / "empty.gpkg", [])
    out = tmp_path / "never.gpkg"
    with pytest.raises(QgsProcessingException, match=message):
        processing.run("landslide:evaluate", {"GRID": grid, "INVENTORY": inv, "OUTPUT": str(out),
                                              "OUTPUT_HTML": str(tmp_path / "never.html")})
    assert not out.exists() and not (tmp_path / "never.html").exists()


def test_cancel_writes_nothing(provider, detect_grid, synthetic_scene, tmp_path):
    import processing

    fb = QgsProcessingFeedback()
    fb.progressChanged.connect(lambda _p: fb.cancel())
    out = tmp_path / "cancelled.gpkg"
    with pytest.raises(QgsProcessingException, match="Cancelled"):
        processing.run("landslide:evaluate", {"GRID": str(detect_grid), "INVENTORY": synthetic_scene["truth"],
                                              "OUTPUT": str(out)}, feedback=fb)
    assert not out.exists()


def test_help_and_outputs_are_declared(provider):
    alg = QgsApplication.processingRegistry().algorithmById("landslide:evaluate")
    assert alg.displayName() == "Evaluate against a landslide inventory"
    outs = {o.name() for o in alg.outputDefinitions()}
    assert {"PRECISION", "RECALL", "F1", "AUC", "TP", "FP", "TN", "FN", "OUTPUT", "OUTPUT_ROC", "OUTPUT_PR",
            "OUTPUT_HTML"} <= outs
    # the dialog's help is short and links to the page, whose notes say how nodata tiles count
    assert alg.helpUrl() in alg.shortHelpString()
    assert "nodata" in (ROOT / "docs" / "algorithms" / "_notes" / "evaluate.md").read_text(encoding="utf-8")


def test_runs_in_a_background_task_like_the_processing_dialog(provider, detect_grid, synthetic_scene, tmp_path):
    """The dialog runs evaluate off the main thread (it draws its figures on QImages only)."""
    import time

    from qgis.core import QgsProcessingAlgRunnerTask, QgsProcessingContext, QgsProject

    alg = QgsApplication.processingRegistry().createAlgorithmById("landslide:evaluate")
    ctx = QgsProcessingContext()
    ctx.setProject(QgsProject.instance())
    params = {"GRID": str(detect_grid), "INVENTORY": synthetic_scene["truth"], "OUTPUT": str(tmp_path / "o.gpkg"),
              "OUTPUT_HTML": str(tmp_path / "r.html"), "OUTPUT_ROC": str(tmp_path / "roc.png")}
    feedback = QgsProcessingFeedback()  # referenced until the task is done: the task does not own it
    task = QgsProcessingAlgRunnerTask(alg, params, ctx, feedback)
    done = {}
    task.executed.connect(lambda ok, res: done.update(ok=ok, res=res))
    QgsApplication.taskManager().addTask(task)
    t0 = time.time()
    while not done and time.time() - t0 < 120:
        QgsApplication.processEvents()
        time.sleep(0.05)
    assert done.get("ok") and done["res"]["EVALUATED"] == 70
    assert (tmp_path / "r.html").exists() and not QImage(str(tmp_path / "roc.png")).isNull()


def test_breakdown_per_input_combination(provider, tmp_path_factory, tmp_path):
    """A SYNTHETIC scene half under a cloud, detected with its SCL mask: tiles under the
    cloud are scored by SAR alone (mode desc+asc).  Each mode's row equals the counts and
    ratios of its tiles in the evaluated grid, in the outputs, the CSV and the report."""
    import csv

    import processing
    from sklearn import metrics as skm

    from sentinel_landslide.engine.synthetic import make_scene

    scene = make_scene(tmp_path_factory.mktemp("cloudy_eval"), width=640, height=448, seed=11, cloud=0.45)
    grid = processing.run("landslide:detect", scene_params(scene, tmp_path / "grid.gpkg",
                                                           S2_MASK=scene["S2_MASK"]))["OUTPUT"]
    res = run_evaluate(grid, scene["truth"], tmp_path, OUTPUT_MODES=str(tmp_path / "by_mode.csv"))
    out = _features(res["OUTPUT"])
    rows = json.loads(res["BY_MODE"])
    assert [r["mode"] for r in rows][:2] == ["s2+desc+asc", "desc+asc"]
    assert sum(r["tiles"] for r in rows) == len(out) and sum(r["evaluated"] for r in rows) == res["EVALUATED"]
    for r in rows:
        if r["mode"] == "nodata":
            continue
        sel = [f for f in out if f["mode"] == r["mode"] and f["status"] == "ok"]
        y = np.array([bool(f["truth"]) for f in sel])
        pred = np.array([bool(f["flagged"]) for f in sel])
        tn, fp, fn, tp = skm.confusion_matrix(y, pred, labels=[False, True]).ravel()
        assert (r["tiles"], r["tp"], r["fp"], r["fn"], r["tn"]) == (len(sel), tp, fp, fn, tn)
        p, rc, f1, _ = skm.precision_recall_fscore_support(y, pred, average="binary", zero_division=0)
        assert (r["precision"], r["recall"], r["f1"]) == pytest.approx((p, rc, f1))
    assert sum(r["tp"] for r in rows) == res["TP"] and sum(r["fp"] for r in rows) == res["FP"]
    with open(res["OUTPUT_MODES"], newline="") as fh:
        table = list(csv.DictReader(fh))
    assert [t["mode"] for t in table] == [r["mode"] for r in rows]
    assert [int(t["tp"]) for t in table] == [r["tp"] for r in rows]
    html = Path(res["OUTPUT_HTML"]).read_text()
    assert "Per input combination" in html and "<code>desc+asc</code>" in html
    # a grid without modes (an older detect output): no breakdown, said so
    legacy = tmp_path / "legacy.gpkg"
    gdal.VectorTranslate(str(legacy), str(grid), selectFields=["tile_id", "prob", "flagged", "status"])
    res2 = run_evaluate(legacy, scene["truth"], tmp_path, OUTPUT=str(tmp_path / "legacy_eval.gpkg"),
                        OUTPUT_HTML=str(tmp_path / "legacy.html"))
    assert res2["BY_MODE"] == "" and "no <code>mode</code> field" in Path(res2["OUTPUT_HTML"]).read_text()
