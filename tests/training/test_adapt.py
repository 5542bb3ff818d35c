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


def _random_and_purposive(g, truth, n_pos, n_neg, seed=0):
    """A stratified random sample (next_batch, random only) with exactly n_pos confirmed and
    n_neg rejected verdicts among its first tiles; returns {index: pick}."""
    from sentinel_landslide.engine.review_select import next_batch

    idx, picks = next_batch(g.prob, g.stratum, g.scored, np.zeros(len(g.fid), bool), None, int(g.scored.sum()),
                            threshold=0.5, random_share=1.0, seed=seed)
    pos = [i for i in idx if truth[i]][:n_pos]
    neg = [i for i in idx if not truth[i]][:n_neg]
    return {int(i): "random" for i in pos + neg}


def test_three_random_verdicts_per_class_adapt_and_purposive_only_says_so(small_grid, synthetic_scene, tmp_path):
    """3 confirmed + 3 rejected random verdicts are enough: the threshold is re-chosen by the
    rule (shrunk toward the estimated share: lambda 3/11) and the share estimate is recorded;
    the same verdicts marked purposive still adapt, with the rule saying there was no random
    sample."""
    from sentinel_landslide.engine.verdicts import PICK_FIELD, STRATUM_FIELD, read_grid, simulate_verdicts
    from sentinel_landslide.models.package import load_package
    from sentinel_landslide.training.adapt import adapt
    from sentinel_landslide.training.adapt_rule import SHRINK_K

    src, truth = small_grid
    g = read_grid(src)
    chosen = _random_and_purposive(g, truth, 3, 3)
    v = simulate_verdicts(truth, list(chosen))
    review = {int(g.fid[i]): v[i] for i in chosen}
    stratum = {int(g.fid[i]): int(g.flagged[i]) for i in np.flatnonzero(g.scored)}
    opts = scene_options(synthetic_scene)
    grid = _with_verdicts(src, tmp_path / "rand.gpkg", review)
    from sentinel_landslide.engine.verdicts import write_fields
    write_fields(grid, {PICK_FIELD: {int(g.fid[i]): p for i, p in chosen.items()}, STRATUM_FIELD: stratum})
    res = adapt(str(grid), opts, None, str(tmp_path / "pkg"), rounds_scale=0.05)
    ch = res.record["threshold_choice"]
    # every candidate is on record; the rule's candidates shrink with lambda 3/11 (the base package,
    # also a candidate, keeps its own threshold and wins where no change is measurably better)
    cands = {c["name"]: c for c in res.record["candidates"]}
    assert ch["random_sample"] and cands["threshold only"]["lam"] == pytest.approx(3 / (3 + SHRINK_K), abs=1e-4)
    assert "base package" in cands and res.record["chosen"] in cands
    assert res.share is not None and res.share.n_random == 6 and np.isfinite(res.share.share)
    assert res.share.lo <= res.share.share <= res.share.hi
    man = load_package(tmp_path / "pkg").manifest
    rec = man["metrics"]["adaptation"]["history"][-1]
    assert rec["verdicts"]["random"] == 6 and rec["verdicts"]["purposive"] == 0
    assert rec["share_estimate"]["n_random"] == 6 and "Agresti" in rec["share_estimate"]["interval"]
    assert "design-weighted F1" in rec["threshold_rule"]
    assert man["modes"]["s2+desc+asc"]["threshold"] == res.threshold
    assert any(line.startswith("Landslide share of the region:") for line in res.log)

    purposive = _with_verdicts(src, tmp_path / "purp.gpkg", review)  # no pick: purposive
    res2 = adapt(str(purposive), opts, None, str(tmp_path / "pkg2"), rounds_scale=0.05)
    ch2 = res2.record["threshold_choice"]
    assert not ch2["random_sample"] and "no random verdict" in ch2["note"]
    assert res2.share is not None and not np.isfinite(res2.share.share) and res2.share.n_purposive == 6
    assert any("no random verdict" in line for line in res2.log), res2.log
    assert 0 < res2.threshold < 1


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
    # the panel's batches: half of the verdicts random, and the share estimate's interval holds the truth
    sh = fig["share"]
    assert sh["n_random"] == 20 and sh["n_purposive"] == 20
    assert sh["share_lo"] <= sh["true"] <= sh["share_hi"], sh
    # the adapted map flags a plausible number of the tiles nobody reviewed (half to twice the truth)
    assert 0.5 * fig["landslides_not_reviewed"] <= fig["flagged_not_reviewed"]["adapted"] \
        <= 2 * fig["landslides_not_reviewed"], fig
    pkg = load_package(tmp_path / "demo" / "adapted_package")  # checksums verified
    rec = pkg.manifest["metrics"]["adaptation"]
    assert rec["round"] == 1 and rec["history"][0]["verdicts"]["confirmed"] == fig["verdicts"]["confirmed"]
    assert rec["history"][0]["base_rows"] == 7147 and rec["history"][0]["local_cv"]["cv_auc"] > 0.5
    assert json.loads((tmp_path / "demo" / "adapted_package" / "manifest.json").read_text())["version"].endswith("+adapt1")
    assert np.isfinite(pkg.threshold("s2+desc+asc"))


