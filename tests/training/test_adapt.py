"""training/adapt.py: a model adapted from verdicts on a SYNTHETIC region unlike the
training data ranks and flags the tiles nobody reviewed markedly better than the base
package; bad inputs fail with clear messages and write nothing."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from osgeo import ogr

from ..helpers import scene_options, shared_file


@pytest.fixture(scope="module")
def small_grid(synthetic_scene, package, tmp_path_factory):
    """A detect grid of the small SYNTHETIC scene (70 tiles) and its per-tile truth."""
    from sentinel_landslide.engine.outputs import write_grid
    from sentinel_landslide.engine.verdicts import read_grid, tile_truth
    from sentinel_landslide.pipeline import run_detection

    path = tmp_path_factory.mktemp("adapt_grid") / "grid.gpkg"
    res = run_detection(scene_options(synthetic_scene, threads=2), package)
    write_grid(str(path), res, package.name)
    g = read_grid(path)
    return path, tile_truth(g.bounds, synthetic_scene["truth"])


def _with_verdicts(src, dst, verdicts: dict):
    from sentinel_landslide.engine.verdicts import write_fields

    shutil.copy(src, dst)
    if verdicts:
        write_fields(dst, {"review": verdicts})
    return dst


def test_grid_without_verdicts_one_class_or_another_scene_fail_clearly(small_grid, synthetic_scene, tmp_path):
    from sentinel_landslide.core.errors import InputError
    from sentinel_landslide.engine.verdicts import read_grid
    from sentinel_landslide.training.adapt import adapt

    src, truth = small_grid
    g = read_grid(src)
    out = tmp_path / "pkg"
    opts = scene_options(synthetic_scene)
    with pytest.raises(InputError, match="no verdicts"):
        adapt(str(_with_verdicts(src, tmp_path / "none.gpkg", {})), opts, None, str(out))
    one = {int(g.fid[i]): "rejected" for i in range(5)} | {int(g.fid[5]): "unsure"}
    with pytest.raises(InputError, match="one class only"):
        adapt(str(_with_verdicts(src, tmp_path / "one.gpkg", one)), opts, None, str(out))
    # the same grid moved 50 km east: another scene's tiles, not covered by these layers
    both = {int(g.fid[i]): ("confirmed" if i % 2 else "rejected") for i in range(6)}
    moved = _with_verdicts(src, tmp_path / "moved.gpkg", both)
    ds = ogr.Open(str(moved), 1)
    lyr = ds.GetLayer(0)
    for f in lyr:
        geom = f.GetGeometryRef()
        ring = geom.GetGeometryRef(0)
        for k in range(ring.GetPointCount()):
            x, y = ring.GetX(k), ring.GetY(k)
            ring.SetPoint_2D(k, x + 50_000, y)
        f.SetGeometry(geom)
        lyr.SetFeature(f)
    ds = None
    with pytest.raises(InputError, match="another scene"):
        adapt(str(moved), opts, None, str(out))
    assert not out.exists()
    assert not list(tmp_path.glob(".adapt-*"))  # no half-written package left behind


@pytest.mark.slow
def test_adapted_package_beats_the_base_on_tiles_not_reviewed(tmp_path):
    """SYNTHETIC other region (engine.synthetic.OTHER_REGION), 40 verdicts on the most uncertain
    tiles: AUC and F1 on the unreviewed tiles rise markedly; the package is a valid package with
    its provenance, and a second round keeps the first round's examples."""
    shared_file("zindi/train_features_7147.csv.gz")
    from sentinel_landslide.models.package import load_package
    from sentinel_landslide.scripts.adapt_demo import run

    fig = run(tmp_path / "demo", n_verdicts=40, size=1024, seed=21, log=lambda *_: None)
    base, new = fig["base"], fig["adapted"]
    assert new["auc"] >= base["auc"] + 0.1, fig
    assert new["f1"] >= base["f1"] + 0.3 and new["f1"] >= 0.5, fig
    pkg = load_package(tmp_path / "demo" / "adapted_package")  # checksums verified
    rec = pkg.manifest["metrics"]["adaptation"]
    assert rec["round"] == 1 and rec["history"][0]["verdicts"]["confirmed"] == fig["verdicts"]["confirmed"]
    assert rec["history"][0]["base_rows"] == 7147 and rec["history"][0]["local_cv"]["cv_auc"] > 0.5
    assert json.loads((tmp_path / "demo" / "adapted_package" / "manifest.json").read_text())["version"].endswith("+adapt1")
    assert np.isfinite(pkg.threshold("s2+desc+asc"))
