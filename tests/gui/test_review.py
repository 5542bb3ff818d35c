"""The review dock as an analyst uses it: run detect on the SYNTHETIC scene, open the dock
from the plugin's action, review ten tiles with the keyboard, and find the verdicts in the
GeoPackage afterwards (a new layer, and a separate process reading the file)."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from qgis.core import QgsApplication, QgsProject, QgsRasterLayer, QgsVectorLayer
from qgis.PyQt.QtCore import QEvent, QPoint, Qt
from qgis.PyQt.QtGui import QImage
from qgis.PyQt.QtTest import QTest
from qgis.PyQt.QtWidgets import QDockWidget

from ..helpers import ROOT, ensure_provider, scene_params

SCREENSHOTS = ROOT / "build" / "screenshots"


@pytest.fixture(scope="module")
def detect_grid(provider, synthetic_scene, tmp_path_factory) -> Path:
    """A real landslide:detect output (GeoPackage).  The low threshold flags every scored
    tile, so there are enough to review whatever the bundled model scores."""
    import processing

    out = tmp_path_factory.mktemp("detect") / "grid.gpkg"
    res = processing.run("landslide:detect", scene_params(synthetic_scene, out, THRESHOLD=0.0001))
    assert res["FLAGGED"] >= 10
    return Path(res["OUTPUT"].split("|")[0])


@pytest.fixture()
def grid_copy(detect_grid, tmp_path) -> Path:
    dst = tmp_path / "grid.gpkg"
    shutil.copy(detect_grid, dst)
    return dst


@pytest.fixture()
def plugin(qgis_iface, qgis_new_project, qgis_processing):
    """The plugin as QGIS loads it (initGui registers the provider itself)."""
    from sentinel_landslide.plugin import SentinelLandslidePlugin

    reg = QgsApplication.processingRegistry()
    if reg.providerById("landslide") is not None:
        reg.removeProvider("landslide")
    p = SentinelLandslidePlugin(qgis_iface)
    p.initGui()
    assert reg.providerById("landslide") is not None
    yield p
    p.unload()
    QgsApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)  # no event loop runs in tests
    assert not qgis_iface.mainWindow().findChildren(QDockWidget)
    ensure_provider()  # unload removed it; the other tests need it


def add_grid(path: Path) -> QgsVectorLayer:
    layer = QgsVectorLayer(str(path), "Landslide probability grid", "ogr")
    assert layer.isValid()
    layer.loadNamedStyle(str(ROOT / "resources" / "landslide_grid.qml"))  # as detect loads it
    QgsProject.instance().addMapLayer(layer)
    return layer


def add_sources(scene: dict) -> None:
    for role, name in (("S2", "s2 post-event"), ("S1_DESC_POST", "S1 desc post"), ("S1_DESC_PRE", "S1 desc pre"),
                       ("S1_ASC_POST", "S1 asc post"), ("S1_ASC_PRE", "S1 asc pre")):
        layer = QgsRasterLayer(scene[role], name)
        assert layer.isValid()
        QgsProject.instance().addMapLayer(layer)


def open_dock(plugin, qgis_iface):
    """Trigger the toolbar/menu action and put the dock in the main window, as QGIS does
    (pytest-qgis's iface.addDockWidget is a stub)."""
    action = next(a for a in plugin.actions if a.text() == "Review flagged tiles")
    action.trigger()
    dock = plugin.review_dock
    assert dock is not None and action.isChecked()
    win = qgis_iface.mainWindow()
    win.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, dock)
    win.resize(1200, 900)
    win.show()
    dock.show()
    win.activateWindow()
    QTest.qWaitForWindowActive(win, 2000)
    dock.tree.setFocus()
    QgsApplication.processEvents()
    return dock


def test_action_is_in_toolbar_and_menu(plugin):
    texts = [a.text() for a in plugin.actions]
    assert "Review flagged tiles" in texts
    from sentinel_landslide.gui import MENU

    assert MENU == "Sentinel Landslide"


