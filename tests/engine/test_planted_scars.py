"""The SYNTHETIC planted-scar generator of the detection-limit benchmark: each scar holds
exactly the share of its tile that was asked, and looks like the generator's landslide in
each modality, scaled by the contrast."""
from __future__ import annotations

import json

import numpy as np
import pytest
from osgeo import gdal

from sentinel_landslide.engine.synthetic import LOOK, TILE_PX, make_planted_scene, scar_pixels

SHARES = (0.0025, 0.005, 0.01, 0.02, 0.05, 0.10, 0.25)


@pytest.mark.parametrize("share", SHARES)
def test_scar_pixels_cover_the_share_asked(share):
    rng = np.random.default_rng(3)
    for _ in range(5):
        m = scar_pixels(share, rng)
        assert m.shape == (TILE_PX, TILE_PX)
        assert m.sum() == round(share * TILE_PX * TILE_PX)
        ys, xs = np.nonzero(m)
        # one compact elongated blob, not scattered pixels: its bounding box is small
        assert (ys.ptp() + 1) * (xs.ptp() + 1) <= max(9, 6 * m.sum())


def test_planted_scene_holds_what_was_asked(tmp_path):
    shares = (0.005, 0.05, 0.25)
    sc = make_planted_scene(tmp_path, shares, n_per_share=3, n_background=4, contrast=1.0, seed=2, cols=4)
    tiles = json.loads((tmp_path / "tiles.json").read_text())["tiles"]
    assert tiles == sc["tiles"] and len(tiles) == 13
    assert sorted(t[2] for t in tiles) == [0.0] * 4 + sorted(s for s in shares for _ in range(3))
    assert all(px == round(share * TILE_PX ** 2) for _r, _c, share, px in tiles)
    s2 = gdal.Open(sc["S2"]).ReadAsArray().astype(float)
    post = gdal.Open(sc["S1_DESC_POST"]).ReadAsArray()
    pre = gdal.Open(sc["S1_DESC_PRE"]).ReadAsArray()
    assert gdal.Open(sc["S2"]).GetMetadata()["SYNTHETIC"] == "yes"
    for r, c, share, _px in tiles:
        win = np.s_[r * TILE_PX:(r + 1) * TILE_PX, c * TILE_PX:(c + 1) * TILE_PX]
        red, nir = s2[0][win], s2[3][win]
        dvv = (post[0] - pre[0])[win]
        if share == 0:
            continue
        # the scar's pixels: red near the generator's soil, NDVI down, VV up by its change
        scar = red > LOOK["soil"][0] - 300  # above the vegetation and its bright specks (+700)
        assert abs(scar.sum() - share * TILE_PX ** 2) <= 0.1 * share * TILE_PX ** 2 + 2
        assert abs(np.median(red[scar]) - LOOK["soil"][0]) < 200
        ndvi = (nir - red) / (nir + red)  # bare soil: far less than vegetation
        assert np.median(ndvi[scar]) < 0.1 < 0.2 < np.median(ndvi[~scar])
        if share >= 0.05:  # enough pixels that speckle (about 3.5 dB per pixel of post - pre) averages out
            assert np.mean(dvv[scar]) - np.mean(dvv[~scar]) == pytest.approx(LOOK["change_desc"][0], abs=0.8)
    # empty cells of the tile grid are no data (S2 0, SAR NaN)
    used = {(r, c) for r, c, _s, _p in tiles}
    empty = [(r, c) for r in range(4) for c in range(4) if (r, c) not in used]
    assert len(empty) == 3
    for r, c in empty:
        win = np.s_[:, r * TILE_PX:(r + 1) * TILE_PX, c * TILE_PX:(c + 1) * TILE_PX]
        assert (s2[win] == 0).all() and np.isnan(post[win]).all()


def test_contrast_scales_the_scar(tmp_path):
    """A 25 % scar moves its tile's mean red by 0.25 x contrast x (soil - vegetation) and
    its mean descending VV change by 0.25 x contrast x the generator's change."""
    for contrast in (0.5, 1.0):
        sc = make_planted_scene(tmp_path / f"c{contrast}", (0.25,), 2, 2, contrast=contrast, seed=1)
        s2 = gdal.Open(sc["S2"]).ReadAsArray().astype(float)
        dvv = gdal.Open(sc["S1_DESC_POST"]).ReadAsArray()[0] - gdal.Open(sc["S1_DESC_PRE"]).ReadAsArray()[0]
        means: dict = {}
        for r, c, share, _px in sc["tiles"]:
            win = np.s_[r * TILE_PX:(r + 1) * TILE_PX, c * TILE_PX:(c + 1) * TILE_PX]
            means.setdefault(share, []).append((s2[0][win].mean(), dvv[win].mean()))
        (red1, d1), (red0, d0) = np.mean(means[0.25], axis=0), np.mean(means[0.0], axis=0)
        assert red1 - red0 == pytest.approx(0.25 * contrast * (LOOK["soil"][0] - LOOK["veg"][0]), rel=0.2)
        assert d1 - d0 == pytest.approx(0.25 * contrast * LOOK["change_desc"][0], abs=0.15)
