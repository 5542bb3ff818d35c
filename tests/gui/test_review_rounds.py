"""Review in rounds in the panel, on a real detect grid of the SYNTHETIC scene: "Next tiles to
review" writes pick / sample / stratum and each round adds to the sample; the share label
shows the estimate of known verdicts; "Adapt and re-score" runs adapt and detect in a
background task and opens a new grid with the review carried over, the old one kept."""
from __future__ import annotations

import math
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from osgeo import ogr
from qgis.core import QgsApplication, QgsProject, QgsTask
from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtGui import QImage

from ..helpers import ROOT, scene_params
from .test_review import add_grid, open_dock, plugin  # noqa: F401 - the plugin fixture

SCREENSHOTS = ROOT / "build" / "screenshots"


@pytest.fixture(scope="module")
def rounds_grid(provider, synthetic_scene, tmp_path_factory) -> Path:
    """detect at threshold 0.2 (flagged and unflagged tiles on the 70-tile scene), written to a
    GeoPackage with its run record."""
    import processing

    out = tmp_path_factory.mktemp("detect_rounds") / "grid.gpkg"
    res = processing.run("landslide:detect", scene_params(synthetic_scene, out, THRESHOLD=0.2))
    assert 5 <= res["FLAGGED"] <= res["TILES"] - 5
    return Path(res["OUTPUT"].split("|")[0])


@pytest.fixture()
def grid(rounds_grid, tmp_path) -> Path:
    dst = tmp_path / "grid.gpkg"
    shutil.copy(rounds_grid, dst)
    shutil.copy(str(rounds_grid) + ".detect.json", str(dst) + ".detect.json")
    return dst


def read(path, *names) -> dict:
    """{tile_id: (field values...)} straight from the file (OGR, no QGIS layer)."""
    ds = ogr.Open(str(path))
    lyr = ds.GetLayer(0)
    defn = lyr.GetLayerDefn()
    out = {f["tile_id"]: tuple(f[n] if defn.GetFieldIndex(n) >= 0 else None for n in names) for f in lyr}
    ds = None
    return out


def truth_of(path, scene) -> dict:
    from sentinel_landslide.engine.verdicts import read_grid, tile_truth

    g = read_grid(path)
    return dict(zip(g.tile_id.tolist(), tile_truth(g.bounds, scene["truth"]).tolist()))


def review_listed(dock, truth) -> None:
    """Give every listed tile the verdict its SYNTHETIC truth says, through the panel."""
    for i in range(dock.tree.topLevelItemCount()):
        dock.select_index(i)
        tid = dock.layer.getFeature(dock.current_fid())["tile_id"]
        assert dock.set_verdict("confirmed" if truth[tid] else "rejected", advance=False)


def test_detect_records_its_layers(rounds_grid, synthetic_scene):
    from sentinel_landslide.engine.outputs import read_run_record

    opts, model = read_run_record(str(rounds_grid))
    assert opts.s2.path == synthetic_scene["S2"] and opts.s1["S1_ASC_PRE"].path == synthetic_scene["S1_ASC_PRE"]
    assert opts.threshold == 0.2 and model


def test_batches_write_the_fields_and_add_to_the_sample(plugin, qgis_iface, grid, synthetic_scene):  # noqa: F811
    add_grid(grid)
    dock = open_dock(plugin, qgis_iface)
    truth = truth_of(grid, synthetic_scene)
    assert dock.batch_size.value() == 20
    first = dock.next_tiles(10)
    assert len(first) == 10 and dock.batch_only.isChecked() and dock.tree.topLevelItemCount() == 10
    assert dock.current_fid() == first[0]  # the reviewer is on the batch's first tile
    got = read(grid, "pick", "sample", "stratum", "flagged", "status")
    picked = {t: v for t, v in got.items() if v[0]}
    assert len(picked) == 10
    randoms = sorted(v[1] for v in picked.values() if v[0] == "random")
    assert randoms == [1, 2, 3, 4, 5]  # half the batch, numbered
    assert all(v[0] == "informative" and not v[1] for v in picked.values() if v[0] != "random")
    scored = {t: v for t, v in got.items() if v[4] == "ok"}
    assert all(v[2] == int(v[3]) for v in scored.values())  # stratum = map class at the first draw
    review_listed(dock, truth)

    second = dock.next_tiles(10)
    assert len(second) == 10 and not set(second) & set(first)
    again = read(grid, "pick", "sample", "review")
    for t, v in picked.items():  # the first round is untouched: same pick, same number, its verdict
        assert again[t][:2] == v[:2] and again[t][2] in ("confirmed", "rejected")
    numbers = sorted(v[1] for v in again.values() if v[1])
    assert numbers == list(range(1, 11))  # 5 more random tiles, numbered on
    assert sum(1 for v in again.values() if v[0]) == 20

    # a tile reviewed by hand outside any batch is a manual pick; clearing it clears the pick
    dock.batch_only.setChecked(False)
    dock.flagged_only.setChecked(False)
    free = next(i for i, r in enumerate(dock.rows) if not r.pick and not r.sample)
    dock.select_index(free)
    tid = dock.layer.getFeature(dock.current_fid())["tile_id"]
    assert dock.set_verdict("rejected", advance=False)
    assert read(grid, "pick", "sample")[tid] == ("manual", None)
    assert dock.set_verdict(None, advance=False)
    assert read(grid, "pick")[tid] == (None,)


