"""landslide:sample and landslide:accuracy on a real detect grid of the SYNTHETIC scene, with
verdicts simulated from the planted scars; the report carries the accuracy table."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from osgeo import ogr
from qgis.core import QgsProcessingException

from ..helpers import scene_params


@pytest.fixture(scope="module")
def sampled_grid(provider, synthetic_scene, tmp_path_factory) -> Path:
    """detect (threshold 0.2) -> sample (8 + 12 tiles) -> verdicts from the SYNTHETIC truth."""
    import processing

    from sentinel_landslide.engine.verdicts import read_grid, simulate_verdicts, tile_truth, write_fields

    d = tmp_path_factory.mktemp("sample")
    det = processing.run("landslide:detect", scene_params(synthetic_scene, d / "grid.gpkg", THRESHOLD=0.2))
    res = processing.run("landslide:sample", {"GRID": det["OUTPUT"], "N_FLAGGED": 8, "N_UNFLAGGED": 12, "SEED": 1,
                                              "OUTPUT": str(d / "sampled.gpkg")})
    assert (res["SAMPLED"], res["SAMPLED_FLAGGED"], res["SAMPLED_UNFLAGGED"]) == (20, 8, 12)
    path = Path(res["OUTPUT"].split("|")[0])
    g = read_grid(path)
    truth = tile_truth(g.bounds, synthetic_scene["truth"])
    chosen = np.flatnonzero(g.sample == 1)
    verdicts = simulate_verdicts(truth, chosen)
    verdicts[chosen[0]] = "unsure"  # ignored by the estimators
    write_fields(path, {"review": {int(g.fid[i]): verdicts[i] for i in range(len(g.fid)) if verdicts[i]}})
    return path


def test_sample_is_stratified_and_seeded(provider, sampled_grid, tmp_path):
    import processing

    from sentinel_landslide.engine.verdicts import read_grid

    g = read_grid(sampled_grid)
    assert set(np.unique(g.sample)) == {0, 1}
    assert (g.sample[g.flagged] == 1).sum() == 8 and (g.sample[~g.flagged] == 1).sum() == 12
    assert g.scored[g.sample == 1].all()
    again = processing.run("landslide:sample", {"GRID": str(sampled_grid), "N_FLAGGED": 8, "N_UNFLAGGED": 12,
                                                "SEED": 1, "OUTPUT": str(tmp_path / "again.gpkg")})
    assert np.array_equal(read_grid(again["OUTPUT"].split("|")[0]).sample, g.sample)  # same seed, same sample


def test_accuracy_matches_the_engine_estimators(provider, sampled_grid, synthetic_scene, tmp_path):
    import processing

    from sentinel_landslide.engine.accuracy import stratified_accuracy
    from sentinel_landslide.engine.verdicts import read_grid

    g = read_grid(sampled_grid)
    lab = g.labels
    s1 = (g.sample == 1) & g.flagged & np.isfinite(lab)
    s0 = (g.sample == 1) & ~g.flagged & np.isfinite(lab)
    assert s1.sum() + s0.sum() == 19  # one unsure
    ref = stratified_accuracy(int((g.flagged & g.scored).sum()), int((~g.flagged & g.scored).sum()),
                              int(lab[s1].sum()), int(s1.sum()), int(lab[s0].sum()), int(s0.sum()))
    html = tmp_path / "acc.html"
    res = processing.run("landslide:accuracy", {"GRID": str(sampled_grid), "OUTPUT_HTML": str(html)})
    assert res["OVERALL"] == pytest.approx(ref.overall.value)
    assert res["PRECISION"] == pytest.approx(ref.users.value)
    assert res["RECALL"] == pytest.approx(ref.producers.value)
    assert res["F1"] == pytest.approx(ref.f1.value)
    assert res["LANDSLIDE_TILES"] == pytest.approx(ref.tiles.value)
    assert res["LANDSLIDE_AREA_KM2"] == pytest.approx(ref.tiles.value * 0.4096, rel=1e-6)  # 640 m tiles
    assert res["OVERALL_LO"] <= res["OVERALL"] <= res["OVERALL_HI"]
    assert (res["N_FLAGGED"], res["N_UNFLAGGED"]) == (int(s1.sum()), int(s0.sum()))
    assert "95 % interval" in html.read_text()


def test_accuracy_without_a_sample_says_what_to_do(provider, synthetic_scene, tmp_path):
    import processing

    det = processing.run("landslide:detect", scene_params(synthetic_scene, tmp_path / "g.gpkg", THRESHOLD=0.2))
    ds = ogr.Open(det["OUTPUT"].split("|")[0])
    assert ds.GetLayer(0).GetLayerDefn().GetFieldIndex("sample") >= 0  # detect writes the empty field
    ds = None
    with pytest.raises(QgsProcessingException, match="no sample tiles"):
        processing.run("landslide:accuracy", {"GRID": det["OUTPUT"]})


def test_report_carries_the_accuracy_table(provider, sampled_grid, tmp_path):
    import processing

    res = processing.run("landslide:report", {"GRID": str(sampled_grid), "OUTPUT_HTML": str(tmp_path / "r.html"),
                                              "MAX_TILES": 2})
    text = Path(res["OUTPUT_HTML"]).read_text()
    assert "Accuracy from the stratified sample" in text and "Producer&#x27;s accuracy (recall)" in text
