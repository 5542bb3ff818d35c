"""Detection and batches on real Dask clusters on 127.0.0.1 (SYNTHETIC scenes): the
results equal the single-process run's, a worker killed mid-run changes nothing, a bad
scene is reported while the others finish, and a rerun skips what is complete."""
from __future__ import annotations

import csv
import json
import os
import signal
import time

import pytest
from osgeo import ogr

from ..helpers import scene_options

pytestmark = pytest.mark.slow

S1_COLS = ("s1_desc_post", "s1_desc_pre", "s1_asc_post", "s1_asc_pre")


def records(res) -> list:
    return [(r.tile_id, r.row, r.col, r.bounds, r.valid_frac, r.status, r.prob, r.flagged, r.members)
            for r in res.records]


def grid_rows(path) -> list:
    """(tile_id, prob, flagged, status, mode, member probabilities) of a written grid."""
    ds = ogr.Open(str(path))
    lyr = ds.GetLayer(0)
    names = [lyr.GetLayerDefn().GetFieldDefn(i).GetName() for i in range(lyr.GetLayerDefn().GetFieldCount())]
    out = [tuple(f.GetField(n) for n in names) + (f.GetGeometryRef().ExportToWkt(),) for f in lyr]
    return [names] + sorted(out)


def write_csv(path, scenes: dict, bad_path=None) -> None:
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "s2"] + list(S1_COLS) + ["min_valid"])
        for sid, s in scenes.items():
            w.writerow([sid, s["S2"]] + [s[c.upper()] for c in S1_COLS] + [""])
        if bad_path:
            s = next(iter(scenes.values()))
            w.writerow(["bad", bad_path] + [s[c.upper()] for c in S1_COLS] + [""])


def reference_grids(reference, tmp_path, package_dir):
    from sentinel_landslide.engine.outputs import write_grid
    from sentinel_landslide.models.package import load_package

    name = load_package(package_dir).name
    return {k: grid_rows(write_grid(str(tmp_path / f"ref_{k}.gpkg"), r, name)) for k, r in reference.items()}


def test_detect_on_a_local_cluster_equals_the_single_process_run(local_client, scenes, reference, package_dir):
    from sentinel_landslide.cluster import tasks
    from sentinel_landslide.cluster.client import detect_on_cluster
    from sentinel_landslide.models.package import load_package

    pkg = load_package(package_dir)
    seen = []
    res = detect_on_cluster(scene_options(scenes["a"]), pkg, client=local_client, band_rows=1,
                            progress=lambda stage, frac, msg="": seen.append((stage, frac)))
    ref = reference["a"]
    assert records(res) == records(ref)
    assert (res.mode, res.members, res.threshold, res.n_rows, res.n_cols) == (ref.mode, ref.members, ref.threshold,
                                                                               ref.n_rows, ref.n_cols)
    assert res.log == ref.log  # same units decisions, resampling and members
    assert res.timings["bands"] == ref.n_rows
    assert [f for s, f in seen if s == "predict"][-1] == pytest.approx(1.0)
    # each worker process loaded and verified the package once and kept one ensemble for all its bands
    stats = local_client.run(tasks.worker_stats)
    assert sum(s["tasks"] for s in stats.values()) >= ref.n_rows
    assert all(s["package_loads"] <= 1 and s["scorer_loads"] <= 1 for s in stats.values()), stats


def test_a_cloudy_scene_on_the_cluster_equals_the_single_process_run(local_client, tmp_path, package_dir):
    """Per-tile fallback across bands: tiles under the SYNTHETIC cloud are scored by the SAR
    combination in some bands and not others; modes, thresholds, the cloud-mask share and the
    tiles per mode are those of the single-process run."""
    from sentinel_landslide.cluster.client import detect_on_cluster
    from sentinel_landslide.engine.align import InputLayer
    from sentinel_landslide.engine.synthetic import make_scene
    from sentinel_landslide.models.package import load_package
    from sentinel_landslide.pipeline import run_detection

    scene = make_scene(tmp_path / "cloudy", 448, 384, seed=5, cloud=0.4)
    pkg = load_package(package_dir)
    opts = scene_options(scene)
    opts.s2_mask = InputLayer("S2_MASK", scene["S2_MASK"], [1])
    ref = run_detection(opts, pkg)
    assert len(ref.mode_counts) >= 2  # the cloud really splits the scene into combinations
    res = detect_on_cluster(opts, pkg, client=local_client, band_rows=1)
    assert [r + (x.mode, x.s2_valid, x.sar_valid) for r, x in zip(records(res), res.records)] == \
        [r + (x.mode, x.s2_valid, x.sar_valid) for r, x in zip(records(ref), ref.records)]
    assert res.thresholds == ref.thresholds and res.mode_counts == ref.mode_counts
    assert res.log == ref.log