def test_the_share_label_shows_the_estimate_of_known_verdicts(plugin, qgis_iface, grid):  # noqa: F811
    """Random verdicts known by construction: 4 in the flagged stratum (2 landslides), 6 in
    the other (1), and 2 purposive landslides: T = 2 + M1 * 2/4 + M0 * 1/6."""
    from sentinel_landslide.engine.verdicts import read_grid, write_fields

    g = read_grid(grid)
    ok = np.flatnonzero(g.scored)
    f1 = [i for i in ok if g.flagged[i]]
    f0 = [i for i in ok if not g.flagged[i]]
    rand1, rand0, purp = f1[:4], f0[:6], [f0[-1], f1[-1]]
    review = {**{int(g.fid[i]): v for i, v in zip(rand1, ["confirmed", "confirmed", "rejected", "rejected"])},
              **{int(g.fid[i]): ("confirmed" if k == 0 else "rejected") for k, i in enumerate(rand0)},
              **{int(g.fid[i]): "confirmed" for i in purp}}
    pick = {**{int(g.fid[i]): "random" for i in rand1 + rand0}, **{int(g.fid[i]): "uncertain" for i in purp}}
    sample = {int(g.fid[i]): k + 1 for k, i in enumerate(rand1 + rand0)}
    stratum = {int(g.fid[i]): int(g.flagged[i]) for i in ok}
    write_fields(grid, {"review": review, "pick": pick, "sample": sample, "stratum": stratum})
    N1, N0 = len(f1), len(f0)
    M1, M0 = N1 - 1, N0 - 1  # each stratum holds one purposive tile
    T = 2 + M1 * 2 / 4 + M0 * 1 / 6
    N = N1 + N0

    add_grid(grid)
    dock = open_dock(plugin, qgis_iface)
    text = dock.share_label.text()
    assert f"{100 * T / N:.1f} %" in text and f"about <b>{T:.0f}</b> of {N} tiles" in text, text
    assert "from 10 random and 2 purposive verdicts" in text
    est = dock.share_estimate()
    assert est.lo < T / N < est.hi and math.isclose(est.count, T)

    # one more random verdict given in the panel: the label follows at once
    dock.flagged_only.setChecked(False)
    dock.sample_only.setChecked(False)
    extra = f0[6]
    write_fields(grid, {"pick": {int(g.fid[extra]): "random"}, "sample": {int(g.fid[extra]): 11}})
    dock.reload_tiles()
    dock.select_index(next(k for k, r in enumerate(dock.rows) if r.fid == int(g.fid[extra])))
    dock.set_verdict("confirmed", advance=False)
    T2 = 2 + M1 * 2 / 4 + M0 * 2 / 7
    assert f"{100 * T2 / N:.1f} %" in dock.share_label.text() and "from 11 random" in dock.share_label.text()


def test_share_label_without_random_verdicts_says_so(plugin, qgis_iface, grid):  # noqa: F811
    add_grid(grid)
    dock = open_dock(plugin, qgis_iface)
    assert "not known yet" in dock.share_label.text() and "no random verdict" in dock.share_label.text()


