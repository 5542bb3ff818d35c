"""landslide:report: a PDF (and HTML) from a print layout + atlas, built headless in the
algorithm's own QgsProject, with one page per reported tile after the overview."""
from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest
from osgeo import ogr
from qgis.core import QgsProcessingException, QgsProject
from qgis.PyQt.QtGui import QImage

from ..helpers import S1_ROLES, scene_params


@pytest.fixture(scope="module")
def detect_grid(provider, synthetic_scene, tmp_path_factory) -> Path:
    import processing

    out = tmp_path_factory.mktemp("report") / "grid.gpkg"
    processing.run("landslide:detect", scene_params(synthetic_scene, out, THRESHOLD=0.0001))
    return out


@pytest.fixture()
def small_grid(detect_grid, tmp_path) -> Path:
    """The detect grid with exactly 4 flagged tiles, 2 confirmed and 1 rejected among them."""
    dst = tmp_path / "grid.gpkg"
    shutil.copy(detect_grid, dst)
    ds = ogr.Open(str(dst), 1)
    lyr = ds.GetLayer(0)
    verdicts = {0: "confirmed", 1: "rejected", 2: "confirmed"}
    for f in lyr:
        k = f["tile_id"]
        f["flagged"] = 1 if k in (5, 17, 33, 60) else 0
        f["review"] = verdicts.get([5, 17, 33, 60].index(k)) if k in (5, 17, 33, 60) else None
        if k == 17:
            f["review_note"] = "road cut, not a slide"
        lyr.SetFeature(f)
    ds = None
    return dst


def pdf_pages(path) -> int:
    data = Path(path).read_bytes()
    assert data.startswith(b"%PDF")
    return len(re.findall(rb"/Type\s*/Page(?![a-zA-Z])", data))


def run_report(grid, tmp_path, scene=None, **extra):
    import processing

    params = {"GRID": str(grid), "OUTPUT_PDF": str(tmp_path / "report.pdf")}
    if scene:
        params["S2"] = scene["S2"]
        params.update({r: scene[r] for r in S1_ROLES})
    params.update(extra)
    return processing.run("landslide:report", params)


def test_pdf_has_an_overview_and_one_page_per_flagged_tile(provider, small_grid, synthetic_scene, tmp_path):
    before = len(QgsProject.instance().mapLayers())
    res = run_report(small_grid, tmp_path, synthetic_scene, OUTPUT_HTML=str(tmp_path / "report.html"))
    assert res["TILE_COUNT"] == 4 and res["PAGES"] == 5
    assert pdf_pages(res["OUTPUT_PDF"]) == 5
    assert len(QgsProject.instance().mapLayers()) == before  # the analyst's project is untouched
    # HTML: the same pages as images, and a linked table of the tiles
    html = Path(res["OUTPUT_HTML"]).read_text()
    pages = sorted((tmp_path / "report_files").glob("page_*.png"))
    assert len(pages) == 5 and html.count("<img") == 5
    assert "road cut, not a slide" in html
    tile_page = QImage(str(pages[1]))
    assert not tile_page.isNull() and tile_page.width() > tile_page.height()  # A4 landscape


def test_confirmed_and_not_rejected_selections(provider, small_grid, tmp_path):
    res = run_report(small_grid, tmp_path, TILES=1)  # confirmed only, no source layers
    assert res["TILE_COUNT"] == 2 and pdf_pages(res["OUTPUT_PDF"]) == 3
    (tmp_path / "b").mkdir()
    res = run_report(small_grid, tmp_path / "b", TILES=2)  # flagged, not rejected
    assert res["TILE_COUNT"] == 3 and pdf_pages(res["OUTPUT_PDF"]) == 4


def test_max_tiles_keeps_the_most_probable(provider, detect_grid, tmp_path):
    res = run_report(detect_grid, tmp_path, MAX_TILES=3)
    assert res["TILE_COUNT"] == 3 and pdf_pages(res["OUTPUT_PDF"]) == 4


def test_no_matching_tile_gives_the_overview_only(provider, small_grid, tmp_path):
    ds = ogr.Open(str(small_grid), 1)
    lyr = ds.GetLayer(0)
    for f in lyr:
        f.SetFieldNull("review")
        lyr.SetFeature(f)
    ds = None
    res = run_report(small_grid, tmp_path, TILES=1)
    assert res["TILE_COUNT"] == 0 and pdf_pages(res["OUTPUT_PDF"]) == 1


def test_cancel_leaves_no_pdf(provider, small_grid, synthetic_scene, tmp_path):
    import processing
    from qgis.core import QgsProcessingFeedback

    fb = QgsProcessingFeedback()
    fb.progressChanged.connect(lambda p: p > 30 and fb.cancel())  # during the chips or the pages
    with pytest.raises(QgsProcessingException, match="Cancelled"):
        processing.run(
            "landslide:report", {"GRID": str(small_grid), "S2": synthetic_scene["S2"],
                                 "OUTPUT_PDF": str(tmp_path / "report.pdf")}, feedback=fb)
    assert not list(tmp_path.glob("report.pdf*"))


def test_bad_inputs(provider, small_grid, tmp_path):
    import processing

    with pytest.raises(QgsProcessingException, match="PDF file, an HTML file or both"):
        processing.run("landslide:report", {"GRID": str(small_grid)})
    inv = tmp_path / "notgrid.gpkg"
    from osgeo import gdal

    gdal.VectorTranslate(str(inv), str(small_grid), options=["-select", "tile_id"])
    with pytest.raises(QgsProcessingException, match="no 'prob' field"):
        processing.run("landslide:report", {"GRID": str(inv), "OUTPUT_PDF": str(tmp_path / "x.pdf")})
    assert not (tmp_path / "x.pdf").exists()


@pytest.mark.slow
def test_report_and_evaluate_run_headless_in_qgis_process(small_grid, synthetic_scene, tmp_path):
    """QGIS's command-line runner: no iface, no GUI, no project of the analyst's."""
    if not os.path.exists("/usr/bin/qgis_process.bin"):
        pytest.skip("qgis_process.bin is not installed")
    from sentinel_landslide.scripts.qgis_env import run_algorithm

    rc, res, log = run_algorithm("landslide:report", {"GRID": str(small_grid), "S2": synthetic_scene["S2"],
                                                      "OUTPUT_PDF": str(tmp_path / "cli.pdf")})
    assert rc == 0, log
    assert res["results"]["PAGES"] == 5 and pdf_pages(tmp_path / "cli.pdf") == 5
    rc, res, log = run_algorithm("landslide:evaluate", {"GRID": str(small_grid), "INVENTORY": synthetic_scene["truth"],
                                                        "OUTPUT": str(tmp_path / "ev.gpkg"),
                                                        "OUTPUT_HTML": str(tmp_path / "ev.html")})
    assert rc == 0, log
    assert res["results"]["EVALUATED"] == 70 and (tmp_path / "ev.html").exists()
