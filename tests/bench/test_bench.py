"""The benchmark harness (bench/) on a tiny SYNTHETIC scene: its figures are consistent
with each other and with the scene (counts, sums, the results table).  Nothing here is
timed or asserts a speed: timing targets live in bench/results.md."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest


@pytest.fixture(scope="module")
def tiny_scene(tmp_path_factory):
    from sentinel_landslide.bench.common import ensure_scene

    cache = tmp_path_factory.mktemp("bench_cache")
    paths = ensure_scene(256, cache=cache)
    again = ensure_scene(256, cache=cache)  # cached: not regenerated
    assert paths == again
    return paths


def test_scene_sizes_and_matmul():
    from fractions import Fraction

    from sentinel_landslide.bench.common import median_min_max, side_for
    from sentinel_landslide.bench.run import matmul_gflops

    assert side_for(Fraction(1)) == 10980 and side_for(Fraction(1, 16)) == 2745 and side_for(Fraction(1, 4)) == 5490
    mm = matmul_gflops(n=256, repeats=2)
    assert mm["best"] == max(mm.get("torch", 0.0), mm["numpy"])  # the faster backend is the reference
    if "torch" in mm:
        assert mm["torch"] >= mm["torch_median"]  # best of the repeats, not their median
    assert median_min_max([3, 1, 2]) == {"median": 2.0, "min": 1.0, "max": 3.0, "n": 3}


@pytest.mark.slow
def test_detect_child_and_results_table(tiny_scene, package_dir, tmp_path, monkeypatch):
    import sentinel_landslide.bench.run as br

    monkeypatch.setattr(br, "CACHE", tmp_path)
    r = br.run_child("detect", tiny_scene, package_dir)
    assert r["tiles"] == 16 and r["scored"] == 16 and r["mode"] == "s2+desc+asc"
    assert r["grid"] == [256, 256] and r["flagged"] <= r["scored"]
    # the wall time holds detection and writing; the member split adds up to the members' seconds
    assert r["wall_seconds"] >= r["detect_seconds"] + r["write_seconds"] - 1e-6
    assert set(r["member_seconds"]) == set(r["members"])
    assert r["nn_seconds"] + r["gbm_seconds"] == pytest.approx(sum(r["member_seconds"].values()))
    # the child is a fresh process: its peak RSS holds numpy + GDAL + onnxruntime, well above a bare Python
    assert r["peak_rss_bytes"] > 50e6 and r["grid_bytes"] > 16 * 64  # 16 polygons with their fields
    from sentinel_landslide.models.package import load_package

    flops, source, per = br.ensemble_flops(load_package(package_dir))
    figs = br.summarise_size("tiny", [r, r], flops, 50.0)
    kinds = {f["figure"] for f in figs}
    assert {"end_to_end_patches_per_s", "stage_seconds", "peak_rss", "reader_cpu_ms_per_patch"} <= kinds
    assert 0 < r["read_cpu_seconds"] and 0 < r["features_cpu_seconds"]  # the reader thread's own CPU time
    for f in figs:
        json.dumps(f)
    inf = {"patches": 16, "batch_patches": 16, "inference_seconds": 1.0, "nn_seconds": 0.5, "features_seconds": 0.1}
    pkgf = br.emit("package", source="test", path=str(package_dir), name="x", members_combined=len(r["members"]),
                   neural_members=0, flops_per_patch=flops, flops_source=source, flops_per_member=per)
    figs = [pkgf, br.emit("matmul_gflops_fp32", value=50.0, detail={"numpy": 50.0})] + figs
    figs.append(br.emit("pure_inference_patches_per_s", size="tiny", patches=16, batch_patches=16, median=16.0,
                        min=16.0, max=16.0, n=1))
    out = tmp_path / "results.md"
    from sentinel_landslide.bench.results import write_results

    write_results(out, "python -m sentinel_landslide.bench.run --quick", figs, {"tiny": (256, [r, r])}, [inf],
                  "test", [dict(br.machine_load(), when="start")], quiet=False)
    text = out.read_text()
    assert "| tiny | 256 x 256 | 16 |" in text and "--quick" in text
    assert "LOADED (figures contaminated)" in text  # quiet=False is said, not hidden
    rss = r["peak_rss_bytes"] / 1e9
    verdict = "**met**" if rss < 2 else "**not met**"
    assert f"| peak RSS < 2 GB | {rss:.2f} GB (worst run, any size, S1 warped or not) | {verdict} |" in text
    reader = next(f for f in figs if f["figure"] == "reader_cpu_ms_per_patch")
    assert f"| {reader['median']:.2f} (" in text  # the reader CPU column
    # a section a module wrote alone (ort_options) survives the next full run, once
    from sentinel_landslide.bench.results import write_section

    write_section(out, "## onnxruntime session options (issue 22)", ["| variant | ms |", "| default | 8.7 |"])
    for _ in range(2):
        write_results(out, "python -m sentinel_landslide.bench.run --quick", figs, {"tiny": (256, [r, r])}, [inf],
                      "test", [dict(br.machine_load(), when="start")], quiet=False)
    text = out.read_text()
    assert text.count("## onnxruntime session options (issue 22)") == 1 and "| default | 8.7 |" in text
    assert text.index("## onnxruntime session options") < text.index("## How to read this")
    assert text.count("## Per size") == 1


@pytest.mark.slow
def test_paper_recipe_runs_on_a_patch():
    pytest.importorskip("timm")
    from sentinel_landslide.bench.paper import run_paper_recipe

    rng = np.random.default_rng(0)
    p = rng.normal(1500, 200, (1, 12, 64, 64)).astype(np.float32)
    r = run_paper_recipe(p, 1000.0, folds=1, members=("2x_vit_pwee_v2_z",), log=lambda *_: None)
    assert r["folds_run"] == 1 and r["scaled_from_folds"] and r["patches"] == 1
    assert r["seconds_per_patch"] == pytest.approx(sum(r["per_member_seconds_per_patch"].values()))
    assert list(r["per_member_seconds_per_patch"]) == ["2x_vit_pwee_v2_z"]  # only the member asked for
    # FLOPs count all 5 folds x 4 flips, whatever was run: 2 ViT-pwee at 256 x 256 are > 5 GFLOP a pass
    assert r["flops_per_patch"] > 20 * 5e9


def test_warped_case_moves_the_sar_off_the_s2_grid(tiny_scene, tmp_path, package):
    """The bench's warped case: same S2, SAR in EPSG:4326 and UTM 45N, and detection warps it
    to the same grid with every tile scored."""
    from osgeo import gdal, osr

    from sentinel_landslide.bench.common import ensure_scene, ensure_warped_scene, scene_options
    from sentinel_landslide.pipeline import run_detection

    cache = Path(tiny_scene["S2"]).parent.parent
    paths = ensure_warped_scene(256, cache=cache)
    assert paths["S2"] == ensure_scene(256, cache=cache)["S2"]

    def epsg(path):
        s = osr.SpatialReference(wkt=gdal.Open(path).GetProjection())
        s.AutoIdentifyEPSG()
        return int(s.GetAuthorityCode(None))

    assert [epsg(paths[r]) for r in ("S1_DESC_POST", "S1_DESC_PRE", "S1_ASC_POST", "S1_ASC_PRE")] == [4326, 4326,
                                                                                                   32645, 32645]
    on_grid = run_detection(scene_options(tiny_scene), package)
    warped = run_detection(scene_options(paths), package)
    assert (warped.grid.x0, warped.grid.y0, warped.grid.width) == (on_grid.grid.x0, on_grid.grid.y0, on_grid.grid.width)
    assert [r.status for r in warped.records] == ["ok"] * 16


def test_quiet_judged_before_the_runs_and_by_other_processes():
    from sentinel_landslide.bench.common import run_was_quiet

    def s(when, load, train=False, busy=()):
        return {"when": when, "loadavg_1m": load, "training_run": train, "busy_others": list(busy)}

    # the benchmark's own two cores push later load averages to ~2: still a quiet run
    assert run_was_quiet([s("start", 0.9), s("after waiting", 0.5), s("after size 1", 2.4), s("end", 2.1)])
    assert not run_was_quiet([s("start", 1.5), s("after size 1", 2.4)])  # busy before the first run
    assert not run_was_quiet([s("start", 0.3), s("after size 1", 2.4, busy=["python3(95%)"])])
    assert not run_was_quiet([s("start", 0.3), s("end", 2.0, train=True)])


def test_half_masked_scene_runs_with_sar_members_on_the_masked_half(tiny_scene, package_dir, tmp_path, monkeypatch):
    """The bench's cloudy case on the tiny SYNTHETIC scene: a 20 m 0/1 mask over the west
    half; those tiles are scored by the SAR members (no speed asserted here)."""
    import sentinel_landslide.bench.run as br

    monkeypatch.setattr(br, "CACHE", tmp_path)
    mask = br.ensure_half_mask(tiny_scene)
    r = br.run_child("detect", dict(tiny_scene, S2_MASK=mask), package_dir)
    assert r["tiles"] == 16 and r["tiles_per_mode"] == {"s2+desc+asc": 8, "desc+asc": 8}


@pytest.mark.slow
def test_scaleout_figures_on_a_tiny_scene(tiny_scene, package_dir, tmp_path, monkeypatch):
    """bench/scaleout.py end to end on a tiny SYNTHETIC scene and a real 2-worker LocalCluster:
    the figures are there and consistent (no speed is asserted: the lead runs the bench)."""
    pytest.importorskip("dask")
    import sentinel_landslide.bench.run as br
    from sentinel_landslide.bench.scaleout import results_lines, run_scaleout
    from sentinel_landslide.cluster import MissingDask, require_dask

    try:
        require_dask()
    except MissingDask:
        pytest.skip("dask[distributed] is not installed")
    monkeypatch.setattr(br, "CACHE", tmp_path)
    figs = run_scaleout(tiny_scene, package_dir, workers=2, small_side=128, small_scenes=3)
    by = {f["figure"]: f for f in figs}
    single, cluster, small, est = (by[k] for k in ("scaleout_single", "scaleout_cluster", "scaleout_small_scenes",
                                                   "scaleout_estimate"))
    assert cluster["patches"] == single["patches"] == 16
    assert cluster["ratio_to_single"] == pytest.approx(cluster["value"] / single["value"])
    assert cluster["tasks"] >= 2 and 0 < cluster["compute_seconds"] <= 2 * cluster["wall_seconds"]
    assert small["tasks"] >= 3 * 2  # every small scene: a plan task and at least one band
    rates = [r["patches_per_s"] for r in est["rows"]]
    assert rates == sorted(rates) and rates[1] == pytest.approx(2 * rates[0])
    text = "\n".join(results_lines(figs))
    assert "## Scale-out (Dask)" in text and "Estimate for N workers" in text
    json.dumps(figs)


@pytest.mark.slow
def test_cascade_section_on_a_tiny_scene(tiny_scene, package_dir, tmp_path, monkeypatch):
    """bench/cascade.py on the tiny SYNTHETIC scene: the two runs compared tile by tile (no
    flag differs), the figures consistent, and its section written into results.md
    without touching the others (no speed asserted)."""
    import sentinel_landslide.bench.cascade as bc
    from sentinel_landslide.bench.results import write_section

    monkeypatch.setattr(bc, "CACHE", tmp_path)
    figs = bc.run_cascade(tiny_scene, package_dir, repeats=1, size="tiny")
    by = {(f["figure"], f.get("run")): f for f in figs}
    v, share = by[("cascade_vs_full", None)], by[("cascade_networks_share", None)]
    assert v["flag_differences"] == 0 and v["scored"] == 16
    assert share["tiles_full"] + share["tiles_gbm"] == share["scored"] == 16
    assert share["value"] == pytest.approx(share["tiles_full"] / 16)
    assert v["max_prob_diff_full_tiles"] < 1e-5 and v["mean_prob_diff"] <= v["max_prob_diff"]
    assert by[("cascade_end_to_end_seconds", "cascade")]["n"] == 1
    out = tmp_path / "results.md"
    out.write_text("# Benchmark results\n\n## Per size\n\nkept\n\n## How to read this\n\n- text\n")
    write_section(out, bc.HEADING, bc.results_lines(figs)[3:])
    write_section(out, bc.HEADING, bc.results_lines(figs)[3:])  # replaced, not added twice
    text = out.read_text()
    assert text.count(bc.HEADING) == 1 and "kept" in text and "- text" in text
    assert text.index(bc.HEADING) < text.index("## How to read this")
    assert "| tiles whose flag differs from the full ensemble's | 0 |" in text
    json.dumps(figs)


def test_cascade_baseline_package_runs_in_the_same_alternation(tiny_scene, package_dir, tmp_path, monkeypatch):
    """--baseline: another package's full ensemble runs beside the two and gets its own column."""
    import sentinel_landslide.bench.cascade as bc

    monkeypatch.setattr(bc, "CACHE", tmp_path)
    figs = bc.run_all(tiny_scene, package_dir, repeats=1, size="tiny", baseline=package_dir, baseline_label="same")
    by = {(f["figure"], f.get("run")): f for f in figs}
    assert by[("cascade_end_to_end_seconds", "baseline")]["n"] == 1
    assert by[("cascade_baseline", None)]["label"] == "same"
    lines = bc.results_lines(figs)
    assert "| | cascade (default) | FULL_ENSEMBLE | baseline FULL_ENSEMBLE | target |" in lines
    row = next(ln for ln in lines if ln.startswith("| tiles whose flag differs"))
    assert row.count("|") == 6 and "| 0 | - | - | 0 |" in row
    ratios = bc.baseline_ratios(by)
    med = {r: by[("cascade_end_to_end_seconds", r)]["median"] for r in ("cascade", "full_ensemble", "baseline")}
    assert ratios["full_ensemble"] == pytest.approx(med["full_ensemble"] / med["baseline"])
    assert ratios["full_target"] == pytest.approx(90 / 162)
    row = next(ln for ln in lines if ln.startswith("| end to end / baseline"))
    assert f"| {ratios['cascade']:.2f} | {ratios['full_ensemble']:.2f} | 1 |" in row and "full <= 0.56" in row