def test_next_round_paths(tmp_path):
    from sentinel_landslide.gui.rescore import next_round_paths

    g = tmp_path / "grid.gpkg"
    assert next_round_paths(str(g)) == (tmp_path / "grid_r2.gpkg", tmp_path / "grid_adapted_r2")
    (tmp_path / "grid_r2.gpkg").touch()
    assert next_round_paths(str(g))[0] == tmp_path / "grid_r3.gpkg"
    assert next_round_paths(str(tmp_path / "grid_r3.gpkg")) == (tmp_path / "grid_r4.gpkg", tmp_path / "grid_adapted_r4")


def wait_for(task, limit_s: float = 540.0) -> None:
    """Let the task manager run the task and deliver its end to the main thread (a bounded
    wait: a hung task fails the test instead of hanging it)."""
    t0 = time.monotonic()
    while task.status() not in (QgsTask.TaskStatus.Complete, QgsTask.TaskStatus.Terminated):
        QgsApplication.processEvents()
        time.sleep(0.05)
        assert time.monotonic() - t0 < limit_s, "the task did not end"
    for _ in range(50):  # finished() runs from the manager's signal, on the main thread
        QgsApplication.processEvents()
        time.sleep(0.01)


def test_adapt_and_rescore_end_to_end(plugin, qgis_iface, grid, synthetic_scene, tmp_path):  # noqa: F811
    from sentinel_landslide.engine.verdicts import read_grid

    old_layer = add_grid(grid)
    dock = open_dock(plugin, qgis_iface)
    truth = truth_of(grid, synthetic_scene)
    dock.next_tiles(20)
    review_listed(dock, truth)
    before = read(grid, "review", "sample", "pick", "stratum", "row", "col")
    labels = [v[0] for v in before.values() if v[0]]
    assert "confirmed" in labels and "rejected" in labels
    with open(grid, "rb") as fh:
        old_bytes = fh.read()

    task = dock.adapt_and_rescore(rounds_scale=0.1)
    assert task is not None and dock.task_progress.isVisible() and not dock.rescore_button.isEnabled()
    wait_for(task)
    assert task.error is None, task.error
    new_path = tmp_path / "grid_r2.gpkg"
    assert task.result["grid"] == str(new_path) and new_path.exists()
    assert (tmp_path / "grid_adapted_r2" / "manifest.json").exists()
    assert Path(str(new_path) + ".detect.json").exists()  # the next round can re-score again

    # the new grid is loaded and reviewed in the panel; the old layer and file are kept
    layers = QgsProject.instance().mapLayers()
    assert old_layer.id() in layers
    assert dock.layer is not None and dock.layer.id() != old_layer.id()
    assert dock.layer.source().split("|")[0] == str(new_path)
    with open(grid, "rb") as fh:
        assert fh.read() == old_bytes
    assert dock.rescore_button.isEnabled() and not dock.task_progress.isVisible()

    # the review state is carried over by tile position
    after = read(new_path, "review", "sample", "pick", "stratum", "row", "col")
    pos_before = {(v[4], v[5]): v[:4] for v in before.values()}
    pos_after = {(v[4], v[5]): v[:4] for v in after.values()}
    assert pos_before.keys() == pos_after.keys()
    for k, v in pos_before.items():
        assert pos_after[k] == v, k
    g = read_grid(new_path)
    assert g.scored.sum() > 0 and task.result["carried"] == len(labels) and task.result["lost"] == 0
    assert "model" in dock.layer.fields().names()
    from sentinel_landslide.models.package import load_package

    adapted = load_package(tmp_path / "grid_adapted_r2")  # a complete package (checksums verified)
    assert {f["model"] for f in dock.layer.getFeatures()} == {adapted.name}  # scored by it

    # the next round on the new grid adds to the same sample: random tiles numbered on from 11
    nxt = dock.next_tiles(10)
    assert len(nxt) == 10 and dock.tree.topLevelItemCount() == 10
    third = read(new_path, "sample", "pick", "review")
    assert sorted(v[0] for v in third.values() if v[0]) == list(range(1, 16))
    assert sum(1 for v in third.values() if v[1]) == 30


