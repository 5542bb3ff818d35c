"""The cascade against FULL_ENSEMBLE on SYNTHETIC scenes, tile by tile: identical flags,
the networks' probability where they ran, the stated bound where they did not."""
from __future__ import annotations

import pytest

from ..helpers import scene_options


def _compare(scene, package, **kw):
    from sentinel_landslide.models.ensemble import gbm_tile_bound
    from sentinel_landslide.pipeline import run_detection

    cas = run_detection(scene_options(scene, threads=2, **kw), package)
    full = run_detection(scene_options(scene, threads=2, full_ensemble=True, **kw), package)
    assert len(cas.records) == len(full.records)
    counts = {"full": 0, "gbm": 0}
    for a, b in zip(cas.records, full.records):
        assert (a.tile_id, a.status, a.mode) == (b.tile_id, b.status, b.mode)
        if a.status != "ok":
            assert a.scored_by is None and a.prob is None
            continue
        assert b.scored_by == "full"
        assert a.flagged == b.flagged, (a.tile_id, a.prob, b.prob)  # identical flags, every tile
        counts[a.scored_by] += 1
        assert 0.0 <= a.uncertainty <= 1.0
        if a.scored_by == "full":
            assert a.prob == pytest.approx(b.prob, abs=1e-5)
            assert set(a.members) == set(b.members)
        else:
            kinds = {m["name"]: m["kind"] for m in package.manifest["members"]}
            nets = [m for m in b.members if kinds[m] == "onnx"]
            gbms = [m for m in b.members if kinds[m] != "onnx"]
            assert nets and set(a.members) == set(gbms)  # the networks did not run on it
            w = {m["name"]: float(m["weight"]) for m in package.manifest["members"]}
            W, N = sum(w[m] for m in b.members), sum(w[m] for m in nets)
            assert a.prob == pytest.approx(sum(w[m] * a.members[m] for m in gbms) / sum(w[m] for m in gbms))
            assert abs(a.prob - b.prob) <= float(gbm_tile_bound(a.prob, N, W)) + 1e-9
            t = cas.thresholds[a.mode]
            margin = kw.get("cascade_margin", 0.05)
            assert abs(b.prob - t) >= margin  # never within the margin of the threshold
    return cas, full, counts


@pytest.mark.parametrize("kw", [{}, {"cascade_margin": 0.0}, {"threshold": 0.2}, {"threshold": 0.6, "cascade_margin": 0.1}])
def test_cascade_flags_equal_the_full_ensemble_on_every_tile(synthetic_scene, package, kw):
    cas, _full, counts = _compare(synthetic_scene, package, **kw)
    assert counts["gbm"] > 0  # the networks were skipped somewhere ...
    assert any("Cascade: the networks ran on" in line for line in cas.log)
    assert cas.timings["tiles_gbm"] == counts["gbm"] and cas.timings["tiles_full"] == counts["full"]


def test_sar_only_cascade_with_its_single_network(synthetic_scene, package):
    _compare(synthetic_scene, package, s2=False)


def test_a_margin_as_wide_as_the_scale_runs_every_member_everywhere(synthetic_scene, package):
    cas, full, counts = _compare(synthetic_scene, package, cascade_margin=1.0)
    assert counts["gbm"] == 0 and counts["full"] > 0
    assert not any("Cascade:" in line for line in cas.log)


def test_the_grid_records_how_each_tile_was_scored(tmp_path, synthetic_scene, package):
    from osgeo import ogr

    from sentinel_landslide.engine.outputs import write_grid
    from sentinel_landslide.engine.verdicts import read_grid
    from sentinel_landslide.pipeline import run_detection

    res = run_detection(scene_options(synthetic_scene, threads=2), package)
    path = write_grid(str(tmp_path / "g.gpkg"), res, package.name)
    ds = ogr.Open(path)
    lyr = ds.GetLayer(0)
    got = {f.GetField("tile_id"): (f.GetField("scored_by"), f.GetField("p_nn_vit3")) for f in lyr}
    for r in res.records:
        how, p_net = got[r.tile_id]
        assert how == r.scored_by
        if how == "gbm":
            assert p_net is None  # a network that did not run has no probability
    grid = read_grid(path)  # what sample / accuracy / adapt read
    assert int(grid.scored.sum()) == sum(r.status == "ok" for r in res.records)
