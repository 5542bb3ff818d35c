"""landslide:adapt through Processing on the SYNTHETIC scene: bad input gives an analyst's
message and writes nothing; an adapted package runs in detect; a second round keeps the first
round's examples."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from qgis.core import QgsProcessingException

from ..helpers import S1_ROLES, scene_params


@pytest.fixture(scope="module")
def grid_and_truth(provider, synthetic_scene, tmp_path_factory):
    import processing

    from sentinel_landslide.engine.verdicts import read_grid, tile_truth

    out = tmp_path_factory.mktemp("adapt_alg") / "grid.gpkg"
    res = processing.run("landslide:detect", scene_params(synthetic_scene, out))
    path = Path(res["OUTPUT"].split("|")[0])
    g = read_grid(path)
    return path, g, tile_truth(g.bounds, synthetic_scene["truth"])


def _params(scene, grid, out, **extra):
    p = {"GRID": str(grid), "S2": scene["S2"], "OUTPUT": str(out)}
    p.update({r: scene[r] for r in S1_ROLES})
    p.update(extra)
    return p


def test_grid_without_verdicts_is_refused_and_nothing_written(provider, synthetic_scene, grid_and_truth, tmp_path):
    import processing

    grid, _, _ = grid_and_truth
    out = tmp_path / "pkg"
    with pytest.raises(QgsProcessingException, match="no verdicts"):
        processing.run("landslide:adapt", _params(synthetic_scene, grid, out))
    assert not out.exists() or not any(out.iterdir())


@pytest.mark.slow
def test_adapt_then_detect_then_a_second_round(provider, synthetic_scene, grid_and_truth, tmp_path):
    import processing

    from sentinel_landslide.engine.verdicts import (
        PICK_FIELD,
        PICK_RANDOM,
        STRATUM_FIELD,
        simulate_verdicts,
        write_fields,
    )

    src, g, truth = grid_and_truth
    scored = np.flatnonzero(g.scored)
    pos, neg = [i for i in scored if truth[i]], [i for i in scored if not truth[i]]
    assert len(pos) >= 4 and len(neg) >= 20
    first = pos[: len(pos) // 2] + neg[:10]
    grid1 = tmp_path / "round1.gpkg"
    shutil.copy(src, grid1)
    v = simulate_verdicts(truth, first)
    write_fields(grid1, {"review": {int(g.fid[i]): v[i] for i in first}})
    res = processing.run("landslide:adapt", _params(synthetic_scene, grid1, tmp_path / "pkg1"))
    assert res["MODE"] == "s2+desc+asc" and (res["CONFIRMED"], res["REJECTED"]) == (len(pos) // 2, 10)
    # no pick field: every verdict is purposive; it still adapts and says it had no random sample
    assert (res["RANDOM_VERDICTS"], res["PURPOSIVE_VERDICTS"]) == (0, len(first))
    assert res["LANDSLIDE_SHARE"] is None and "no random verdict" in res["THRESHOLD_CHOICE"]
    assert 0 < res["FLAGGED_SHARE"] <= 1
    man = json.loads((tmp_path / "pkg1" / "manifest.json").read_text())
    hist = man["metrics"]["adaptation"]["history"][-1]
    assert hist["grid"] == str(grid1.resolve()) and hist["verdicts"]["rejected"] == 10

    det = processing.run("landslide:detect", scene_params(synthetic_scene, tmp_path / "g2.gpkg",
                                                          MODEL=str(tmp_path / "pkg1")))
    assert det["THRESHOLD"] == pytest.approx(man["modes"]["s2+desc+asc"]["threshold"])

    second = pos[len(pos) // 2:] + neg[10:20]
    grid2 = tmp_path / "round2.gpkg"
    shutil.copy(src, grid2)
    v = simulate_verdicts(truth, second)
    # marked as a stratified random sample of the map classes (pick / stratum fields)
    write_fields(grid2, {"review": {int(g.fid[i]): v[i] for i in second},
                         PICK_FIELD: {int(g.fid[i]): PICK_RANDOM for i in second},
                         STRATUM_FIELD: {int(g.fid[i]): int(g.flagged[i]) for i in scored}})
    res2 = processing.run("landslide:adapt", _params(synthetic_scene, grid2, tmp_path / "pkg2",
                                                     MODEL=str(tmp_path / "pkg1")))
    assert (res2["CONFIRMED"], res2["REJECTED"]) == (len(pos), 20)  # both rounds' examples
    # the second round's verdicts come from a stratified random draw: the region's share is estimated
    assert res2["RANDOM_VERDICTS"] == len(second) and res2["PURPOSIVE_VERDICTS"] == 0
    assert res2["LANDSLIDE_SHARE_LO"] <= res2["LANDSLIDE_SHARE"] <= res2["LANDSLIDE_SHARE_HI"]
    assert res2["LANDSLIDE_TILES"] == pytest.approx(res2["LANDSLIDE_SHARE"] * int(g.scored.sum()), rel=1e-3)
    ad = json.loads((tmp_path / "pkg2" / "manifest.json").read_text())["metrics"]["adaptation"]
    assert ad["round"] == 2 and len(ad["history"]) == 2 and ad["history"][1]["verdicts"]["from_earlier_rounds"] == len(first)