def test_adapt_and_rescore_cancelled_writes_no_grid(plugin, qgis_iface, grid, synthetic_scene, tmp_path):  # noqa: F811
    add_grid(grid)
    dock = open_dock(plugin, qgis_iface)
    dock.next_tiles(12)
    review_listed(dock, truth_of(grid, synthetic_scene))
    task = dock.adapt_and_rescore(rounds_scale=0.1)
    task.cancel()
    wait_for(task)
    assert task.result is None and "cancelled" in (task.error or "")
    assert not (tmp_path / "grid_r2.gpkg").exists() and not list(tmp_path.glob("*.part.gpkg"))
    assert dock.task is None and dock.rescore_button.isEnabled()


def test_cancel_during_detect_leaves_no_grid(plugin, qgis_iface, grid, synthetic_scene, tmp_path):  # noqa: F811
    """Cancelled once adapt has written its package (during detect): no grid, no partial
    file; the complete adapted package stays.  The task's run() is called here directly."""
    import os

    from sentinel_landslide.gui.rescore import AdaptRescoreTask, next_round_paths, recorded_inputs

    add_grid(grid)
    dock = open_dock(plugin, qgis_iface)
    dock.next_tiles(12)
    review_listed(dock, truth_of(grid, synthetic_scene))
    opts, model = recorded_inputs(str(grid))
    new_grid, package = next_round_paths(str(grid))

    class CancelInDetect(AdaptRescoreTask):
        def _cancelled(self):
            return os.path.isdir(self.package_out)

    task = CancelInDetect(str(grid), opts, model, str(package), str(new_grid), rounds_scale=0.1)
    assert task.run() is False and "cancelled" in task.error
    assert (package / "manifest.json").exists() and not new_grid.exists()
    assert not list(tmp_path.glob("*.part.gpkg"))


def test_without_a_run_record_the_inputs_are_asked(plugin, qgis_iface, grid, synthetic_scene, monkeypatch):  # noqa: F811
    """No <grid>.detect.json: the dialog asks for the layers, prefilled with the panel's chip
    layers, and builds detect's options from them; refusing it starts nothing."""
    import os

    from sentinel_landslide.gui import rescore

    from .test_review import add_sources

    os.remove(str(grid) + ".detect.json")
    add_grid(grid)
    add_sources(synthetic_scene)
    dock = open_dock(plugin, qgis_iface)
    asked = []

    class Refused(rescore.InputsDialog):
        def exec(self):
            asked.append(self.options())
            return 0

    monkeypatch.setattr(rescore, "InputsDialog", Refused)
    assert dock.adapt_and_rescore() is None and dock.task is None
    assert len(asked) == 1
    opts, model = asked[0]
    assert opts.s2.path == synthetic_scene["S2"] and opts.s2.bands is None and opts.s2_mask is None
    assert {r: x.path for r, x in opts.s1.items()} == {r: synthetic_scene[r] for r in opts.s1} and len(opts.s1) == 4
    assert model is None  # empty: the bundled package


def test_screenshot_of_the_review_rounds(plugin, qgis_iface, grid, synthetic_scene, tmp_path):  # noqa: F811
    """The panel after a batch with verdicts: <tmp>/review_rounds.png and
    build/screenshots/review_rounds.png (git-ignored), for a person to look at."""
    from .test_review import add_sources

    add_grid(grid)
    add_sources(synthetic_scene)
    dock = open_dock(plugin, qgis_iface)
    dock.next_tiles(20)
    review_listed(dock, truth_of(grid, synthetic_scene))
    win = qgis_iface.mainWindow()
    canvas = qgis_iface.mapCanvas()
    if win.centralWidget() is None:  # the stub main window has no map view: give it the canvas
        win.setCentralWidget(canvas)
    win.resizeDocks([dock], [600], Qt.Orientation.Horizontal)
    win.resize(1400, 1100)
    QgsApplication.processEvents()
    dock.select_index(3)
    canvas.waitWhileRendering()
    path = tmp_path / "review_rounds.png"
    assert dock.grab().save(str(path))
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    shutil.copy(path, SCREENSHOTS / "review_rounds.png")
    shot = QImage(str(path))
    assert (shot.width(), shot.height()) == (dock.width(), dock.height())
    assert dock.share_label.isVisible() and "Landslide share of the region" in dock.share_label.text()
    picked = [dock.tree.topLevelItem(i).text(3) for i in range(dock.tree.topLevelItemCount())]
    assert sum(p.startswith("random #") for p in picked) == 10 and picked.count("informative") == 10
