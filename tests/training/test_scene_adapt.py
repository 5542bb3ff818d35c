"""training/scene_adapt.py: the feature pre-pass, the refit toward the scene and the package
it writes, on the SYNTHETIC scene (engine.synthetic) with a SYNTHETIC training table that
resembles it (tests/helpers.scene_like_table), and with the real table where present."""
from __future__ import annotations

import json

import numpy as np
import pytest

from ..helpers import scene_like_table, scene_options, shared_file


@pytest.fixture(scope="module")
def like_table(synthetic_scene, package, tmp_path_factory):
    return scene_like_table(synthetic_scene, package, tmp_path_factory.mktemp("scene_table") / "table.csv.gz")


def test_prepass_is_bounded_evenly_spread_and_deterministic(synthetic_scene, package):
    from sentinel_landslide.training.scene_adapt import scene_features

    opts = scene_options(synthetic_scene)
    full, n_full = scene_features(opts, package)
    assert n_full == 70 and len(full["s2+desc+asc"]["ndvi_mean"]) == 70  # 10 x 7 tiles, all valid
    capped, n_read = scene_features(opts, package, cap=20)
    assert n_read <= 30  # whole rows of 10 tiles, evenly spread: 3 rows
    f = capped["s2+desc+asc"]
    assert len(f["ndvi_mean"]) <= 20
    again, _ = scene_features(opts, package, cap=20)
    assert all(np.array_equal(f[k], again["s2+desc+asc"][k], equal_nan=True) for k in f)
    # the capped tiles are tiles of the full pass (same features, a subset)
    assert set(np.round(f["band1_mean"], 3)) <= set(np.round(full["s2+desc+asc"]["band1_mean"], 3))


def test_refit_toward_a_similar_scene_writes_a_package_with_provenance(synthetic_scene, package, like_table,
                                                                      tmp_path):
    from sentinel_landslide.models.package import load_package
    from sentinel_landslide.training.scene_adapt import adapt_to_scene, scene_features

    scene, n_read = scene_features(scene_options(synthetic_scene), package)
    res = adapt_to_scene(package, scene, tmp_path / "a", like_table, threads=2, rounds_scale=0.1, n_scene_read=n_read)
    assert res.folder == tmp_path / "a"
    pkg = load_package(res.folder)  # checksums verified
    assert pkg.manifest["version"].endswith("+scene")
    rec = pkg.manifest["metrics"]["scene_adaptation"]
    c = rec["combinations"]["s2+desc+asc"]
    assert c["n_scene_tiles"] == 70 and c["seed"] == 42 and "p/(1-p)" in c["rule"]
    assert c["ess"] > 0 and 0 <= c["domain_auc"] <= 1 and c["ess_share"] > 0.1
    refitted = set(c["members"])
    assert refitted == {"lgbm_s2+desc+asc", "xgb_s2+desc+asc"}
    old = {m["name"]: m["sha256"] for m in package.manifest["members"]}
    for m in pkg.manifest["members"]:
        assert (m["sha256"] != old[m["name"]]) == (m["name"] in refitted), m["name"]  # networks kept
    assert pkg.manifest["modes"] == package.manifest["modes"]  # thresholds kept
    assert any("Scene weights: effective sample size" in line for line in res.log)
    # the same scene and inputs give the same package, byte for byte
    res2 = adapt_to_scene(package, scene, tmp_path / "b", like_table, threads=1, rounds_scale=0.1,
                          n_scene_read=n_read)
    m1 = json.loads((res.folder / "manifest.json").read_text())
    m2 = json.loads((res2.folder / "manifest.json").read_text())
    assert m1 == m2  # checksums of every member included (no timings in the manifest)


def test_without_the_training_table_nothing_is_refitted(synthetic_scene, package, tmp_path, monkeypatch):
    from sentinel_landslide.training import adapt
    from sentinel_landslide.training.scene_adapt import adapt_to_scene, scene_adapted, scene_features

    monkeypatch.setattr(adapt, "DEFAULT_BASE_FEATURES", tmp_path / "absent.csv.gz")
    monkeypatch.delenv(adapt.BASE_FEATURES_ENV, raising=False)
    scene, _ = scene_features(scene_options(synthetic_scene), package)
    res = adapt_to_scene(package, scene, tmp_path / "out")
    assert res.folder is None and not (tmp_path / "out").exists()
    assert any("training feature table" in line and "not found" in line for line in res.log)
    with scene_adapted(scene_options(synthetic_scene), package) as (pkg, lines):
        assert pkg is package
    assert any("unchanged" in line for line in lines)


def test_synthetic_scene_against_the_real_table_warns_and_keeps_the_base(synthetic_scene, package, tmp_path):
    """The synthetic scene is nothing like the competition's patches: the log says so, with
    the verdicts needed, and the base package scores it (nothing fake)."""
    real = shared_file("zindi/train_features_7147.csv.gz")
    from sentinel_landslide.training.scene_adapt import adapt_to_scene, scene_features

    scene, _ = scene_features(scene_options(synthetic_scene), package)
    res = adapt_to_scene(package, scene, tmp_path / "out", real)
    sw = res.weights["s2+desc+asc"]
    assert sw.too_small and sw.n_base == 7147
    assert res.folder is None and not (tmp_path / "out").exists()
    assert any(line.startswith("Warning") and "unlike the training data" in line and "non-landslide tiles" in line
               for line in res.log)
    assert "s2+desc+asc" in res.kept
