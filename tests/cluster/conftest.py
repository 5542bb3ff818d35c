"""Clusters on 127.0.0.1 for the distributed tests: a LocalCluster of processes, and the
deployment users have, a ``dask scheduler`` plus ``dask worker`` processes started as
subprocesses (random free ports, one thread each, no dashboard), stopped in teardown.
Every wait is bounded.  Scenes are SYNTHETIC (engine/synthetic.make_scene)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ..helpers import PLUGINS, scene_options

try:
    from sentinel_landslide.cluster import MissingDask, require_dask

    require_dask()
except MissingDask:
    pytest.skip("dask[distributed] is not installed (requirements-dev.txt)", allow_module_level=True)

START_TIMEOUT = 60.0


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(PLUGINS)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    env.setdefault("DASK_DISTRIBUTED__WORKER__DAEMON", "False")
    return env


class SubprocessCluster:
    """``python -m distributed.cli.dask_scheduler`` and N ``dask_worker --no-nanny`` processes
    (no nanny: SIGKILL on a worker's pid kills the worker itself, as a crashed node would)."""

    def __init__(self, folder: Path, n_workers: int = 2):
        self.folder = folder
        self.sched_file = folder / "scheduler.json"
        self.procs: list[subprocess.Popen] = []
        self.workers: list[subprocess.Popen] = []
        self.n_workers = n_workers

    def _spawn(self, args, name):
        log = open(self.folder / f"{name}.log", "wb")
        p = subprocess.Popen([sys.executable, "-m", *args], env=_env(), stdout=log, stderr=subprocess.STDOUT,
                             cwd=self.folder)
        log.close()
        self.procs.append(p)
        return p

    def start(self) -> "SubprocessCluster":
        self._spawn(["distributed.cli.dask_scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                     "--scheduler-file", str(self.sched_file)], "scheduler")
        deadline = time.monotonic() + START_TIMEOUT
        while not self.sched_file.exists():
            if time.monotonic() > deadline or self.procs[0].poll() is not None:
                raise RuntimeError("the dask scheduler did not start: " + self.log("scheduler"))
            time.sleep(0.1)
        time.sleep(0.2)  # the file is written in one go, but give it a moment
        self.address = json.loads(self.sched_file.read_text())["address"]
        for i in range(self.n_workers):
            self.workers.append(self._spawn(
                ["distributed.cli.dask_worker", self.address, "--host", "127.0.0.1", "--nthreads", "1",
                 "--no-dashboard", "--no-nanny", "--name", f"w{i}", "--local-directory", str(self.folder / f"w{i}")],
                f"worker{i}"))
        return self

    def log(self, name: str) -> str:
        p = self.folder / f"{name}.log"
        return p.read_text(errors="replace")[-2000:] if p.exists() else ""

    def stop(self) -> None:
        for p in reversed(self.procs):
            if p.poll() is None:
                p.terminate()
        for p in self.procs:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=5)


@pytest.fixture
def subprocess_cluster(tmp_path):
    (tmp_path / "cluster").mkdir()
    cluster = SubprocessCluster(tmp_path / "cluster")
    try:
        yield cluster.start()
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def local_client():
    from sentinel_landslide.cluster.client import open_client

    with open_client(None, workers=2) as client:
        client.wait_for_workers(2, timeout=START_TIMEOUT)
        yield client


@pytest.fixture(scope="session")
def scenes(tmp_path_factory):
    """Two small SYNTHETIC scenes (SAR on other grids, so alignment runs in every band)."""
    from sentinel_landslide.engine.synthetic import make_scene

    root = tmp_path_factory.mktemp("synthetic_scenes")
    return {"a": make_scene(root / "a", 448, 384, seed=3), "b": make_scene(root / "b", 320, 384, seed=11)}


@pytest.fixture(scope="session")
def reference(scenes, package_dir):
    """The single-process run of each scene (what landslide:detect computes)."""
    from sentinel_landslide.models.package import load_package
    from sentinel_landslide.pipeline import run_detection

    pkg = load_package(package_dir)
    return {k: run_detection(scene_options(s), pkg) for k, s in scenes.items()}