def test_a_sar_strip_beside_s2_on_the_cluster_equals_the_single_process_run(local_client, tmp_path, package_dir):
    """The union area: S2 covers part of the SAR scene; the bands are planned over the
    union (west tile column reaching beyond the S2 corner) and the SAR-only tiles get the
    same modes and probabilities as in the single-process run."""
    from osgeo import gdal

    from sentinel_landslide.cluster.client import detect_on_cluster
    from sentinel_landslide.engine.synthetic import make_scene
    from sentinel_landslide.models.package import load_package
    from sentinel_landslide.pipeline import run_detection

    scene = make_scene(tmp_path / "strip", 320, 256, seed=4)
    scene["S2"] = str(tmp_path / "s2_part.tif")
    gdal.Translate(scene["S2"], str(tmp_path / "strip" / "s2.tif"), srcWin=[48, 0, 192, 256])
    pkg = load_package(package_dir)
    ref = run_detection(scene_options(scene), pkg)
    assert ref.grid.area is not None and "desc+asc" in ref.mode_counts  # SAR-only tiles beside S2
    res = detect_on_cluster(scene_options(scene), pkg, client=local_client, band_rows=1)
    assert [r + (x.mode, x.s2_valid, x.sar_valid) for r, x in zip(records(res), res.records)] == \
        [r + (x.mode, x.s2_valid, x.sar_valid) for r, x in zip(records(ref), ref.records)]
    assert res.mode_counts == ref.mode_counts and res.log == ref.log


def test_cancel_stops_the_cluster_run(local_client, scenes, package_dir):
    from sentinel_landslide.cluster.client import detect_on_cluster
    from sentinel_landslide.core.errors import Cancelled
    from sentinel_landslide.models.package import load_package

    calls = []

    def cancelled():
        calls.append(1)
        return len(calls) > 3

    t0 = time.monotonic()
    with pytest.raises(Cancelled):
        detect_on_cluster(scene_options(scenes["b"]), load_package(package_dir), client=local_client, band_rows=1,
                          is_cancelled=cancelled)
    assert time.monotonic() - t0 < 30


def test_batch_cli_on_a_local_cluster_reports_a_bad_scene_and_reruns_skip(tmp_path, scenes, reference, package_dir):
    from sentinel_landslide import cli

    table, out = tmp_path / "scenes.csv", tmp_path / "out"
    (tmp_path / "broken.tif").write_text("not a raster")
    write_csv(table, scenes, bad_path="broken.tif")  # relative: resolved next to the CSV
    args = ["batch", "--scenes", str(table), "--out", str(out), "--workers", "2", "--band-rows", "2",
            "--model", str(package_dir)]
    assert cli.main(args) == 1  # one scene failed
    index = {r["id"]: r for r in csv.DictReader(open(out / "index.csv"))}
    assert [index[k]["status"] for k in ("a", "b", "bad")] == ["done", "done", "failed"]
    assert "broken.tif" in index["bad"]["message"] or "raster" in index["bad"]["message"].lower()
    assert not (out / "bad.gpkg").exists()
    refs = reference_grids(reference, tmp_path, package_dir)
    for k in ("a", "b"):
        assert grid_rows(out / f"{k}.gpkg") == refs[k]
        assert int(index[k]["tiles"]) == len(reference[k].records)
        assert int(index[k]["flagged"]) == reference[k].flagged
    assert json.loads((out / "index.json").read_text())[2]["status"] == "failed"
    # each grid's run record names its scene's layers and the package, as detect's does
    from sentinel_landslide.engine.outputs import read_run_record

    for k in ("a", "b"):
        opts, model = read_run_record(str(out / f"{k}.gpkg"))
        assert opts.s2.path == scenes[k]["S2"] and model == str(package_dir)
    assert not (out / "bad.gpkg.detect.json").exists()

    # rerun: complete scenes are skipped (their files untouched), the bad one is tried again
    before = {k: os.stat(out / f"{k}.gpkg").st_mtime_ns for k in ("a", "b")}
    assert cli.main(args) == 1
    index = {r["id"]: r for r in csv.DictReader(open(out / "index.csv"))}
    assert [index[k]["status"] for k in ("a", "b", "bad")] == ["skipped", "skipped", "failed"]
    assert {k: os.stat(out / f"{k}.gpkg").st_mtime_ns for k in ("a", "b")} == before

    # a changed input is not "the same inputs": that scene runs again
    os.utime(scenes["b"]["S2"], ns=(time.time_ns(), time.time_ns()))
    assert cli.main(args) == 1
    index = {r["id"]: r for r in csv.DictReader(open(out / "index.csv"))}
    assert [index[k]["status"] for k in ("a", "b")] == ["skipped", "done"]
    assert grid_rows(out / "b.gpkg") == refs["b"]