def test_bench_modules_import_without_a_circle():
    """common sits below run, results, scaleout and cascade: it imports none of them."""
    import ast
    from pathlib import Path

    import sentinel_landslide.bench.common as common

    tree = ast.parse(Path(common.__file__).read_text())
    rel = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level == 1}
    assert not rel & {"run", "results", "scaleout", "cascade"}
    for name in ("scaleout", "results", "cascade"):
        tree = ast.parse((Path(common.__file__).parent / f"{name}.py").read_text())
        rel = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level == 1}
        rel |= {a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level == 1 and n.module is None
                for a in n.names}
        assert "run" not in rel, name


def test_ort_options_variants_on_one_bundled_network(tmp_path):
    """bench/ort_options.py on the smallest bundled network: every variant scores the same
    batch as the default within float noise (graph levels reorder sums), the default row
    is first and the section is written (no speed asserted)."""
    pytest.importorskip("onnxruntime")
    from sentinel_landslide.bench import ort_options as bo
    from sentinel_landslide.bench.results import write_section
    from sentinel_landslide.models.package import BUNDLED, load_package

    if not any(m["name"] == "nn_vit2_z" for m in load_package(BUNDLED).manifest["members"]):
        pytest.skip("the bundled package has no nn_vit2_z")
    res = bo.run(BUNDLED, batch=4, seconds=0.0, repeats=1, only=["nn_vit2_z"], cores=2, rss_check=False)
    rows = res["rows"]
    assert len(rows) == len(bo.variants(2)) and rows[0]["variant"].startswith("default")
    assert rows[0]["max_abs_logit_diff"] == 0.0 and rows[0]["vs_default"] == 1.0
    assert all(r["max_abs_logit_diff"] < 1e-3 and r["ms_per_patch"] > 0 for r in rows)
    out = tmp_path / "results.md"
    write_section(out, bo.HEADING, bo.results_lines(res))
    assert out.read_text().count("| graph optimisation basic |") == 1


def test_the_linearity_target_is_one_sided():
    """Slower per patch at a larger size by more than 15 % misses; cheaper per patch (the
    fixed cost spread over more patches) meets it and says why."""
    from sentinel_landslide.bench.results import linearity_row

    aff = {"fixed_seconds": 1.0}
    row = lambda v: linearity_row({"size": "1", "relative_to": "1/16", "value": v}, aff)  # noqa: E731
    assert row(0.2).endswith("**not met** |") and "+20.0%" in row(0.2)
    assert row(0.05).endswith("**met** |") and "cheaper" not in row(0.05)
    assert row(-0.23).endswith("**met** |") and "fixed cost (1.0 s in the affine fit)" in row(-0.23)