@pytest.fixture(scope="module")
def cloudy_grid(package, tmp_path_factory):
    """A SYNTHETIC scene half under cloud (engine.synthetic cloud=0.5, with its SCL): detect scores
    the clear tiles with s2+desc+asc and the clouded ones with desc+asc."""
    from sentinel_landslide.engine.align import InputLayer
    from sentinel_landslide.engine.outputs import write_grid
    from sentinel_landslide.engine.synthetic import make_scene
    from sentinel_landslide.engine.verdicts import read_grid, tile_truth
    from sentinel_landslide.pipeline import run_detection

    d = tmp_path_factory.mktemp("adapt_cloudy")
    scene = make_scene(d / "scene", width=896, height=640, seed=11, cloud=0.5)
    opts = scene_options(scene, threads=2)
    opts.s2_mask = InputLayer("S2_MASK", scene["S2_MASK"], [1])
    res = run_detection(opts, package)
    write_grid(str(d / "grid.gpkg"), res, package.name)
    ds = ogr.Open(str(d / "grid.gpkg"))
    modes = np.array([f.GetField("mode") for f in ds.GetLayer(0)])
    ds = None
    g = read_grid(d / "grid.gpkg")
    return scene, opts, d / "grid.gpkg", g, tile_truth(g.bounds, scene["truth"]), modes


def _pick(g, truth, modes, mode, n_pos, n_neg):
    idx = np.flatnonzero(g.scored & (modes == mode))
    pos, neg = [i for i in idx if truth[i]][:n_pos], [i for i in idx if not truth[i]][:n_neg]
    assert len(pos) == n_pos and len(neg) == n_neg, (mode, len(pos), len(neg))
    return pos + neg


