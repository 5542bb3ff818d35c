"""Uncertainty per tile (engine/uncertainty.py): the formula, and on SYNTHETIC scenes
that it means something (the most uncertain tiles are the ones the ensemble gets wrong)."""
from __future__ import annotations

import numpy as np
import pytest

from ..helpers import scene_options


def test_formula_by_hand():
    from sentinel_landslide.engine.uncertainty import uncertainty

    # p on the threshold, members agree: margin 1, spread 0 -> 0.7
    assert uncertainty([0.4], 0.4, [[0.4], [0.4]], [1, 1])[0] == pytest.approx(0.7)
    # p = 1 with t = 0.4: |1 - 0.4| / max(0.4, 0.6) = 1 -> margin 0; members 1, 1 -> 0
    assert uncertainty([1.0], 0.4, [[1.0], [1.0]])[0] == pytest.approx(0.0)
    # members 0 and 1, equal weights: sigma 0.5 -> spread 1; p 0.5, t 0.5: margin 1 -> 1.0
    assert uncertainty([0.5], 0.5, [[0.0], [1.0]], [1, 1])[0] == pytest.approx(1.0)
    # weights 3:1 on members 0.2 and 0.6: mean 0.3, var = .75*.01 + .25*.09 = .03, sigma .1732
    # t = 0.5, p = 0.3: margin 1 - 0.2 / 0.5 = 0.6 -> 0.7 * 0.6 + 0.3 * 0.3464 = 0.5239
    assert uncertainty([0.3], 0.5, [[0.2], [0.6]], [3, 1])[0] == pytest.approx(0.42 + 0.3 * 2 * np.sqrt(0.03))
    # no members: margin only
    # p 0.2, t 0.5: 1 - 0.3 / 0.5 = 0.4; p 0.9: 1 - 0.4 / 0.5 = 0.2
    assert uncertainty([0.2, 0.9], 0.5) == pytest.approx([0.7 * 0.4, 0.7 * 0.2])


@pytest.mark.slow
def test_top_uncertainty_decile_is_misclassified_far_more_often_than_the_bottom_half(tmp_path, package):
    """SYNTHETIC: three scenes (1200 tiles), truth from the planted scars."""
    from sentinel_landslide.engine.synthetic import make_scene
    from sentinel_landslide.engine.verdicts import tile_truth
    from sentinel_landslide.pipeline import run_detection

    unc, wrong = [], []
    for seed in (3, 5, 9):
        sc = make_scene(tmp_path / f"s{seed}", width=1280, height=1280, seed=seed)
        res = run_detection(scene_options(sc, threads=2), package)
        recs = [r for r in res.records if r.status == "ok"]
        truth = tile_truth([r.bounds for r in recs], sc["truth"])
        unc += [r.uncertainty for r in recs]
        wrong += [bool(r.flagged) != bool(t) for r, t in zip(recs, truth)]
        assert all(0.0 <= r.uncertainty <= 1.0 for r in recs)
    unc, wrong = np.array(unc), np.array(wrong)
    order = np.argsort(-unc, kind="stable")
    top = wrong[order[: len(order) // 10]].mean()
    bottom = wrong[order[len(order) // 2:]].mean()
    assert wrong.sum() >= 20  # enough errors to compare
    print(f"misclassified: top decile {top:.3f}, bottom half {bottom:.3f}, {len(unc)} tiles")
    assert top >= 0.3 and top >= 5 * bottom + 0.05, (top, bottom)
