"""Review in rounds without QGIS: a sample that grows instead of being replaced
(engine/sampling.py), what a batch writes (engine/review_rounds.py), the review state carried
to a re-scored grid by tile position, and detect's run record (engine/outputs.py)."""
from __future__ import annotations

import numpy as np


def _strata(n=200, flagged_share=0.2, seed=0):
    rng = np.random.default_rng(seed)
    flagged = rng.random(n) < flagged_share
    scored = rng.random(n) > 0.05
    return flagged, scored


def test_first_draw_is_the_plain_stratified_draw():
    from sentinel_landslide.engine.sampling import draw_sample, extend_sample

    flagged, scored = _strata()
    chosen, numbers = extend_sample(flagged, scored, np.zeros(len(flagged), int), 10, 15, seed=3)
    assert np.array_equal(chosen, draw_sample(flagged, scored, 10, 15, seed=3))
    assert list(numbers) == list(range(1, 26))


def test_a_second_draw_tops_up_in_the_recorded_strata():
    from sentinel_landslide.engine.sampling import extend_sample

    flagged, scored = _strata()
    sample = np.zeros(len(flagged), int)
    first, nums = extend_sample(flagged, scored, sample, 10, 15, seed=3)
    sample[first] = nums
    # the grid was re-scored: today's flags differ, the recorded strata are those of the first draw
    stratum = [int(f) if s else None for f, s in zip(flagged, scored)]
    today = ~flagged
    purposive = np.zeros(len(flagged), bool)
    purposive[np.flatnonzero(scored & flagged & (sample == 0))[:5]] = True
    added, nums2 = extend_sample(today, scored, sample, 14, 15, seed=3, stratum=stratum, exclude=purposive)
    assert not set(added) & set(first)  # never replaces, never draws a tile twice
    assert list(nums2) == list(range(26, 26 + len(added)))  # numbered on
    assert flagged[added].all() and len(added) == 4  # only stratum 1 was short (10 -> 14), by its recorded class
    assert not purposive[added].any() and scored[added].all()
    # already that large: nothing more
    sample[added] = nums2
    none, _ = extend_sample(today, scored, sample, 14, 15, seed=3, stratum=stratum)
    assert len(none) == 0


def test_batch_values_number_random_picks_on_and_record_strata_once():
    from sentinel_landslide.engine.review_rounds import batch_values

    flagged = np.array([1, 0, 0, 1, 0, 1], bool)
    scored = np.array([1, 1, 1, 1, 0, 1], bool)
    sample = np.array([3, 0, 0, 0, 0, 0])
    v = batch_values(flagged, scored, sample, None, [1, 0, 3, 5], ["random", "random", "informative", "random"])
    assert v["sample"] == {1: 4, 5: 5}  # tile 0 is already sample tile 3: kept
    assert v["pick"] == {1: "random", 3: "informative", 5: "random"}
    assert v["stratum"] == {0: 1, 1: 0, 2: 0, 3: 1, 5: 1}  # every scored tile at the first draw
    again = batch_values(~flagged, scored, sample, [1, 0, 0, 1, None, None], [2], ["informative"])
    assert again["stratum"] == {5: 0} and "sample" not in again  # only the tile that had none


def _grid(rows, cols, x0=0.0, y0=0.0, w=640.0, review=None):
    from sentinel_landslide.engine.verdicts import GridTiles

    rr, cc = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
    rr, cc = rr.ravel(), cc.ravel()
    top = y0 + rows * w
    b = np.stack([x0 + cc * w, top - (rr + 1) * w, x0 + (cc + 1) * w, top - rr * w], axis=1).astype(float)
    n = len(rr)
    return GridTiles(np.arange(n) + 1, np.arange(n), rr, cc, b, np.full(n, 0.3), np.zeros(n, bool),
                     ["ok"] * n, review or [None] * n, np.zeros(n, int), np.full(n, np.nan))


def test_review_state_follows_the_tile_position():
    from sentinel_landslide.engine.review_rounds import carry_values, match_tiles

    old = _grid(3, 4)
    same = _grid(3, 4)
    assert np.array_equal(match_tiles(old, same), np.arange(12))
    # a grid one column narrower on the left and one row taller on top: rows and cols renumbered
    new = _grid(4, 3, x0=640.0)
    idx = match_tiles(old, new)
    for j, i in enumerate(idx):
        if i >= 0:
            assert np.allclose(old.bounds[i], new.bounds[j])
    assert (idx >= 0).sum() == 9  # the 3 x 3 overlap
    state = {"review": [None] * 12, "pick": [None] * 12, "sample": [0] * 12, "stratum": [0] * 12}
    state["review"][0], state["pick"][0] = "confirmed", "manual"  # col 0: outside the new grid
    state["review"][5], state["pick"][5], state["sample"][5] = "rejected", "random", 7
    vals, lost = carry_values(old, new, state)
    j5 = int(np.flatnonzero(idx == 5)[0])
    assert vals["review"] == {int(new.fid[j5]): "rejected"} and vals["sample"] == {int(new.fid[j5]): 7}
    assert vals["pick"] == {int(new.fid[j5]): "random"} and len(vals["stratum"]) == 9
    assert lost == 1


def test_run_record_round_trip(tmp_path, synthetic_scene):
    from sentinel_landslide.engine.outputs import read_run_record, run_record_path, write_run_record

    from ..helpers import scene_options

    opts = scene_options(synthetic_scene, threads=2, min_valid_fraction=0.4)
    opts.extent = (1.0, 2.0, 3.0, 4.0, "")
    grid = tmp_path / "grid.gpkg"
    assert read_run_record(str(grid)) is None
    write_run_record(str(grid) + "|layername=landslide_grid", opts, tmp_path / "pkg")
    assert run_record_path(str(grid)) == str(grid) + ".detect.json"
    back, model = read_run_record(str(grid))
    assert model == str(tmp_path / "pkg")
    assert back.s2 == opts.s2 and back.s1 == opts.s1 and back.extent == opts.extent
    assert back.min_valid_fraction == 0.4 and back.threads is None  # how it ran is not recorded
    # an input gone: no record to trust
    opts.s2 = type(opts.s2)("S2", str(tmp_path / "gone.tif"), [1, 2, 3, 4])
    write_run_record(str(grid), opts, None)
    assert read_run_record(str(grid)) is None