def test_review_ten_tiles_with_the_keyboard_persists(plugin, qgis_iface, qgis_bot, grid_copy, synthetic_scene):
    layer = add_grid(grid_copy)
    add_sources(synthetic_scene)
    dock = open_dock(plugin, qgis_iface)
    assert dock.layer is not None and dock.layer.id() == layer.id()
    # sources were prefilled from the layer names
    assert all(cb.currentLayer() is not None for cb in dock.source_combos.values())
    n = dock.tree.topLevelItemCount()
    assert n >= 10
    probs = [float(dock.tree.topLevelItem(i).text(1)) for i in range(n)]
    assert probs == sorted(probs, reverse=True)
    assert dock.progress_label.text() == f"0 of {n} reviewed"

    # navigation: N / Down forward, P / Up back
    QTest.keyClick(dock, Qt.Key.Key_N)
    QTest.keyClick(dock, Qt.Key.Key_Down)
    assert dock.tree.indexOfTopLevelItem(dock.tree.currentItem()) == 2
    QTest.keyClick(dock, Qt.Key.Key_P)
    QTest.keyClick(dock, Qt.Key.Key_Up)
    assert dock.tree.indexOfTopLevelItem(dock.tree.currentItem()) == 0

    keys = "CRUCCRUCRC"
    expected = {}
    for k, key in enumerate(keys):
        fid = dock.current_fid()
        tile_id = dock.layer.getFeature(fid)["tile_id"]
        if k == 0:  # a note typed in the note field: the keys go to the text, not to verdicts
            dock.note.setFocus()
            QTest.keyClicks(dock.note, "scarp, fresh debris")
            assert dock.note.text() == "scarp, fresh debris"
            dock.tree.setFocus()
        QTest.keyClick(dock, getattr(Qt.Key, f"Key_{key}"))
        expected[tile_id] = {"C": "confirmed", "R": "rejected", "U": "unsure"}[key]
    assert dock.progress_label.text() == f"10 of {n} reviewed"
    assert dock.tree.indexOfTopLevelItem(dock.tree.currentItem()) == 10  # moved on after each verdict
    first_tile = next(iter(expected))

    # "close QGIS": drop the layer, then open the file again as a brand-new layer
    QgsProject.instance().removeAllMapLayers()
    reopened = QgsVectorLayer(str(grid_copy), "reopened", "ogr")
    assert reopened.isValid()
    got = {f["tile_id"]: f["review"] for f in reopened.getFeatures() if f["review"]}
    assert got == expected
    notes = {f["tile_id"]: f["review_note"] for f in reopened.getFeatures() if f["review_note"]}
    assert notes == {first_tile: "scarp, fresh debris"}

    # and a separate process, with its own GDAL connection, sees the same
    code = ("import sys; from osgeo import ogr; ds = ogr.Open(sys.argv[1]); lyr = ds.GetLayer(0); "
            "print(sorted((f['tile_id'], f['review']) for f in lyr if f['review']))")
    out = subprocess.run([sys.executable, "-c", code, str(grid_copy)], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == str(sorted(expected.items()))


def test_chips_render_for_a_tile(plugin, qgis_iface, grid_copy, synthetic_scene):
    from sentinel_landslide.rendering import render

    add_grid(grid_copy)
    add_sources(synthetic_scene)
    dock = open_dock(plugin, qgis_iface)
    assert [c.key for c in dock.last_chips] == ["s2_rgb", "ndvi", "dvv_desc", "dvh_desc", "dvv_asc", "dvh_asc"]
    assert all(c.ok for c in dock.last_chips), [c.message for c in dock.last_chips]
    for chip in dock.last_chips:
        img = render.chip_image(chip, 150)
        assert not img.isNull() and img.width() == 150
        assert chip.rgb.std() > 0  # real pixels, not a flat fill
        assert not dock.chip_labels[chip.key].pixmap().isNull()
    assert not dock.members_label.pixmap().isNull()
    # the tile is highlighted on the canvas
    assert dock.rubber_band is not None and dock.rubber_band.numberOfVertices() >= 4


def test_chips_take_s2_bands_from_their_names(plugin, qgis_iface, grid_copy, synthetic_scene, tmp_path):
    """An S2 layer with R, G, B, NIR at bands 4, 3, 2, 6 of a named 6-band stack (B1...B8):
    the dock finds them by name, as detect does, and draws the very chips of the 4-band file."""
    import numpy as np

    from ..engine.test_detect import rgbn_stack

    add_grid(grid_copy)
    add_sources(synthetic_scene)
    dock = open_dock(plugin, qgis_iface)
    plain = {c.key: c.rgb.copy() for c in dock.last_chips if c.key in ("s2_rgb", "ndvi")}
    stack = QgsRasterLayer(rgbn_stack(synthetic_scene["S2"], tmp_path / "stack.tif"), "s2 stack")
    assert stack.isValid()
    QgsProject.instance().addMapLayer(stack)
    dock.source_combos["S2"].setLayer(stack)
    QgsApplication.processEvents()
    assert dock.renderer.sources.s2 == stack.source()
    assert dock.renderer.sources.rgbn_bands() == [4, 3, 2, 6]
    dock.select_index(0)
    chips = {c.key: c for c in dock.last_chips}
    for key, rgb in plain.items():
        assert chips[key].ok and np.array_equal(chips[key].rgb, rgb), key


def test_chips_say_which_layer_is_missing(plugin, qgis_iface, grid_copy):
    add_grid(grid_copy)  # no source rasters in the project
    dock = open_dock(plugin, qgis_iface)
    msgs = {c.key: c.message for c in dock.last_chips}
    assert not any(c.ok for c in dock.last_chips)
    assert msgs["s2_rgb"] == msgs["ndvi"] == "No Sentinel-2 layer selected"
    assert "No Sentinel-1 descending post-event layer selected" in msgs["dvv_desc"]
    assert "No Sentinel-1 ascending pre-event layer selected" in msgs["dvh_asc"]
    assert not dock.chip_labels["s2_rgb"].pixmap().isNull()  # the message is drawn in the chip


def test_filters_and_review_state(plugin, qgis_iface, grid_copy):
    add_grid(grid_copy)
    dock = open_dock(plugin, qgis_iface)
    n = dock.tree.topLevelItemCount()
    dock.set_verdict("confirmed")
    dock.set_verdict("rejected")
    dock.review_filter.setCurrentIndex(dock.review_filter.findText("Confirmed"))
    assert dock.tree.topLevelItemCount() == 1
    dock.review_filter.setCurrentIndex(dock.review_filter.findText("Not reviewed"))
    assert dock.tree.topLevelItemCount() == n - 2
    dock.review_filter.setCurrentIndex(0)
    probs = [r.prob for r in dock.rows]
    cut = round(probs[n // 2], 3)
    dock.min_prob.setValue(cut)
    assert dock.tree.topLevelItemCount() == sum(1 for p in probs if p >= cut) < n
    dock.min_prob.setValue(1.0)
    assert dock.tree.topLevelItemCount() == sum(1 for p in probs if p >= 1.0)
    if dock.tree.topLevelItemCount() == 0:
        assert "No tile matches" in dock.info.text()
    dock.min_prob.setValue(0.0)
    dock.status_filter.setCurrentIndex(dock.status_filter.findText("nodata"))
    assert dock.tree.topLevelItemCount() == 0  # flagged tiles are never nodata


def test_a_note_changed_after_the_verdict_is_saved(plugin, qgis_iface, grid_copy):
    add_grid(grid_copy)
    dock = open_dock(plugin, qgis_iface)
    first = dock.current_fid()
    QTest.keyClick(dock, Qt.Key.Key_R)  # verdict, no note; moves to the next tile
    QTest.keyClick(dock, Qt.Key.Key_Up)  # back to it
    assert dock.current_fid() == first
    dock.note.setFocus()
    QTest.keyClicks(dock.note, "pylon shadow")
    QTest.keyClick(dock, Qt.Key.Key_Down)  # leaving the tile keeps the note
    again = QgsVectorLayer(str(grid_copy), "again", "ogr").getFeature(first)
    assert (again["review"], again["review_note"]) == ("rejected", "pylon shadow")
    assert dock.note.text() == ""  # the next tile's (empty) note is shown


def test_grid_without_review_fields_gets_them(plugin, qgis_iface, grid_copy, tmp_path):
    from osgeo import gdal

    bare = tmp_path / "bare.gpkg"
    gdal.VectorTranslate(str(bare), str(grid_copy), options=["-select", "tile_id,row,col,prob,flagged,status"])
    layer = add_grid(bare)
    assert layer.fields().indexOf("review") < 0
    dock = open_dock(plugin, qgis_iface)
    assert dock.layer.fields().indexOf("review") >= 0 and dock.layer.fields().indexOf("review_note") >= 0
    assert dock.set_verdict("unsure")
    again = QgsVectorLayer(str(bare), "again", "ogr")
    assert [f["review"] for f in again.getFeatures() if f["review"]] == ["unsure"]


def test_source_layer_guesses():
    from sentinel_landslide.rendering.chips import guess_role, guess_sources

    assert guess_role("s2 s2.tif") == "S2"
    assert guess_role("Sentinel-2 L2A post-event") == "S2"
    assert guess_role("S1 desc post s1_desc_post.tif") == "S1_DESC_POST"
    assert guess_role("Sentinel-1 ascending pre-event") == "S1_ASC_PRE"
    assert guess_role("sar_dsc_before") == "S1_DESC_PRE"
    assert guess_role("S1 VV VH after ascending") == "S1_ASC_POST"
    assert guess_role("dem") is None
    assert guess_role("S1 descending") is None  # date unknown: not guessed
    assert guess_sources([("a", "s2 a.tif"), ("b", "S2 b.tif")]) == {"S2": "a"}


def test_screenshot_of_the_dock(plugin, qgis_iface, grid_copy, synthetic_scene):
    """build/screenshots/review_dock.png (git-ignored), for a person to look at."""
    add_grid(grid_copy)
    add_sources(synthetic_scene)
    dock = open_dock(plugin, qgis_iface)
    dock.note.setText("bare scar, SAR change in both orbits")
    dock.set_verdict("confirmed", advance=False)
    win = qgis_iface.mainWindow()
    canvas = qgis_iface.mapCanvas()
    if win.centralWidget() is None:  # the stub main window has no map view: give it the canvas
        win.setCentralWidget(canvas)
    win.resizeDocks([dock], [540], Qt.Orientation.Horizontal)
    win.resize(1400, 1010)
    QgsApplication.processEvents()
    dock.select_index(0)  # re-zoom after the resize
    canvas.waitWhileRendering()
    QTest.qWait(300 if QgsApplication.platformName() != "offscreen" else 10)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / "review_dock.png"
    assert dock.grab().save(str(path))
    assert win.grab().save(str(SCREENSHOTS / "review_window.png"))  # canvas with the tile + the dock
    # the file is the dock as shown: its size, and each chip's pixels where its label sits
    shot = QImage(str(path)).convertToFormat(QImage.Format.Format_RGB32)
    assert (shot.width(), shot.height()) == (dock.width(), dock.height())
    shown = 0
    for key, lbl in dock.chip_labels.items():
        pm = lbl.pixmap()
        if pm is None or pm.isNull():
            continue
        chip = pm.toImage().convertToFormat(QImage.Format.Format_RGB32)
        at = lbl.mapTo(dock, QPoint(0, 0))
        seen = lbl.visibleRegion()  # the part of the label not scrolled away or covered
        pts = [(x, y) for x in range(2, chip.width(), 23) for y in range(2, chip.height(), 23)
               if seen.contains(QPoint(x, y))]
        assert all(shot.pixel(at.x() + x, at.y() + y) == chip.pixel(x, y) for x, y in pts), key
        shown += len(pts) > 20
    assert shown >= 3  # S2 true colour, NDVI and at least one SAR change chip


def test_missing_packages_are_announced_in_the_message_bar(plugin, qgis_iface, monkeypatch):
    import sys

    from qgis.core import Qgis

    bar = qgis_iface.messageBar()
    assert plugin.warn_missing_packages() == []  # all installed here: nothing said
    before = len(bar.get_messages(Qgis.Warning))
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    assert plugin.warn_missing_packages() == ["onnxruntime"]
    said = bar.get_messages(Qgis.Warning)[before:]
    assert len(said) == 1 and "onnxruntime" in said[0] and "-m sentinel_landslide.deps install" in said[0]
