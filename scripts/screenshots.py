"""The site's pictures, rendered by the real program in a real QGIS (offscreen), on a SYNTHETIC scene.

    python -m sentinel_landslide.scripts.screenshots            # all pictures -> docs/img/, ~3 min on 2 cores
    python -m sentinel_landslide.scripts.screenshots --check    # exit 1 and name the stale pictures

One run walks the tutorial: a synthetic scene (engine/synthetic.py) is loaded,
``landslide:detect`` runs, the grid is drawn with both styles, the review panel
(gui/review_dock.py) shows a tile's chips, ``landslide:sample`` draws a sample whose verdicts are
set FROM THE PLANTED TRUTH (standing in for an analyst), ``landslide:accuracy`` writes its table,
``landslide:adapt`` fits a package, detect runs again with it, and ``landslide:report`` writes the
report whose pages are kept.  Dialogs are Processing's own AlgorithmDialog.

``docs/img/screenshots.json`` records, for each picture, the fingerprint of what it was made
from (the algorithm's parameters and help for a dialog; the style, panel, report and model
files for the rest).  ``tests/scripts/test_screenshots.py`` recomputes the fingerprints and fails
when one changed: the picture is stale; rerun this command (or ``./build.sh regen-docs``).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
IMG = ROOT / "docs" / "img"
MANIFEST = IMG / "screenshots.json"
WIDTH = 1000  # px of the map pictures
SCENE = {"width": 640, "height": 480, "seed": 7}  # engine.synthetic.make_scene's arguments

# what each picture is made from: files (hashed) and algorithms (parameters + help, hashed)
COMMON = ("scripts/screenshots.py", "engine/synthetic.py", "models/bundled/manifest.json")
PICTURES: dict[str, dict] = {
    "tutorial-layers.png": {"files": ("scripts/render.py",)},
    "fetch-dialog.png": {"algorithms": ("fetch",)},
    "detect-dialog.png": {"algorithms": ("detect",)},
    "grid-map.png": {"files": ("scripts/render.py", "resources/landslide_grid.qml")},
    "uncertainty-map.png": {"files": ("scripts/render.py", "resources/landslide_grid_uncertainty.qml")},
    "review-panel.png": {"files": ("gui/review_dock.py", "rendering/chips.py", "rendering/render.py",
                                   "resources/landslide_grid.qml")},
    "sample-panel.png": {"files": ("gui/review_dock.py", "engine/sampling.py", "resources/landslide_grid.qml")},
    "accuracy-table.png": {"files": ("engine/accuracy.py",)},
    "adapt-dialog.png": {"algorithms": ("adapt",)},
    "grid-map-adapted.png": {"files": ("training/adapt.py", "scripts/render.py", "resources/landslide_grid.qml")},
    "report-overview.png": {"files": ("rendering/report_layout.py", "algorithms/report.py")},
    "report-tile.png": {"files": ("rendering/report_layout.py", "algorithms/report.py", "rendering/chips.py")},
}


# -- fingerprints (cheap: no rendering) ----------------------------------------------------
def _file_hash(rel: str) -> str:
    p = ROOT / rel
    if not p.exists():
        return "missing"
    return hashlib.sha256(p.read_bytes().replace(b"\r\n", b"\n")).hexdigest()[:16]


def algorithm_signature(name: str) -> str:
    """Hash of what an algorithm's dialog shows: each parameter's name, type, label, default and
    flags, and the help panel's text (needs QGIS with the provider registered)."""
    from qgis.core import QgsApplication

    alg = QgsApplication.processingRegistry().algorithmById(f"landslide:{name}")
    if alg is None:
        raise RuntimeError(f"landslide:{name} is not registered")
    default = lambda v: str(v).replace(str(ROOT), "<plugin>")  # noqa: E731 - machine-independent
    params = [(p.name(), p.type(), p.description(), default(p.defaultValue()), int(p.flags()))
              for p in alg.parameterDefinitions()]
    text = json.dumps([alg.displayName(), params, alg.shortHelpString()], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def fingerprints() -> dict[str, dict[str, str]]:
    """{picture: {input: hash}} for every picture, from the checkout and the registered provider."""
    out = {}
    for png, spec in PICTURES.items():
        fp = {rel: _file_hash(rel) for rel in COMMON + tuple(spec.get("files", ()))}
        fp.update({f"landslide:{a}": algorithm_signature(a) for a in spec.get("algorithms", ())})
        out[png] = fp
    return out


def stale_pictures(current: dict, recorded: dict) -> list[str]:
    bad = [f"{png} (not rendered yet)" for png in current if png not in recorded or not (IMG / png).exists()]
    for png, fp in current.items():
        old = recorded.get(png)
        if old is not None and old != fp:
            changed = sorted(k for k in set(fp) | set(old) if fp.get(k) != old.get(k))
            bad.append(f"{png} ({', '.join(changed)} changed)")
    return bad


def read_manifest() -> dict:
    return json.loads(MANIFEST.read_text(encoding="utf-8")) if MANIFEST.exists() else {}


# -- the QGIS session -------------------------------------------------------------------------
class _Iface:
    """The parts of QgisInterface the dialogs and the review panel use, on a real canvas."""

    def __init__(self, window, canvas, bar):
        self._w, self._c, self._b = window, canvas, bar

    def mainWindow(self):  # noqa: N802 (QGIS API)
        return self._w

    def mapCanvas(self):  # noqa: N802 (QGIS API)
        return self._c

    def messageBar(self):  # noqa: N802 (QGIS API)
        return self._b

    def activeLayer(self):  # noqa: N802 (QGIS API)
        return None

    def __getattr__(self, name):  # everything else: a no-op, as in a test double
        return lambda *a, **k: None


def _settle(app, n: int = 6):
    for _ in range(n):
        app.processEvents()


def _save(img, name: str, width: int | None = None) -> None:
    from qgis.PyQt.QtCore import Qt
    from qgis.PyQt.QtGui import QImage

    if width and img.width() > width:
        img = img.scaledToWidth(width, Qt.TransformationMode.SmoothTransformation)
    # 256 colours: the synthetic textures make full-colour PNGs of ~1 MB each, checked into git
    img = img.convertToFormat(QImage.Format.Format_Indexed8,
                              Qt.ImageConversionFlag.ThresholdDither | Qt.ImageConversionFlag.AvoidDither)
    IMG.mkdir(parents=True, exist_ok=True)
    if not img.save(str(IMG / name), "PNG"):
        raise RuntimeError(f"could not write {IMG / name}")
    print(f"wrote docs/img/{name} ({img.width()} x {img.height()})")


def _dialog(app, parent, alg_id: str, params: dict, name: str) -> None:
    from processing.gui.AlgorithmDialog import AlgorithmDialog
    from qgis.core import QgsApplication

    alg = QgsApplication.processingRegistry().algorithmById(alg_id)
    d = AlgorithmDialog(alg.create(), False, parent)
    d.resize(1100, 820)
    d.setParameters(params)
    d.show()
    _settle(app)
    _save(d.grab().toImage(), name)
    d.close()
    d.deleteLater()
    _settle(app)


def _truth_verdicts(grid: str, truth: str, fids) -> dict:
    """{fid: verdict} on ``fids`` from the SYNTHETIC planted truth (an analyst's stand-in)."""
    import numpy as np
    from osgeo import ogr

    from sentinel_landslide.engine.verdicts import simulate_verdicts, tile_truth

    ds = ogr.Open(grid)
    ids, bounds = [], []
    for f in ds.GetLayer(0):
        x0, x1, y0, y1 = f.GetGeometryRef().GetEnvelope()
        ids.append(f.GetFID())
        bounds.append((x0, y0, x1, y1))
    ds = None
    t = tile_truth(np.array(bounds), truth)
    pos = {fid: i for i, fid in enumerate(ids)}
    chosen = [pos[f] for f in fids]
    v = simulate_verdicts(t, chosen)
    return {ids[i]: v[i] for i in chosen}


def _fids(grid: str, where: str, order: str | None = None, limit: int | None = None) -> list[int]:
    from osgeo import ogr

    ds = ogr.Open(grid)
    lyr = ds.GetLayer(0)
    lyr.SetAttributeFilter(where)
    rows = [(f.GetFID(), f.GetField(order) if order else 0) for f in lyr]
    ds = None
    rows.sort(key=lambda r: -(r[1] or 0))
    return [r[0] for r in rows[:limit]]


def render_all(work: Path) -> None:
    import qgis.utils
    from qgis.core import QgsApplication, QgsFillSymbol, QgsProject, QgsRasterLayer, QgsSingleSymbolRenderer, QgsVectorLayer
    from qgis.gui import QgsMapCanvas, QgsMessageBar
    from qgis.PyQt.QtCore import Qt
    from qgis.PyQt.QtWidgets import QMainWindow, QTextBrowser

    from sentinel_landslide.engine.synthetic import make_scene
    from sentinel_landslide.engine.verdicts import write_fields
    from sentinel_landslide.gui.review_dock import ReviewDock
    from sentinel_landslide.scripts.render import render_layers, render_map, s2_true_colour

    app = QgsApplication.instance()
    import processing

    win = QMainWindow()
    canvas = QgsMapCanvas(win)
    win.setCentralWidget(canvas)
    bar = QgsMessageBar(win)
    iface = _Iface(win, canvas, bar)
    qgis.utils.iface = iface
    win.resize(1500, 950)

    print(f"[screenshots] a SYNTHETIC scene ({SCENE['width']} x {SCENE['height']} px at 10 m) ...")
    scene = make_scene(work / "scene", **SCENE)
    project = QgsProject.instance()
    s2 = s2_true_colour(QgsRasterLayer(scene["S2"], "s2 post-event"))
    layers = {"S2": s2,
              "S1_DESC_POST": QgsRasterLayer(scene["S1_DESC_POST"], "S1 desc post"),
              "S1_DESC_PRE": QgsRasterLayer(scene["S1_DESC_PRE"], "S1 desc pre"),
              "S1_ASC_POST": QgsRasterLayer(scene["S1_ASC_POST"], "S1 asc post"),
              "S1_ASC_PRE": QgsRasterLayer(scene["S1_ASC_PRE"], "S1 asc pre")}
    for lyr in layers.values():
        assert lyr.isValid(), lyr.source()
        project.addMapLayer(lyr)
    truth = QgsVectorLayer(scene["truth"], "planted scars", "ogr")
    truth.setRenderer(QgsSingleSymbolRenderer(QgsFillSymbol.createSimple(
        {"color": "0,0,0,0", "outline_color": "#00e5ff", "outline_width": "0.6", "outline_style": "dash"})))
    project.addMapLayer(truth)

    # 1. the layers
    _save(render_layers([truth, s2], s2.extent(), s2.crs(), WIDTH), "tutorial-layers.png")
    # 1b. the fetch dialog, filled in for the worked real event (not run: it needs internet)
    from qgis.PyQt.QtCore import QDate, QDateTime, QTime

    event = QDateTime(QDate(2024, 7, 29), QTime(23, 0), Qt.TimeSpec.UTC)
    _dialog(app, win, "landslide:fetch", {"EXTENT": "76.10,76.20,11.44,11.52 [EPSG:4326]", "EVENT_DATE": event,
                                          "POST_DAYS": 30, "PRE_DAYS": 30, "MAX_CLOUD": 40,
                                          "OUTPUT_FOLDER": "wayanad"}, "fetch-dialog.png")
    # 2. the detect dialog, filled in
    inputs = {role: lyr.id() for role, lyr in layers.items()}
    _dialog(app, win, "landslide:detect", dict(inputs, OUTPUT=str(work / "grid.gpkg")), "detect-dialog.png")
    print("[screenshots] landslide:detect ...")
    paths = {role: scene[role] for role in layers}
    res = processing.run("landslide:detect", dict(paths, OUTPUT=str(work / "grid.gpkg")))
    grid = str(work / "grid.gpkg")
    # 3. the grid, both styles
    _save(QImageFrom(render_map(str(work / "grid.png"), scene["S2"], grid, scene["truth"], width=WIDTH)),
          "grid-map.png")
    _save(QImageFrom(render_map(str(work / "unc.png"), scene["S2"], grid, scene["truth"], width=WIDTH,
                                style="landslide_grid_uncertainty.qml")), "uncertainty-map.png")

    # 5. (before the panel) the sample, and verdicts from the planted truth on it and on the
    # five most probable flagged tiles
    res = processing.run("landslide:sample", {"GRID": grid, "N_FLAGGED": 12, "N_UNFLAGGED": 12, "SEED": 42,
                                              "OUTPUT": str(work / "sampled.gpkg")})
    sampled = str(work / "sampled.gpkg")
    fids = _fids(sampled, "sample > 0") + _fids(sampled, "flagged = 1", "prob", 5)
    verdicts = _truth_verdicts(sampled, scene["truth"], sorted(set(fids)))
    first = _fids(sampled, "flagged = 1", "prob", 1)
    notes = {f: "SYNTHETIC scar, verdict from the planted truth" for f in first}
    write_fields(sampled, {"review": verdicts, "review_note": notes})

    # 4. the review panel with a tile's chips, on the map
    grid_layer = QgsVectorLayer(sampled, "Landslide probability grid", "ogr")
    grid_layer.loadNamedStyle(str(ROOT / "resources" / "landslide_grid.qml"))
    project.addMapLayer(grid_layer)
    canvas.setDestinationCrs(grid_layer.crs())
    canvas.setLayers([grid_layer, s2])
    canvas.setExtent(grid_layer.extent())
    dock = ReviewDock(iface)
    win.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, dock)
    dock.setMinimumWidth(620)
    win.show()
    dock.show()
    dock.set_layer(grid_layer)
    for role, combo in dock.source_combos.items():
        if role in layers:
            combo.setLayer(layers[role])
    confirmed = [i for i in range(dock.tree.topLevelItemCount()) if dock.tree.topLevelItem(i).text(2) == "confirmed"]
    dock.select_index(confirmed[0] if confirmed else 0)  # a tile with a planted scar, zoomed to
    canvas.refresh()
    canvas.waitWhileRendering()
    _settle(app, 10)
    _save(win.grab().toImage(), "review-panel.png")
    # 5. the sample tiles listed (flagged and not), with their verdicts; the lowest-probability
    # confirmed one selected: a landslide the map missed is what the unflagged sample finds
    dock.sample_size.setValue(12)
    dock.flagged_only.setChecked(False)
    dock.sample_only.setChecked(True)
    dock.reload_tiles()
    confirmed = [i for i in range(dock.tree.topLevelItemCount()) if dock.tree.topLevelItem(i).text(2) == "confirmed"]
    dock.select_index(confirmed[-1] if confirmed else 0)
    canvas.refresh()
    canvas.waitWhileRendering()
    _settle(app, 10)
    _save(win.grab().toImage(), "sample-panel.png")
    dock.cleanup() if hasattr(dock, "cleanup") else None
    win.removeDockWidget(dock)
    dock.deleteLater()
    _settle(app)

    # 6. the accuracy table, as its HTML output renders
    html = str(work / "accuracy.html")
    processing.run("landslide:accuracy", {"GRID": sampled, "OUTPUT_HTML": html})
    browser = QTextBrowser()
    browser.setHtml(Path(html).read_text(encoding="utf-8"))
    browser.resize(900, 520)
    browser.show()
    _settle(app)
    _save(browser.grab().toImage(), "accuracy-table.png")
    browser.close()

    # 7. adapt: the dialog, then a run on the verdicts
    adapt_inputs = {k: v for k, v in inputs.items()}
    _dialog(app, win, "landslide:adapt", dict(adapt_inputs, GRID=grid_layer.id(), OUTPUT=str(work / "adapted")),
            "adapt-dialog.png")
    print("[screenshots] landslide:adapt ...")
    processing.run("landslide:adapt", dict(paths, GRID=sampled, OUTPUT=str(work / "adapted")))
    # 8. detect again with the adapted package
    print("[screenshots] landslide:detect with the adapted package ...")
    processing.run("landslide:detect", dict(paths, MODEL=str(work / "adapted"), OUTPUT=str(work / "grid2.gpkg")))
    _save(QImageFrom(render_map(str(work / "grid2.png"), scene["S2"], str(work / "grid2.gpkg"), scene["truth"],
                                width=WIDTH)), "grid-map-adapted.png")

    # 9. the report: its HTML pages are the layout's own page images
    print("[screenshots] landslide:report ...")
    report = work / "report.html"
    params = {"GRID": sampled, "MAX_TILES": 2, "TILES": 2,  # TILES 2: flagged and not rejected
              "TITLE": "Landslide report (SYNTHETIC scene)", "OUTPUT_HTML": str(report)}
    params.update({role: paths[role] for role in ("S2", "S1_DESC_POST", "S1_DESC_PRE", "S1_ASC_POST", "S1_ASC_PRE")})
    processing.run("landslide:report", params)
    pages = sorted((work / "report_files").glob("page_*.png"))
    _save(QImageFrom(str(pages[0])), "report-overview.png", WIDTH)
    _save(QImageFrom(str(pages[1])), "report-tile.png", WIDTH)
    project.removeAllMapLayers()
    del res
    return win


