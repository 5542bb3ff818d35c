"""Reading the area's windows of remote COGs through GDAL's /vsicurl/ (HTTP range requests):
gdal.Warp with outputBounds on the area's grid reads only the blocks it needs, never whole scenes."""
from __future__ import annotations

import contextlib
import math
import os
import re
from dataclasses import dataclass

import numpy as np
from osgeo import gdal, osr

from ..core.errors import Cancelled
from ..engine.align import transform_bounds, utm_epsg_for
from .errors import NetworkError, TokenExpired

gdal.UseExceptions()
osr.UseExceptions()

PIXEL = 10.0
# SCL classes: 0 no data, 1 saturated/defective, 3 cloud shadow, 8/9 cloud medium/high probability,
# 10 thin cirrus; the rest (vegetation, soil, water, snow, dark area, unclassified) count as clear
SCL_NODATA = (0,)
SCL_CLOUD = (1, 3, 8, 9, 10)

GDAL_HTTP = {
    "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",  # no directory listing requests next to each file
    "GDAL_HTTP_MERGE_CONSECUTIVE_RANGES": "YES",
    "GDAL_HTTP_TIMEOUT": "60",
    "GDAL_HTTP_CONNECTTIMEOUT": "20",
    "GDAL_HTTP_MAX_RETRY": "2",
    "GDAL_HTTP_RETRY_DELAY": "1",
}


@contextlib.contextmanager
def http_config():
    old = {k: gdal.GetConfigOption(k) for k in GDAL_HTTP}
    for k, v in GDAL_HTTP.items():
        gdal.SetConfigOption(k, v)
    try:
        yield
    finally:
        for k, v in old.items():
            gdal.SetConfigOption(k, v)


@dataclass(frozen=True)
class AreaGrid:
    """The output grid: the area in the UTM zone of its centre, 10 m pixels, snapped outward."""
    epsg: int
    bounds: tuple  # xmin, ymin, xmax, ymax in the UTM CRS
    lonlat: tuple  # the area's bbox in lon/lat (for the STAC search)

    @property
    def size(self) -> tuple:
        x0, y0, x1, y1 = self.bounds
        return int(round((x1 - x0) / PIXEL)), int(round((y1 - y0) / PIXEL))

    @property
    def srs(self) -> str:
        return f"EPSG:{self.epsg}"


def area_grid(extent: tuple) -> AreaGrid:
    """extent = (xmin, ymin, xmax, ymax, crs as WKT or 'EPSG:n'; empty = EPSG:4326)."""
    x0, y0, x1, y1, crs = extent
    if not (x1 > x0 and y1 > y0):
        raise ValueError("The area is empty.")
    crs = crs or "EPSG:4326"
    lon0, lat0, lon1, lat1 = transform_bounds((x0, y0, x1, y1), crs, "EPSG:4326")
    epsg = utm_epsg_for((lon0 + lon1) / 2, (lat0 + lat1) / 2)
    u0, v0, u1, v1 = transform_bounds((x0, y0, x1, y1), crs, f"EPSG:{epsg}")
    snap = (math.floor(u0 / PIXEL) * PIXEL, math.floor(v0 / PIXEL) * PIXEL,
            math.ceil(u1 / PIXEL) * PIXEL, math.ceil(v1 / PIXEL) * PIXEL)
    return AreaGrid(epsg, snap, (lon0, lat0, lon1, lat1))


def vsicurl(href: str) -> str:
    if href.startswith(("http://", "https://")):
        return "/vsicurl/" + href
    return href  # a local file (or a GDAL path) as it is


def _gdal_error(exc, what: str, signed: bool):
    msg = str(exc)
    if re.search(r"\b403\b", msg):
        if signed:
            return TokenExpired(f"The file server refused {what} (HTTP 403): the signing token has expired or "
                                "is not valid. Run the algorithm again to get a fresh token.")
        return NetworkError(f"The file server refused {what} (HTTP 403 Forbidden): the asset needs "
                            "authorisation this catalog does not provide.")
    return NetworkError(f"Reading {what} failed: {msg.strip().splitlines()[0][:300] if msg.strip() else 'error'}")


def warp_window(hrefs: list[str], dst: str, grid: AreaGrid, dtype: int, nodata, is_cancelled=None,
                what: str = "an asset", signed: bool = False) -> str:
    """Warp the area's window of the sources (several granules: one mosaic) onto grid, as a
    tiled GeoTIFF at dst.  Nearest neighbour: values stay the measured ones."""
    def cb(_pct, _msg, _data):
        return 0 if is_cancelled and is_cancelled() else 1

    w, h = grid.size
    opts = gdal.WarpOptions(format="GTiff", outputBounds=grid.bounds, width=w, height=h, dstSRS=grid.srs,
                            outputType=dtype, dstNodata=nodata, resampleAlg="near", multithread=False,
                            creationOptions=["TILED=YES", "COMPRESS=DEFLATE"], callback=cb)
    if is_cancelled and is_cancelled():
        raise Cancelled()
    try:
        with http_config():
            ds = gdal.Warp(dst, [vsicurl(h) for h in hrefs], options=opts)
            ds = None  # noqa: F841 (flush and close)
    except RuntimeError as exc:
        _remove(dst)
        if is_cancelled and is_cancelled():
            raise Cancelled() from None
        raise _gdal_error(exc, what, signed) from None
    if is_cancelled and is_cancelled():
        _remove(dst)
        raise Cancelled()
    return dst


def _remove(path):
    with contextlib.suppress(OSError):
        os.remove(path)


def scl_fractions(path: str, strip: int = 256) -> tuple[float, float]:
    """(cloud fraction of the covered pixels, covered fraction of the area) of an SCL window,
    read in strips of rows (bounded memory whatever the area)."""
    ds = gdal.Open(path)
    band = ds.GetRasterBand(1)
    total = covered = cloudy = 0
    for y in range(0, ds.RasterYSize, strip):
        a = band.ReadAsArray(0, y, ds.RasterXSize, min(strip, ds.RasterYSize - y))
        total += a.size
        valid = ~np.isin(a, SCL_NODATA)
        covered += int(valid.sum())
        cloudy += int(np.isin(a, SCL_CLOUD).sum())
    ds = None
    return (cloudy / covered if covered else 1.0), (covered / total if total else 0.0)


def valid_fraction(path: str, strip: int = 256) -> float:
    """Fraction of the pixels of band 1 that hold data (not nodata, not NaN)."""
    ds = gdal.Open(path)
    band = ds.GetRasterBand(1)
    nd = band.GetNoDataValue()
    total = good = 0
    for y in range(0, ds.RasterYSize, strip):
        a = band.ReadAsArray(0, y, ds.RasterXSize, min(strip, ds.RasterYSize - y)).astype(np.float64)
        ok = np.isfinite(a)
        if nd is not None and not math.isnan(nd):
            ok &= a != nd
        total += a.size
        good += int(ok.sum())
    ds = None
    return good / total if total else 0.0


def write_cog(band_files: list[str], names: list[str], dst: str) -> str:
    """Stack single-band windows into one Cloud Optimized GeoTIFF with band descriptions."""
    vrt = dst + ".vrt"
    ds = gdal.BuildVRT(vrt, band_files, separate=True)
    for i, n in enumerate(names, 1):
        ds.GetRasterBand(i).SetDescription(n)
    ds = None
    try:
        out = gdal.Translate(dst, vrt, format="COG", creationOptions=["COMPRESS=DEFLATE", "BLOCKSIZE=256"])
        out = None  # noqa: F841
    finally:
        _remove(vrt)
    return dst
