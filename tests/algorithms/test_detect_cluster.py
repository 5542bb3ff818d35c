"""landslide:detect with DASK_SCHEDULER: the bands of tile rows are scored on a real
LocalCluster of processes on 127.0.0.1, and the grid equals the in-process run's
(SYNTHETIC scene)."""
from __future__ import annotations

import pytest

from ..helpers import grid_rows, scene_params

pytestmark = pytest.mark.slow




@pytest.fixture(scope="module")
def cluster_address():
    from sentinel_landslide.cluster import require_dask

    distributed = require_dask() if _has_dask() else pytest.skip("dask[distributed] is not installed")
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                       dashboard_address=None,
                                       scheduler_kwargs={"dashboard_address": "127.0.0.1:0"})  # no dashboard, no fixed port
    try:
        yield cluster.scheduler_address
    finally:
        cluster.close(timeout=30)


def _has_dask() -> bool:
    from sentinel_landslide.cluster import MissingDask, require_dask

    try:
        require_dask()
        return True
    except MissingDask:
        return False


def test_detect_on_a_dask_cluster_equals_in_process(provider, synthetic_scene, tmp_path, cluster_address):
    import processing
    from qgis.core import QgsApplication, QgsProcessingFeedback

    alg = QgsApplication.processingRegistry().algorithmById("landslide:detect")
    assert alg.parameterDefinition("DASK_SCHEDULER") is not None
    here = processing.run("landslide:detect", scene_params(synthetic_scene, tmp_path / "here.gpkg"))
    progress = []
    fb = QgsProcessingFeedback()
    fb.progressChanged.connect(progress.append)
    there = processing.run("landslide:detect", scene_params(synthetic_scene, tmp_path / "there.gpkg",
                                                            DASK_SCHEDULER=cluster_address), feedback=fb)
    assert {k: there[k] for k in ("TILES", "FLAGGED", "MODE", "THRESHOLD")} == \
        {k: here[k] for k in ("TILES", "FLAGGED", "MODE", "THRESHOLD")}
    assert grid_rows(tmp_path / "there.gpkg") == grid_rows(tmp_path / "here.gpkg")
    assert progress and max(progress) > 60  # the bands' progress reached the dialog


def test_unreachable_scheduler_is_a_clear_error(provider, synthetic_scene, tmp_path):
    import processing
    from qgis.core import QgsProcessingException

    if not _has_dask():
        pytest.skip("dask[distributed] is not installed")
    out = tmp_path / "none.gpkg"
    with pytest.raises(QgsProcessingException, match="Dask cluster"):
        processing.run("landslide:detect", scene_params(synthetic_scene, out, DASK_SCHEDULER="tcp://127.0.0.1:9"))
    assert not out.exists()


def test_detect_adapted_to_the_scene_on_a_cluster_equals_in_process(provider, synthetic_scene, package, tmp_path,
                                                                   cluster_address, monkeypatch):
    """ADAPT_TO_SCENE with DASK_SCHEDULER: the scene-adapted package (a temporary folder the
    local workers see) scores the bands; the grid equals the in-process adapted run's."""
    import processing

    from ..helpers import scene_like_table

    table = scene_like_table(synthetic_scene, package, tmp_path / "table.csv.gz")
    monkeypatch.setenv("SENTINEL_LANDSLIDE_BASE_FEATURES", str(table))
    here = processing.run("landslide:detect", scene_params(synthetic_scene, tmp_path / "here.gpkg",
                                                           ADAPT_TO_SCENE=True))
    there = processing.run("landslide:detect", scene_params(synthetic_scene, tmp_path / "there.gpkg",
                                                            ADAPT_TO_SCENE=True, DASK_SCHEDULER=cluster_address))
    assert there["FLAGGED"] == here["FLAGGED"] and there["TILES"] == here["TILES"] == 70
    names, rows = grid_rows(tmp_path / "there.gpkg")
    assert (names, rows) == grid_rows(tmp_path / "here.gpkg")
    assert {r[names.index("model")] for r in rows} == {package.name + "+scene"}
