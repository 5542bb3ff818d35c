"""The review panel's analyst tools on a real detect grid of the SYNTHETIC scene: order by
uncertainty, draw a stratified accuracy sample into the 'sample' field and list only it."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from osgeo import ogr
from qgis.core import QgsProject

from ..helpers import scene_params
from .test_review import add_grid, open_dock, plugin  # noqa: F401 - the plugin fixture


@pytest.fixture(scope="module")
def grid_default(provider, synthetic_scene, tmp_path_factory) -> Path:
    """detect at a low threshold (0.2): both flagged and unflagged tiles on the 70-tile scene."""
    import processing

    out = tmp_path_factory.mktemp("detect_an") / "grid.gpkg"
    res = processing.run("landslide:detect", scene_params(synthetic_scene, out, THRESHOLD=0.2))
    assert 5 <= res["FLAGGED"] <= res["TILES"] - 5
    return Path(res["OUTPUT"].split("|")[0])


def test_filter_tiles_orders_by_uncertainty_and_lists_the_sample():
    from sentinel_landslide.gui.review_dock import TileRow, filter_tiles

    rows = [TileRow(1, 1, 0, 0, 0.9, True, "ok", "", 0.1, 0), TileRow(2, 2, 0, 1, 0.5, True, "ok", "", 0.8, 1),
            TileRow(3, 3, 0, 2, 0.1, False, "ok", "", 0.3, 1), TileRow(4, 4, 0, 3, None, False, "nodata", "", None, 0)]
    assert [r.fid for r in filter_tiles(rows)] == [1, 2]
    assert [r.fid for r in filter_tiles(rows, order="uncertainty")] == [2, 1]
    assert [r.fid for r in filter_tiles(rows, flagged_only=False, order="uncertainty")] == [2, 3, 1, 4]
    # the sample list ignores 'flagged only': unflagged sample tiles are the point
    assert [r.fid for r in filter_tiles(rows, flagged_only=True, sample_only=True)] == [2, 3]


def test_most_uncertain_first_and_draw_accuracy_sample(plugin, qgis_iface, grid_default, tmp_path):  # noqa: F811
    grid = tmp_path / "grid.gpkg"
    shutil.copy(grid_default, grid)
    add_grid(grid)
    dock = open_dock(plugin, qgis_iface)
    dock.flagged_only.setChecked(False)
    dock.order_combo.setCurrentIndex(dock.order_combo.findData("uncertainty"))
    unc = {f.id(): f["uncertainty"] for f in dock.layer.getFeatures()}
    listed = [dock.tree.topLevelItem(i).data(0, 256) for i in range(dock.tree.topLevelItemCount())]
    values = [unc[fid] for fid in listed]
    assert values == sorted(values, reverse=True) and len(values) == 70

    drawn = dock.draw_sample(per_class=4, seed=3)
    assert drawn == 8
    assert dock.sample_only.isChecked() and dock.tree.topLevelItemCount() == 8
    first = {r.fid: r.sample for r in dock.all_rows if r.sample}
    assert sorted(first.values()) == list(range(1, 9))  # numbered
    # a second draw tops the sample up to 6 per map class: the first 8 tiles keep their numbers
    assert dock.draw_sample(per_class=6, seed=3) == 4
    assert dock.tree.topLevelItemCount() == 12
    QgsProject.instance().removeAllMapLayers()
    ds = ogr.Open(str(grid))
    lyr = ds.GetLayer(0)
    marked = {f.GetFID(): (f["flagged"], f["sample"], f["pick"]) for f in lyr}
    ds = None
    assert all(marked[fid][1] == n for fid, n in first.items())
    assert sorted(s for _, s, _ in marked.values() if s) == list(range(1, 13))
    assert all(p == "random" for _, s, p in marked.values() if s)
    assert sum(1 for fl, s, _ in marked.values() if s and fl) == 6
    assert sum(1 for fl, s, _ in marked.values() if s and not fl) == 6