def test_batch_on_scheduler_and_worker_subprocesses_equals_single_process(subprocess_cluster, tmp_path, scenes,
                                                                          reference, package_dir):
    from sentinel_landslide import cli

    table, out = tmp_path / "scenes.csv", tmp_path / "out"
    write_csv(table, scenes)
    assert cli.main(["batch", "--scenes", str(table), "--out", str(out), "--scheduler", subprocess_cluster.address,
                     "--model", str(package_dir)]) == 0, subprocess_cluster.log("worker0")
    refs = reference_grids(reference, tmp_path, package_dir)
    for k in ("a", "b"):
        assert grid_rows(out / f"{k}.gpkg") == refs[k]
    assert all(p.poll() is None for p in subprocess_cluster.workers)  # the workers outlive the client


def test_a_worker_killed_mid_run_changes_nothing(subprocess_cluster, scenes, reference, package_dir):
    import distributed

    from sentinel_landslide.cluster.client import detect_on_cluster
    from sentinel_landslide.models.package import load_package

    pkg = load_package(package_dir)
    killed = {}
    with distributed.Client(subprocess_cluster.address, timeout="20s", set_as_default=False) as client:
        client.wait_for_workers(2, timeout=60)
        pids = client.run(os.getpid)  # worker address -> pid (no nanny: the worker process itself)

        def progress(stage, frac, msg=""):
            if stage != "predict" or killed or frac <= 0:
                return
            # some bands are complete: kill a worker that holds unfinished bands right now
            busy = {addr: keys for addr, keys in client.processing().items() if keys}
            if not busy:
                return
            addr, keys = next(iter(busy.items()))
            victim = next(p for p in subprocess_cluster.workers if p.pid == pids[addr])
            os.kill(victim.pid, signal.SIGKILL)
            victim.wait(timeout=10)
            killed.update(addr=addr, tasks=len(keys), frac=frac)

        res = detect_on_cluster(scene_options(scenes["a"]), pkg, client=client, band_rows=1, progress=progress)
        assert killed and killed["tasks"] >= 1 and killed["frac"] < 1.0, killed
        deadline = time.monotonic() + 30
        while killed["addr"] in client.scheduler_info()["workers"] and time.monotonic() < deadline:
            time.sleep(0.2)
        assert killed["addr"] not in client.scheduler_info()["workers"]
    assert records(res) == records(reference["a"])
    assert res.log == reference["a"].log


@pytest.mark.parametrize("absent", ["dask", "distributed"])
def test_missing_dask_names_the_install_command(monkeypatch, absent):
    import importlib.util

    from sentinel_landslide.cluster import MissingDask, require_dask

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == absent else real(name, *a))
    with pytest.raises(MissingDask, match=r"-m sentinel_landslide.deps install --cluster") as err:
        require_dask()
    assert absent in str(err.value) and "Dask cluster" in str(err.value)


def test_batch_cli_adapted_to_each_scene_equals_the_single_process_run(tmp_path, synthetic_scene, package,
                                                                       package_dir):
    """--adapt-to-scene on a batch: the scene is scored on the cluster with its own
    scene-adapted package (SYNTHETIC training table that resembles it), and the grid equals
    detect's in one process with the same adaptation; a rerun skips it."""
    from sentinel_landslide import cli
    from sentinel_landslide.engine.outputs import write_grid
    from sentinel_landslide.pipeline import run_detection
    from sentinel_landslide.training.scene_adapt import scene_adapted

    from ..helpers import scene_like_table

    like = scene_like_table(synthetic_scene, package, tmp_path / "table.csv.gz")
    table, out = tmp_path / "scenes.csv", tmp_path / "out"
    write_csv(table, {"s": synthetic_scene})
    args = ["batch", "--scenes", str(table), "--out", str(out), "--workers", "2", "--model", str(package_dir),
            "--adapt-to-scene", "--base-features", str(like)]
    assert cli.main(args) == 0
    with scene_adapted(scene_options(synthetic_scene), package, base_features=like) as (pkg, lines):
        assert pkg.name == package.name + "+scene", lines
        ref = grid_rows(write_grid(str(tmp_path / "ref.gpkg"), run_detection(scene_options(synthetic_scene), pkg),
                                   pkg.name))
    assert grid_rows(out / "s.gpkg") == ref
    assert cli.main(args) == 0
    assert next(csv.DictReader(open(out / "index.csv")))["status"] == "skipped"
