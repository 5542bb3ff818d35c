"""The client side of detection on a Dask cluster: connect (or start a LocalCluster),
send one scene's bands, assemble.  dask / distributed are imported only in here, when a
function is called (``require_dask`` names the install command where they are missing)."""
from __future__ import annotations

import math
import os
import time
from contextlib import contextmanager
from dataclasses import replace

from ..core.errors import Cancelled
from ..engine.detect import DetectOptions, DetectResult
from . import require_dask, tasks

POLL_SECONDS = 0.05  # how often a waiting client checks for cancel
CONNECT_TIMEOUT = "20s"


@contextmanager
def open_client(scheduler: str | None = None, workers: int | None = None, threads_per_worker: int = 1):
    """A ``distributed.Client``: on ``scheduler`` (an address such as tcp://host:8786), or on a
    LocalCluster of ``workers`` processes (default: the cores) started here and closed on exit."""
    distributed = require_dask()
    if scheduler:
        client = distributed.Client(scheduler, timeout=CONNECT_TIMEOUT, set_as_default=False)
        try:
            yield client
        finally:
            client.close()
        return
    n = workers or os.cpu_count() or 1
    cluster = distributed.LocalCluster(n_workers=n, threads_per_worker=threads_per_worker, processes=True,
                                       host="127.0.0.1", dashboard_address=None,
                                       scheduler_kwargs={"dashboard_address": "127.0.0.1:0"})  # no dashboard, no fixed port
    try:
        client = distributed.Client(cluster, set_as_default=False)
        try:
            yield client
        finally:
            client.close()
    finally:
        cluster.close()


def slots(client) -> int:
    """Task slots on the cluster now (worker threads)."""
    info = client.scheduler_info(n_workers=-1) if _takes_n_workers(client) else client.scheduler_info()
    return max(1, sum(w.get("nthreads", 1) for w in info.get("workers", {}).values()))


def _takes_n_workers(client) -> bool:
    import inspect

    try:
        return "n_workers" in inspect.signature(client.scheduler_info).parameters
    except (TypeError, ValueError):
        return False


def default_band_rows(n_rows: int, n_slots: int) -> int:
    """About four bands per task slot: the last band's wait (load imbalance) stays a small
    share, and each task still scores hundreds of patches per scene open."""
    return max(1, math.ceil(n_rows / (4 * max(1, n_slots))))


def task_options(opts: DetectOptions, task_threads: int | None) -> DetectOptions:
    """Each task's ensemble runs ``task_threads`` threads (default 1: one task per worker
    thread, as Dask schedules them); probabilities do not depend on it."""
    return replace(opts, threads=opts.threads or task_threads or 1)


def _wait_any(futures, is_cancelled):
    """Block until one of ``futures`` is done, checking ``is_cancelled`` in between (polled:
    ``distributed.wait`` needs a default client, and this client is not made the default)."""
    while True:
        if is_cancelled():
            raise Cancelled()
        done = [f for f in futures if f.done()]
        if done:
            return done
        time.sleep(POLL_SECONDS)


def detect_on_cluster(opts: DetectOptions, pkg, scheduler: str | None = None, progress=None, is_cancelled=None,
                      band_rows: int | None = None, task_threads: int | None = 1, client=None) -> DetectResult:
    """``pipeline.run_detection`` with the bands of tile rows scored on a Dask cluster:
    the same records, probabilities and log.  The package folder must be on a path the
    workers see (its manifest checksum is checked there)."""
    prog = progress or (lambda stage, frac, msg="": None)
    cancelled = is_cancelled or (lambda: False)
    if client is None:
        with open_client(scheduler) as c:
            return detect_on_cluster(opts, pkg, progress=progress, is_cancelled=is_cancelled,
                                     band_rows=band_rows, task_threads=task_threads, client=c)
    t0 = time.perf_counter()
    folder = str(pkg.folder)
    digest = tasks.manifest_digest(folder)
    topts = task_options(opts, task_threads)
    prog("align", 0.0, f"planning the 10 m grid on the cluster {client.scheduler.address}")
    futures = [client.submit(tasks.plan_scene, topts, folder, digest, pure=False, priority=10)]
    try:
        _wait_any(futures, cancelled)
        plan = futures[0].result()
        rows = band_rows or default_band_rows(plan.n_rows, slots(client))
        bands = tasks.bands_of(plan.n_rows, rows)
        futures = [client.submit(tasks.score_band, topts, folder, digest, plan.conventions, r0, r1, pure=False)
                   for r0, r1 in bands]
        pending, results = set(futures), []
        while pending:
            for f in _wait_any(list(pending), cancelled):
                pending.discard(f)
                results.append(f.result())  # a task's error is raised here, as the engine raised it
            done_rows = sum(len({r.row for r in b.records}) for b in results)
            prog("predict", done_rows / max(1, plan.n_rows),
                 f"{len(results)} of {len(bands)} bands ({done_rows} of {plan.n_rows} tile rows)")
    except BaseException:
        client.cancel(futures)
        raise
    return tasks.assemble(plan, results, time.perf_counter() - t0, opts.min_valid_fraction)
