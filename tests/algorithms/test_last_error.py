"""An algorithm's failure is kept, with its log, for the diagnostics report."""
from __future__ import annotations

import pytest
from qgis.core import QgsProcessingException, QgsProcessingFeedback

from ..helpers import scene_params


def test_a_failed_run_is_the_last_error_in_the_diagnostics(provider, synthetic_scene, tmp_path, monkeypatch):
    import processing

    from sentinel_landslide.core import lasterror
    from sentinel_landslide.deps.diagnostics import report

    monkeypatch.setattr(lasterror, "path", lambda: tmp_path / "last_error.json")
    monkeypatch.setattr(lasterror, "_LAST", {})
    params = scene_params(synthetic_scene, tmp_path / "g.gpkg", MODEL=str(tmp_path / "no_such_package"))
    with pytest.raises(QgsProcessingException):
        processing.run("landslide:detect", params, feedback=QgsProcessingFeedback())
    err = lasterror.last()
    assert err["algorithm"] == "landslide:detect" and "Model package problem" in err["message"]
    assert "no_such_package" in report()
