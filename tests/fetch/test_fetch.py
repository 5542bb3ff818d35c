"""landslide fetch (QGIS-free) against a real STAC API (rustac serve) and a real range-honouring
file server on 127.0.0.1.  Rasters: real pixels, synthetic dates / SCL (see world.py)."""
from __future__ import annotations

import csv
import os
import threading

import numpy as np
import pytest
from osgeo import gdal

from sentinel_landslide.core.errors import Cancelled
from sentinel_landslide.fetch.errors import CatalogError, NoItems, TokenExpired, UncalibratedSAR
from sentinel_landslide.fetch.run import FetchOptions, run_fetch

from .servers import FileServer, QueryProxy, StacServer, free_port
from .world import EVENT, S1_EXPECTED, S2_EXPECTED


def opts(world, out, url, **kw):
    return FetchOptions(extent=world.extent, event=EVENT, output_folder=str(out), catalog="custom",
                        catalog_url=url, token_url="", post_days=15, pre_days=20, max_cloud=20, **kw)


def rows_of(path):
    with open(path, encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_selection_mosaic_and_range_reads(world, files, stac, tmp_path):
    n0 = len(files.log)
    res = run_fetch(opts(world, tmp_path / "out", stac.url))
    log = "\n".join(res.log)
    assert sorted(os.listdir(tmp_path / "out")) == sorted(
        ["S2.tif", "S2_MASK.tif", "S1_DESC_POST.tif", "S1_DESC_PRE.tif", "S1_ASC_POST.tif", "S1_ASC_PRE.tif",
         "items.csv"])
    rows = rows_of(res.items_csv)
    s2 = [r for r in rows if r["role"] == "S2"]
    # least cloud over the area (2%), although its scene metadata says 85% and 2024-08-01 says 3%
    assert {r["datetime"][:10] for r in s2} == {S2_EXPECTED}
    assert len(s2) == 2 and {r["id"][-5:] for r in s2} == {"46QNA", "46QNB"}  # the two granules
    assert float(s2[0]["cloud_over_area_pct"]) == pytest.approx(2.0, abs=0.6)
    for role, short in S1_EXPECTED.items():
        (r,) = [r for r in rows if r["role"] == role]
        assert r["id"] == world.s1_id(short), role
        assert r["collection"] == "sentinel-1-rtc"
    assert "S1 descending rule" in log and "orbit 77" in log  # the nearer pre scene on another orbit, named
    assert "relative orbit 41) skipped" in log
    assert "metadata says 85%" in log
    # S2: one mosaic equal to the real pixels over the whole area (both granules contribute)
    ds = gdal.Open(res.outputs["S2"])
    gt = ds.GetGeoTransform()
    assert ds.RasterCount == 4 and [ds.GetRasterBand(i).GetDescription() for i in (1, 2, 3, 4)] == \
        ["B04", "B03", "B02", "B08"]
    c0, r0 = int(round((gt[0] - world.s2_gt[0]) / 10)), int(round((world.s2_gt[3] - gt[3]) / 10))
    want = world.s2_full[:, r0:r0 + ds.RasterYSize, c0:c0 + ds.RasterXSize]
    got = ds.ReadAsArray()
    np.testing.assert_array_equal(got, want)
    assert (got[:, :100] > 0).mean() > 0.9 and (got[:, -100:] > 0).mean() > 0.9  # north and south granule
    assert ds.GetMetadata("IMAGE_STRUCTURE").get("LAYOUT") == "COG"
    # S1: the chosen item's pixels (linear power), VV and VH
    for role, short in S1_EXPECTED.items():
        d = gdal.Open(res.outputs[role])
        g = d.GetGeoTransform()
        c, r = int(round((g[0] - world.s1_gt[0]) / 10)), int(round((world.s1_gt[3] - g[3]) / 10))
        exp = world.s1_pixels[short][:, r:r + d.RasterYSize, c:c + d.RasterXSize]
        np.testing.assert_allclose(d.ReadAsArray(), exp, rtol=1e-6, equal_nan=True)
    # the /vsicurl/ path: range requests, and far fewer bytes than the files hold
    served = files.files_log()[n0:]
    ranged = [e for e in served if e[0] == "GET" and e[2]]
    assert ranged and all(e[3] == 206 for e in ranged)
    assert not [e for e in served if e[0] == "GET" and not e[2]]  # never a whole file
    read = {}
    for e in served:
        name = e[1].split("?")[0].lstrip("/")
        read[name] = read.get(name, 0) + e[4]
    bands = [k for k in read if k.startswith("S2_")]
    assert len(bands) == 8  # 4 bands x 2 granules, read once each
    # the area is ~13% of a granule: its blocks (256 x 256) and the header, never the whole file
    assert sum(read[k] for k in bands) < 0.4 * sum(world.file_sizes[k] for k in bands)


def test_server_side_switch_gives_the_same_selection(world, stac, tmp_path):
    """rustac's in-memory server offers neither query nor filter: both settings filter on the client
    and choose the same items (the log says which path ran)."""
    a = run_fetch(opts(world, tmp_path / "a", stac.url, sources=("S1_DESC", "S1_ASC")))
    b = run_fetch(opts(world, tmp_path / "b", stac.url, sources=("S1_DESC", "S1_ASC"), server_filter=False))
    assert [r["id"] for r in rows_of(a.items_csv)] == [r["id"] for r in rows_of(b.items_csv)]
    assert "neither the query nor the filter extension" in "\n".join(a.log)


def test_query_extension_path_gives_the_same_selection(world, stac, tmp_path):
    """Through a server offering the query extension the orbit direction is sent as a query (the
    server filters), and the chosen items equal those of client-side filtering."""
    proxy = QueryProxy(stac.url)
    try:
        srv = run_fetch(opts(world, tmp_path / "a", proxy.url, sources=("S1_DESC", "S1_ASC")))
        assert {"sat:orbit_state": {"eq": "descending"}} in proxy.queries
        assert {"sat:orbit_state": {"eq": "ascending"}} in proxy.queries
        assert "server-side with the query extension" in "\n".join(srv.log)
        n = len(proxy.queries)
        cli = run_fetch(opts(world, tmp_path / "b", proxy.url, sources=("S1_DESC", "S1_ASC"), server_filter=False))
        assert len(proxy.queries) == n  # switched off: no query sent
    finally:
        proxy.stop()
    assert [r["id"] for r in rows_of(srv.items_csv)] == [r["id"] for r in rows_of(cli.items_csv)]


def test_cache_rerun_makes_no_request(world, tmp_path):
    files = FileServer(world.root / "files")
    cols, items = world.catalog(files.url)
    stac = StacServer(tmp_path / "stac", cols, items)
    try:
        o = opts(world, tmp_path / "one", stac.url, cache_folder=str(tmp_path / "cache"))
        first = run_fetch(o)
        n = len(files.log)
        assert n > 0
        stac.stop()  # any catalog request now fails
        o.output_folder = str(tmp_path / "two")
        second = run_fetch(o)
        assert len(files.log) == n  # not one request to the file server
        assert second.from_cache and "no network access" in second.log[2]
        assert rows_of(second.items_csv) == rows_of(first.items_csv)
        for role, p in first.outputs.items():
            np.testing.assert_array_equal(gdal.Open(second.outputs[role]).ReadAsArray(),
                                          gdal.Open(p).ReadAsArray())
    finally:
        stac.stop()
        files.stop()


def test_unreachable_catalog(world, tmp_path):
    with pytest.raises(CatalogError, match="could not be reached"):
        run_fetch(opts(world, tmp_path / "o", f"http://127.0.0.1:{free_port()}"))
    assert os.listdir(tmp_path / "o") == []


def test_no_items_in_the_window(world, stac, tmp_path):
    o = opts(world, tmp_path / "o", stac.url, sources=("S2",))
    o.event = "2023-01-01"
    with pytest.raises(NoItems, match="No Sentinel-2 L2A item"):
        run_fetch(o)
    o.event, o.max_cloud = EVENT, 1.0  # the clearest has 2% cloud over the area
    with pytest.raises(NoItems, match="at most 1% cloud"):
        run_fetch(o)
    assert os.listdir(tmp_path / "o") == []


def test_uncalibrated_sar_only_is_refused(world, files, tmp_path):
    cols, items = world.catalog(files.url, collections=("sentinel-2-l2a", "sentinel-1-grd"))
    stac = StacServer(tmp_path / "stac", cols, items)
    try:
        with pytest.raises(UncalibratedSAR, match="calibrated, terrain-corrected"):
            run_fetch(opts(world, tmp_path / "o", stac.url))
    finally:
        stac.stop()
    assert os.listdir(tmp_path / "o") == []


def test_signed_urls_and_expired_token(world, tmp_path):
    good = FileServer(world.root / "files", token="fresh")
    bad = FileServer(world.root / "files", token="fresh", issue_token="stale")
    cols, items = world.catalog(good.url, collections=("sentinel-1-rtc",))
    stac = StacServer(tmp_path / "stac", cols, items)
    try:
        o = opts(world, tmp_path / "ok", stac.url, sources=("S1_DESC",))
        o.token_url = good.url + "/token"
        res = run_fetch(o)
        assert {"S1_DESC_POST", "S1_DESC_PRE"} == set(res.outputs)
        assert any(e[1].startswith("/token/sentinel-1-rtc") for e in good.log)
        assert all("sig=fresh" in e[1] for e in good.files_log())
        o = opts(world, tmp_path / "ko", stac.url, sources=("S1_DESC",))
        o.token_url = bad.url + "/token"  # hands out a token the file server refuses (403)
        with pytest.raises(TokenExpired, match="token has expired"):
            run_fetch(o)
        assert os.listdir(tmp_path / "ko") == []
    finally:
        stac.stop()
        good.stop()
        bad.stop()


def test_cancel_mid_download_leaves_nothing(world, tmp_path):
    files = FileServer(world.root / "files", delay=0.02)  # slow enough to cancel in the middle
    cols, items = world.catalog(files.url)
    stac = StacServer(tmp_path / "stac", cols, items)
    flag = threading.Event()
    seen = []

    def progress(frac, msg):
        seen.append(frac)
        if len(seen) == 3:  # the third SCL window is in: stop
            flag.set()
    try:
        with pytest.raises(Cancelled):
            run_fetch(opts(world, tmp_path / "o", stac.url), progress=progress, is_cancelled=flag.is_set)
    finally:
        stac.stop()
        files.stop()
    assert len(seen) == 3
    assert os.listdir(tmp_path / "o") == []


def test_missing_pystac_client_is_named_with_the_pip_command(world, tmp_path, monkeypatch):
    """Without pystac-client the fetch modules still import (detect never needs them) and a run
    says what is missing and how to install it."""
    import sys

    from sentinel_landslide.fetch.errors import MissingPackage

    monkeypatch.setitem(sys.modules, "pystac_client", None)  # import now fails as if not installed
    with pytest.raises(MissingPackage, match=r"pystac-client.*\n.*-m sentinel_landslide.deps install --fetch"):
        run_fetch(opts(world, tmp_path / "o", "http://127.0.0.1:9"))
    assert os.listdir(tmp_path / "o") == []