def QImageFrom(path: str):  # noqa: N802 - reads like the Qt constructor it wraps
    from qgis.PyQt.QtGui import QImage

    img = QImage(path)
    if img.isNull():
        raise RuntimeError(f"no image at {path}")
    return img


def _start_qgis(gui: bool):
    from qgis.core import QgsApplication

    app = QgsApplication([], gui)
    app.initQgis()
    sys.path.insert(0, str(Path(QgsApplication.pkgDataPath()) / "python" / "plugins"))
    from processing.core.Processing import Processing

    Processing.initialize()
    from sentinel_landslide.scripts.docs_reference import provider_algorithms

    provider_algorithms()  # registers the provider
    return app


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="screenshots", description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="render nothing; exit 1 when a picture is stale")
    ap.add_argument("--work", default=None, help="work folder (default: a temporary one)")
    a = ap.parse_args(argv)
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    os.environ.setdefault("XDG_RUNTIME_DIR", tempfile.mkdtemp(prefix="xdg_"))
    app = _start_qgis(gui=not a.check)
    try:
        if a.check:
            bad = stale_pictures(fingerprints(), read_manifest())
            for b in bad:
                print(f"stale: docs/img/{b}", file=sys.stderr)
            return 1 if bad else 0
        work = Path(a.work or tempfile.mkdtemp(prefix="screenshots_"))
        work.mkdir(parents=True, exist_ok=True)
        win = render_all(work)
        win.close()
        win.deleteLater()
        from qgis.PyQt.QtCore import QCoreApplication, QEvent

        QCoreApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)
        import qgis.utils

        qgis.utils.iface = None
        del win
        MANIFEST.write_text(json.dumps(fingerprints(), indent=1, sort_keys=True) + "\n", encoding="utf-8")
        print(f"wrote {MANIFEST.relative_to(ROOT)}")
        return 0
    finally:
        app.exitQgis()


if __name__ == "__main__":
    sys.exit(main())
