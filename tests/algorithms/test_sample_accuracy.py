"""landslide:sample and landslide:accuracy on a real detect grid of the SYNTHETIC scene, with
verdicts simulated from the planted scars; the report carries the accuracy table."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from osgeo import ogr
from qgis.core import QgsProcessingException

from ..helpers import scene_params


def assert_outputs_match(res: dict, ref) -> None:
    """landslide:accuracy's outputs equal the engine's estimates ``ref``."""
    assert res["PRECISION"] == pytest.approx(ref.users.value)
    assert res["RECALL"] == pytest.approx(ref.producers.value)
    assert res["F1"] == pytest.approx(ref.f1.value)
    assert res["LANDSLIDE_TILES"] == pytest.approx(ref.tiles.value)


@pytest.fixture(scope="module")
def sampled_grid(provider, synthetic_scene, tmp_path_factory) -> Path:
    """detect (threshold 0.15: more flagged tiles than the 8 sampled) -> sample (8 + 12 tiles) -> verdicts
    from the SYNTHETIC truth."""
    import processing

    from sentinel_landslide.engine.verdicts import read_grid, simulate_verdicts, tile_truth, write_fields

    d = tmp_path_factory.mktemp("sample")
    det = processing.run("landslide:detect", scene_params(synthetic_scene, d / "grid.gpkg", THRESHOLD=0.15))
    res = processing.run("landslide:sample", {"GRID": det["OUTPUT"], "N_FLAGGED": 8, "N_UNFLAGGED": 12, "SEED": 1,
                                              "OUTPUT": str(d / "sampled.gpkg")})
    assert (res["SAMPLED"], res["SAMPLED_FLAGGED"], res["SAMPLED_UNFLAGGED"]) == (20, 8, 12)
    path = Path(res["OUTPUT"].split("|")[0])
    g = read_grid(path)
    truth = tile_truth(g.bounds, synthetic_scene["truth"])
    chosen = np.flatnonzero(g.sample > 0)
    verdicts = simulate_verdicts(truth, chosen)
    verdicts[chosen[0]] = "unsure"  # ignored by the estimators
    write_fields(path, {"review": {int(g.fid[i]): verdicts[i] for i in range(len(g.fid)) if verdicts[i]}})
    return path


def test_sample_is_stratified_and_seeded(provider, sampled_grid, tmp_path):
    import processing

    from sentinel_landslide.engine.verdicts import read_grid

    g = read_grid(sampled_grid)
    assert set(np.unique(g.sample)) == set(range(21))  # numbered 1..20
    assert (g.sample[g.flagged] > 0).sum() == 8 and (g.sample[~g.flagged] > 0).sum() == 12
    assert g.scored[g.sample > 0].all()
    assert all(p == "random" for p, s in zip(g.extra["pick"], g.sample) if s)
    assert not any(p for p, s in zip(g.extra["pick"], g.sample) if not s)
    assert np.array_equal(g.stratum[g.scored], g.flagged[g.scored].astype(int))  # recorded at the first draw
    # the same sizes again: the sample is already that large, nothing is added or replaced
    again = processing.run("landslide:sample", {"GRID": str(sampled_grid), "N_FLAGGED": 8, "N_UNFLAGGED": 12,
                                                "SEED": 1, "OUTPUT": str(tmp_path / "again.gpkg")})
    assert np.array_equal(read_grid(again["OUTPUT"].split("|")[0]).sample, g.sample)


def test_sample_again_tops_up_and_keeps_the_first_tiles(provider, sampled_grid, tmp_path):
    """A second draw with larger sizes adds only the missing tiles, numbered on, in the
    strata recorded at the first draw (not today's flags), never among tiles reviewed
    purposively; the first sample and its verdicts stay."""
    import shutil

    import processing

    from sentinel_landslide.engine.verdicts import read_grid, write_fields

    src = tmp_path / "src.gpkg"
    shutil.copy(sampled_grid, src)
    g = read_grid(src)
    # a flagged tile reviewed on purpose (not in the sample) and a stratum that differs from today's flag
    purposive = int(np.flatnonzero(g.flagged & (g.sample == 0) & g.scored)[0])
    moved = int(np.flatnonzero(~g.flagged & (g.sample == 0) & g.scored)[0])
    write_fields(src, {"review": {int(g.fid[purposive]): "confirmed"}, "pick": {int(g.fid[purposive]): "uncertain"},
                       "stratum": {int(g.fid[moved]): 1}})
    n1 = int(g.flagged[g.scored].sum()) + 1  # every tile of stratum 1 that may be drawn, and more
    res = processing.run("landslide:sample", {"GRID": str(src), "N_FLAGGED": n1, "N_UNFLAGGED": 14, "SEED": 5,
                                              "OUTPUT": str(tmp_path / "more.gpkg")})
    h = read_grid(res["OUTPUT"].split("|")[0])
    first = g.sample > 0
    assert np.array_equal(h.sample[first], g.sample[first])  # kept, same numbers
    assert [h.review[i] for i in np.flatnonzero(first)] == [g.review[i] for i in np.flatnonzero(first)]
    added = (h.sample > 0) & ~first
    assert sorted(h.sample[added]) == list(range(21, 21 + int(added.sum())))  # numbered on
    assert h.sample[purposive] == 0 and h.extra["pick"][purposive] == "uncertain"
    assert h.sample[moved] > 0  # drawn in its recorded stratum (1), where every free tile was taken
    assert ((h.sample > 0) & (h.stratum == 0)).sum() == 14
    assert res["SAMPLED"] == int((h.sample > 0).sum())


def test_accuracy_matches_the_engine_estimators(provider, sampled_grid, synthetic_scene, tmp_path):
    import processing

    from sentinel_landslide.engine.accuracy import stratified_accuracy
    from sentinel_landslide.engine.verdicts import read_grid

    g = read_grid(sampled_grid)
    lab = g.labels
    s1 = (g.sample > 0) & g.flagged & np.isfinite(lab)
    s0 = (g.sample > 0) & ~g.flagged & np.isfinite(lab)
    assert s1.sum() + s0.sum() == 19  # one unsure
    ref = stratified_accuracy(int((g.flagged & g.scored).sum()), int((~g.flagged & g.scored).sum()),
                              int(lab[s1].sum()), int(s1.sum()), int(lab[s0].sum()), int(s0.sum()))
    html = tmp_path / "acc.html"
    res = processing.run("landslide:accuracy", {"GRID": str(sampled_grid), "OUTPUT_HTML": str(html)})
    assert res["OVERALL"] == pytest.approx(ref.overall.value)
    assert_outputs_match(res, ref)
    assert res["LANDSLIDE_AREA_KM2"] == pytest.approx(ref.tiles.value * 0.4096, rel=1e-6)  # 640 m tiles
    assert res["OVERALL_LO"] <= res["OVERALL"] <= res["OVERALL_HI"]
    assert (res["N_FLAGGED"], res["N_UNFLAGGED"]) == (int(s1.sum()), int(s0.sum()))
    assert "95 % interval" in html.read_text()


def test_accuracy_of_a_rescored_grid_weighs_the_strata_of_the_draw(provider, sampled_grid, tmp_path):
    """After a re-score (flags changed since the draw, the draw's classes kept in ``stratum``) and
    a purposive verdict, landslide:accuracy gives the engine's Stehman estimates of today's map,
    not those that weigh the sample by today's flags, and says so in its table."""
    import shutil

    import processing

    from sentinel_landslide.engine.accuracy import design_accuracy
    from sentinel_landslide.engine.verdicts import read_grid, write_fields

    src = tmp_path / "rescored.gpkg"
    shutil.copy(sampled_grid, src)
    g = read_grid(src)
    # re-score: three unflagged tiles (one of them in the sample) become flagged; stratum keeps the draw's class
    unflag_sample = np.flatnonzero(~g.flagged & (g.sample > 0) & np.isfinite(g.labels))[:1]
    unflag_other = np.flatnonzero(~g.flagged & (g.sample == 0) & g.scored)[:2]
    moved = np.r_[unflag_sample, unflag_other]
    purposive = int(np.flatnonzero(g.flagged & (g.sample == 0) & g.scored)[0])
    write_fields(src, {"flagged": {int(g.fid[i]): 1 for i in moved},
                       "stratum": {int(g.fid[i]): int(g.flagged[i]) for i in np.flatnonzero(g.scored)},
                       "review": {int(g.fid[purposive]): "rejected"}, "pick": {int(g.fid[purposive]): "uncertain"}})
    h = read_grid(src)
    assert h.flagged[moved].all() and (h.stratum[moved] == 0).all()
    ref = design_accuracy(h.flagged, h.scored, h.labels, h.pick, h.stratum)
    html = tmp_path / "acc.html"
    res = processing.run("landslide:accuracy", {"GRID": str(src), "OUTPUT_HTML": str(html)})
    assert_outputs_match(res, ref)
    naive = design_accuracy(h.flagged, h.scored, h.labels, h.pick, h.flagged.astype(int))
    assert (res["PRECISION"], res["LANDSLIDE_TILES"]) != pytest.approx((naive.users.value, naive.tiles.value))
    assert "Stehman (2014)" in html.read_text() and "1 purposive verdicts" in html.read_text()


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
