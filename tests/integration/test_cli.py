"""The QGIS-free command line gives the same grid as the engine."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow  # fresh Python processes


def _run(args):
    env = dict(os.environ, PYTHONPATH=str(ROOT / ".build" / "plugins"))
    return subprocess.run([sys.executable, "-m", "sentinel_landslide.cli"] + args, capture_output=True,
                          text=True, env=env, timeout=600)


def test_cli_detect_and_export(tmp_path, synthetic_scene, package_dir):
    from osgeo import ogr

    args = ["--s2", synthetic_scene["S2"], "--model", str(package_dir)]
    for flag in ("desc-post", "desc-pre", "asc-post", "asc-pre"):
        args += [f"--s1-{flag}", synthetic_scene["S1_" + flag.upper().replace("-", "_")]]
    p = _run(["detect"] + args + ["--out", str(tmp_path / "g.fgb"), "--raster", str(tmp_path / "p.tif")])
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout.strip().splitlines()[-1])
    assert out["mode"] == "s2+desc+asc" and out["tiles"] == 70
    assert sum(out["tiles_per_mode"].values()) == 70
    ds = ogr.Open(str(tmp_path / "g.fgb"))
    assert ds.GetLayer(0).GetFeatureCount() == 70
    p = _run(["export"] + args + ["--out", str(tmp_path / "patches"), "--inventory", synthetic_scene["truth"]])
    assert p.returncode == 0, p.stderr
    n = json.loads(p.stdout.strip().splitlines()[-1])["patches"]
    assert n == len(list((tmp_path / "patches").glob("*.npy"))) > 0
    rows = (tmp_path / "patches" / "Train.csv").read_text().splitlines()
    assert rows[0] == "ID,label,mode" and len(rows) - 1 == n  # the inventory gave labels; mode: each patch's combination
    assert (tmp_path / "patches" / "Train.csv").exists()


def test_cli_reports_errors_plainly(tmp_path, package_dir):
    p = _run(["detect", "--model", str(package_dir), "--out", str(tmp_path / "x.gpkg")])
    assert p.returncode == 2 and "No input was given" in p.stderr
    assert not (tmp_path / "x.gpkg").exists()


def _scene_args(scene, package_dir):
    args = ["--s2", scene["S2"], "--model", str(package_dir)]
    for flag in ("desc-post", "desc-pre", "asc-post", "asc-pre"):
        args += [f"--s1-{flag}", scene["S1_" + flag.upper().replace("-", "_")]]
    return args


def test_cli_analyst_loop_sample_accuracy_adapt(tmp_path, synthetic_scene, package_dir):
    """On the SYNTHETIC scene without QGIS: detect, draw a stratified sample, review it with the
    known truth, estimate accuracy (Olofsson counts checked by hand), adapt from the verdicts."""
    from sentinel_landslide.engine.accuracy import stratified_accuracy
    from sentinel_landslide.engine.verdicts import read_grid, simulate_verdicts, tile_truth, write_fields
    from sentinel_landslide.models.package import load_package

    args = _scene_args(synthetic_scene, package_dir)
    grid = tmp_path / "g.gpkg"
    p = _run(["detect"] + args + ["--out", str(grid)])
    assert p.returncode == 0, p.stderr

    # accuracy before a sample exists: a plain error, exit 2
    p = _run(["accuracy", "--grid", str(grid)])
    assert p.returncode == 2 and "no sample tiles" in p.stderr

    sampled = tmp_path / "s.gpkg"
    p = _run(["sample", "--grid", str(grid), "--out", str(sampled), "--n-flagged", "6", "--n-unflagged", "20",
              "--seed", "3"])
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout.strip().splitlines()[-1])
    g = read_grid(sampled)
    inside = g.sample > 0
    assert out["sampled"] == int(inside.sum()) == out["sampled_flagged"] + out["sampled_unflagged"]
    assert out["sampled_flagged"] == min(6, int((g.scored & g.flagged).sum()))
    assert out["sampled_unflagged"] == 20 and not (inside & ~g.scored).any()
    assert read_grid(grid).sample.sum() == 0  # the source grid is untouched
    again = tmp_path / "s2.gpkg"
    assert _run(["sample", "--grid", str(grid), "--out", str(again), "--n-flagged", "6", "--n-unflagged", "20",
                 "--seed", "3"]).returncode == 0
    assert (read_grid(again).sample == g.sample).all()  # seeded
    # rounds add up: sampling the sampled grid again (in place) with 4 more unflagged tiles keeps the
    # first sample and its numbers, adds only the 4, numbered on, with pick = random
    p = _run(["sample", "--grid", str(again), "--n-flagged", "6", "--n-unflagged", "24", "--seed", "4"])
    assert p.returncode == 0 and json.loads(p.stdout.strip().splitlines()[-1])["added"] == 4, p.stderr
    h = read_grid(again)
    added = (h.sample > 0) & ~inside
    assert (h.sample[inside] == g.sample[inside]).all() and added.sum() == 4 and not (added & g.flagged).any()
    assert sorted(h.sample[added]) == list(range(int(g.sample.max()) + 1, int(g.sample.max()) + 5))
    assert all(h.pick[i] == "random" for i in np.flatnonzero(h.sample > 0))

    truth = tile_truth(g.bounds, synthetic_scene["truth"])
    chosen = np.flatnonzero(inside)
    v = simulate_verdicts(truth, chosen)
    write_fields(sampled, {"review": {int(g.fid[i]): v[i] for i in chosen}})
    html = tmp_path / "acc.html"
    p = _run(["accuracy", "--grid", str(sampled), "--html", str(html)])
    assert p.returncode == 0, p.stderr
    acc = json.loads(p.stdout.strip().splitlines()[-1])
    s1, s0 = g.scored & g.flagged, g.scored & ~g.flagged
    n11, n1 = int((inside & s1 & truth).sum()), int((inside & s1).sum())
    n01, n0 = int((inside & s0 & truth).sum()), int((inside & s0).sum())
    assert (acc["n_flagged"], acc["n_unflagged"], acc["confirmed_in_flagged"], acc["confirmed_in_unflagged"]) == (
        n1, n0, n11, n01)
    W1 = s1.sum() / (s1.sum() + s0.sum())
    assert acc["overall"] == pytest.approx(W1 * n11 / n1 + (1 - W1) * (1 - n01 / n0))  # Olofsson eq. 1
    ref = stratified_accuracy(int(s1.sum()), int(s0.sum()), n11, n1, n01, n0, tile_area=0.64 * 0.64)
    assert acc["area"] == pytest.approx(ref.area.value, rel=1e-6) and acc["f1_lo"] == pytest.approx(ref.f1.ci[0])
    assert "accuracy (recall)</td>" in html.read_text()

    # adapt from the sample's verdicts plus a few more confirmed tiles
    pos = [i for i in np.flatnonzero(g.scored & truth) if i not in set(chosen)][:4]
    write_fields(sampled, {"review": {int(g.fid[i]): "confirmed" for i in pos}})
    y = np.array([truth[i] for i in list(chosen) + pos])
    pkg_dir = tmp_path / "adapted"
    p = _run(["adapt", "--grid", str(sampled)] + args + ["--out", str(pkg_dir)])
    assert p.returncode == 0, p.stderr
    res = json.loads(p.stdout.strip().splitlines()[-1])
    assert (res["confirmed"], res["rejected"]) == (int(y.sum()), int((~y).sum()))
    assert res["mode"] == "s2+desc+asc" and res["package"] == str(pkg_dir)
    rec = load_package(pkg_dir).manifest["metrics"]["adaptation"]["history"][-1]  # checksums verified
    assert rec["grid"] == str(sampled.resolve()) and rec["verdicts"]["confirmed"] == int(y.sum())
    # the adapted package runs in detect
    p = _run(["detect"] + _scene_args(synthetic_scene, pkg_dir) + ["--out", str(tmp_path / "g2.gpkg")])
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout.strip().splitlines()[-1])["threshold"] == pytest.approx(res["threshold"])


def test_cli_adapt_without_verdicts_writes_nothing(tmp_path, synthetic_scene, package_dir):
    grid = tmp_path / "g.gpkg"
    args = _scene_args(synthetic_scene, package_dir)
    assert _run(["detect"] + args + ["--out", str(grid)]).returncode == 0
    p = _run(["adapt", "--grid", str(grid)] + args + ["--out", str(tmp_path / "pkg")])
    assert p.returncode == 2 and "no verdicts" in p.stderr
    assert not (tmp_path / "pkg").exists() and not list(tmp_path.glob(".adapt-*"))


def test_cli_detect_full_ensemble_and_provider_flags(tmp_path, synthetic_scene, package_dir):
    """--full-ensemble scores every tile 'full' with the cascade's flags; --execution-provider
    names where the networks ran, and one this build lacks falls back to the CPU with a warning."""
    from osgeo import ogr

    def grid(path):
        ds = ogr.Open(str(path))  # held: the layer dies with its dataset
        lyr = ds.GetLayer(0)
        return {f.GetField("tile_id"): (f.GetField("flagged"), f.GetField("scored_by")) for f in lyr
                if f.GetField("status") == "ok"}

    args = _scene_args(synthetic_scene, package_dir)
    p = _run(["detect"] + args + ["--out", str(tmp_path / "c.gpkg"), "--cascade-margin", "0.02",
                                  "--execution-provider", "cuda"])
    assert p.returncode == 0, p.stderr
    assert "Cascade: the networks ran on" in p.stderr
    import onnxruntime

    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        assert "Warning: execution provider 'cuda' is not offered" in p.stderr
        assert "networks run on CPUExecutionProvider" in p.stderr
    p = _run(["detect"] + args + ["--out", str(tmp_path / "f.gpkg"), "--full-ensemble", "--execution-provider", "cpu"])
    assert p.returncode == 0, p.stderr
    cas, full = grid(tmp_path / "c.gpkg"), grid(tmp_path / "f.gpkg")
    assert {k: v[0] for k, v in cas.items()} == {k: v[0] for k, v in full.items()}
    assert {v[1] for v in full.values()} == {"full"} and "gbm" in {v[1] for v in cas.values()}