@pytest.mark.slow
def test_adapt_refits_every_combination_with_enough_verdicts(cloudy_grid, package, tmp_path):
    """Verdicts on clear (s2+desc+asc) and clouded (desc+asc) tiles of a SYNTHETIC cloudy scene:
    both combinations' GBM pairs are refitted on their own tiles' features, the rest of the
    package is untouched, the manifest records each; with fewer than 5 of a class on the
    clouded tiles desc+asc keeps its base members and the log says so."""
    import csv

    from sentinel_landslide.core.channels import COMBINATION_BY_NAME
    from sentinel_landslide.engine.verdicts import simulate_verdicts
    from sentinel_landslide.models.package import load_package, sha256_file
    from sentinel_landslide.training.adapt import MIN_COMBO_PER_CLASS, adapt

    scene, opts, src, g, truth, modes = cloudy_grid
    assert MIN_COMBO_PER_CLASS == 5
    chosen = _pick(g, truth, modes, "s2+desc+asc", 6, 10) + _pick(g, truth, modes, "desc+asc", 6, 8)
    v = simulate_verdicts(truth, chosen)
    grid = _with_verdicts(src, tmp_path / "both.gpkg", {int(g.fid[i]): v[i] for i in chosen})
    res = adapt(str(grid), opts, str(package.folder), str(tmp_path / "pkg"), rounds_scale=0.1)
    combos = res.combinations
    assert combos["s2+desc+asc"]["adapted"] and combos["desc+asc"]["adapted"], res.log
    assert combos["s2+desc+asc"]["verdicts"]["confirmed"] == 6 and combos["s2+desc+asc"]["verdicts"]["rejected"] == 10
    assert combos["desc+asc"]["verdicts"]["confirmed"] == 6 and combos["desc+asc"]["verdicts"]["rejected"] == 8
    assert (res.n_confirmed, res.n_rejected) == (12, 18) and not any("not used" in line for line in res.log)
    new = load_package(tmp_path / "pkg")  # checksums verified
    hist = new.manifest["metrics"]["adaptation"]["history"][-1]
    assert set(hist["combinations"]) == {"s2+desc+asc", "desc+asc"}
    # each combination's winner (adapt_rule.CANDIDATE_RULE) is a refit of its own GBM pair or its base
    # members with a new threshold: the files changed are exactly the members the record names
    refitted = set()
    for mode in ("s2+desc+asc", "desc+asc"):
        rec = hist["combinations"][mode]
        assert rec["members_refitted"] == ([] if rec["chosen"] in ("threshold only", "base package")
                                           else [f"lgbm_{mode}", f"xgb_{mode}"]), rec
        assert {c["name"] for c in rec["candidates"]} >= {"base package", "threshold only", "refit 0.1", "refit 0.3",
                                                          "refit 0.5"}
        refitted |= set(rec["members_refitted"])
        assert new.threshold(mode) == rec["threshold"] and 0 < rec["threshold"] < 1
    for m in package.manifest["members"]:
        same = sha256_file(package.path(m)) == sha256_file(new.folder / m["file"])
        assert same == (m["name"] not in refitted), m["name"]
    assert "5 of each" in hist["combination_rule"]
    # the clouded tiles' examples carry features over desc+asc's channels only
    with open(tmp_path / "pkg" / "local_examples.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    sar = [r for r in rows if r["mode"] == "desc+asc"]
    assert len(sar) == 14 and len([r for r in rows if r["mode"] == "s2+desc+asc"]) == 16
    spec = next(s for s in package.members_for("desc+asc") if s["name"] == "lgbm_desc+asc")
    assert all(r[f] != "" for r in sar for f in spec["inputs"]["features"])
    s2_only = [f for f in rows[0] if f.startswith(("B", "ndvi", "NDVI")) and f not in spec["inputs"]["features"]]
    assert s2_only and all(r[f] == "" for r in sar for f in s2_only)
    assert set(COMBINATION_BY_NAME["desc+asc"].channels).isdisjoint({"B2", "B3", "B4", "B8"})

    few = _pick(g, truth, modes, "s2+desc+asc", 6, 10) + _pick(g, truth, modes, "desc+asc", 3, 8)
    v = simulate_verdicts(truth, few)
    grid = _with_verdicts(src, tmp_path / "few.gpkg", {int(g.fid[i]): v[i] for i in few})
    res = adapt(str(grid), opts, str(package.folder), str(tmp_path / "pkg2"), rounds_scale=0.1)
    assert not res.combinations["desc+asc"]["adapted"] and res.combinations["s2+desc+asc"]["adapted"]
    assert any(line.startswith("Combination desc+asc: base members kept") for line in res.log), res.log
    new = load_package(tmp_path / "pkg2")
    for name in ("lgbm_desc+asc", "xgb_desc+asc"):
        m = next(x for x in package.manifest["members"] if x["name"] == name)
        assert sha256_file(package.path(m)) == sha256_file(new.folder / m["file"])
    assert new.threshold("desc+asc") == package.threshold("desc+asc")
    with open(tmp_path / "pkg2" / "local_examples.csv", newline="", encoding="utf-8") as fh:
        assert sum(r["mode"] == "desc+asc" for r in csv.DictReader(fh)) == 11  # saved for a later round
