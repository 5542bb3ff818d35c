"""SYNTHETIC Sentinel-1/2 scenes with planted landslide-like scars, for the demo, the
tests and the benchmark.  Nothing here is real data and outputs say so in their
metadata (``SYNTHETIC=yes``).

The scene is a vegetated hillside (smooth texture) with elongated bare-soil scars: bright
in red/green/blue, lower NIR, and a post-event backscatter change in both SAR orbits.
S2 is written on a UTM grid at 10 m with the +1000 offset; the SAR layers deliberately
use other grids (EPSG:4326 for descending, 20 m UTM for ascending), so every run of the
demo exercises reprojection and resampling.  Written in row blocks: memory stays
bounded for a full 10,980 x 10,980 px tile.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from osgeo import gdal, osr

gdal.UseExceptions()

EPSG = 32646  # UTM 46N (Chattogram hills)
ORIGIN = (380000.0, 2480000.0)


@dataclass
class Scar:
    cx: float
    cy: float
    a: float  # half length (m)
    b: float  # half width (m)
    theta: float

    def polygon(self, n: int = 24):
        pts = []
        for k in range(n + 1):
            t = 2 * math.pi * k / n
            x, y = self.a * math.cos(t), self.b * math.sin(t)
            pts.append((self.cx + x * math.cos(self.theta) - y * math.sin(self.theta),
                        self.cy + x * math.sin(self.theta) + y * math.cos(self.theta)))
        return pts


def _scars(width_m, height_m, rng, density_per_km2=0.3):
    n = max(3, int(density_per_km2 * width_m * height_m / 1e6))
    out = []
    for _ in range(n):
        out.append(Scar(ORIGIN[0] + rng.uniform(0.05, 0.95) * width_m,
                        ORIGIN[1] - rng.uniform(0.05, 0.95) * height_m,
                        rng.uniform(90, 260), rng.uniform(25, 70), rng.uniform(0, math.pi)))
    return out


def _smooth_noise(rng, h, w, cell=16):
    lo = rng.standard_normal((h // cell + 2, w // cell + 2)).astype(np.float32)
    yy = np.linspace(0, h / cell, h, dtype=np.float32)
    xx = np.linspace(0, w / cell, w, dtype=np.float32)
    y0, x0 = yy.astype(int), xx.astype(int)
    fy, fx = (yy - y0)[:, None], (xx - x0)[None, :]
    a, b = lo[y0][:, x0], lo[y0][:, x0 + 1]
    c, d = lo[y0 + 1][:, x0], lo[y0 + 1][:, x0 + 1]
    return a * (1 - fy) * (1 - fx) + b * (1 - fy) * fx + c * fy * (1 - fx) + d * fy * fx


# Appearance of the synthetic scene.  Landslide tiles in the real competition table are
# steeper terrain: brighter SAR (desc VV mean -7.4 vs -10.0 dB) and higher, more varied
# NIR than landslide-free tiles; scars themselves are bright bare soil with a post-event
# backscatter change.  The hillslope term reproduces that context around each scar.
LOOK: dict[str, Any] = {  # mixed tuples and numbers
    "veg": (1450, 1650, 1580, 3050), "soil": (2700, 2650, 2450, 2900),
    "amp": (0.07, 0.07, 0.07, 0.16), "slope_nir": 700.0, "slope_db": 6.0, "slope_radius_m": 450.0,
    "terrain_db": 6.0, "change_desc": (3.5, 3.0), "change_asc": (0.5, 0.5), "looks": 3.0,
}


# Another region for domain-shift experiments (training/adapt.py, scripts/adapt_demo.py):
# darker, redder soil, denser vegetation, a radiometric offset on S2 and SAR, weaker scar
# change.  Pass it (or any subset of LOOK's keys, plus s2_offset_dn / sar_offset_db) as ``look``.
OTHER_REGION = {
    "veg": (1250, 1500, 1380, 3700), "soil": (2200, 1900, 1650, 3000), "slope_nir": 300.0,
    "change_desc": (2.0, 1.6), "s2_offset_dn": 250.0, "sar_offset_db": -2.5,
}


def _scar_fields(scars, X, Y, r=None):
    """(scar mask, hillslope weight 0..1) at UTM coordinates X, Y."""
    m = np.zeros(X.shape, dtype=bool)
    slope = np.zeros(X.shape, dtype=np.float32)
    r = LOOK["slope_radius_m"] if r is None else r
    x0, x1, y0, y1 = X.min(), X.max(), Y.min(), Y.max()
    for s in scars:
        if s.cx + s.a + 2 * r < x0 or s.cx - s.a - 2 * r > x1 or s.cy + s.a + 2 * r < y0 or s.cy - s.a - 2 * r > y1:
            continue
        dx, dy = X - s.cx, Y - s.cy
        u = dx * math.cos(s.theta) + dy * math.sin(s.theta)
        v = -dx * math.sin(s.theta) + dy * math.cos(s.theta)
        m |= (u / s.a) ** 2 + (v / s.b) ** 2 <= 1.0
        slope = np.maximum(slope, np.exp(-(dx * dx + dy * dy) / (r * r)).astype(np.float32))
    return m, slope


def _create(path, w, h, bands, dtype, wkt, gt, nodata, desc):
    drv = gdal.GetDriverByName("GTiff")
    ds = drv.Create(str(path), w, h, bands, dtype, options=["TILED=YES", "COMPRESS=DEFLATE", "PREDICTOR=2", "BIGTIFF=IF_SAFER"])
    ds.SetProjection(wkt)
    ds.SetGeoTransform(gt)
    ds.SetMetadata({"SYNTHETIC": "yes", "DESCRIPTION": desc})
    for b in range(bands):
        ds.GetRasterBand(b + 1).SetNoDataValue(nodata)
    return ds


def cloud_columns(width: int, cloud: float) -> int:
    """The synthetic cloud covers the S2 columns [0, cloud_columns) (full height)."""
    return int(round(width * cloud))


def make_scene(folder: str | Path, width: int = 640, height: int = 640, seed: int = 7,
               sar: bool = True, block_rows: int = 512, sar_native: bool = False, cloud: float = 0.0,
               look: dict | None = None) -> dict:
    """Write s2.tif (R,G,B,NIR uint16, +1000 offset), s1_{desc,asc}_{post,pre}.tif
    (VV,VH float32 dB) and scars.geojson (the planted truth, UTM) into ``folder``.

    ``sar_native`` writes SAR on the S2 grid (the benchmark's already-aligned case);
    otherwise descending is EPSG:4326 and ascending 20 m UTM, to exercise alignment.

    ``cloud`` > 0: a SYNTHETIC cloud over that fraction of the width (left side, full
    height; scars under it stay in the truth): bright, flat S2 pixels there, and
    ``scl.tif``, a Sentinel-2 scene classification at 20 m in EPSG:4326 (another CRS and
    pixel size than S2): class 9 (cloud high probability) under the cloud, 8 on a 60 m
    fringe, 3 (cloud shadow) in a 100 m strip beside it, 4 (vegetation) elsewhere.

    ``look`` overrides entries of LOOK (e.g. OTHER_REGION: another region's appearance)."""
    L = dict(LOOK, **(look or {}))
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    res = 10.0
    scars = _scars(width * res, height * res, rng)
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(EPSG)
    utm = srs.ExportToWkt()
    gt = (ORIGIN[0], res, 0, ORIGIN[1], 0, -res)
    paths = {"S2": folder / "s2.tif"}
    s2 = _create(paths["S2"], width, height, 4, gdal.GDT_UInt16, utm, gt, 0,
                 "SYNTHETIC Sentinel-2 R,G,B,NIR, reflectance x 10000 + 1000 offset")
    veg, soil, amp = (np.array(L[k], np.float32) for k in ("veg", "soil", "amp"))
    for r0 in range(0, height, block_rows):
        h = min(block_rows, height - r0)
        brng = np.random.default_rng([seed, r0])
        ys = ORIGIN[1] - (r0 + np.arange(h) + 0.5) * res
        xs = ORIGIN[0] + (np.arange(width) + 0.5) * res
        gx, gy = np.meshgrid(xs, ys)
        m, slope = _scar_fields(scars, gx, gy, L["slope_radius_m"])
        tex = _smooth_noise(brng, h, width)
        fine = _smooth_noise(brng, h, width, 3)
        bright = brng.random((h, width)) < 0.004  # houses, roads, rock
        for b in range(4):
            v = veg[b] * (1 + amp[b] * tex + 0.5 * amp[b] * fine) + brng.normal(0, 30, (h, width))
            v = np.where(bright, v + 700, v)
            if b == 3:  # steep forested slopes around scars: more NIR
                v = v + L["slope_nir"] * slope * (1 + tex)
            v = np.where(m, soil[b] * (1 + 0.06 * tex) + brng.normal(0, 120, (h, width)), v) + L.get("s2_offset_dn", 0.0)
            if cloud > 0:  # an opaque cloud: bright, nearly flat, NIR about the visible
                ncol = cloud_columns(width, cloud)
                v[:, :ncol] = (7200 + 300 * b // 3) * (1 + 0.03 * tex[:, :ncol])
            s2.GetRasterBand(b + 1).WriteArray(np.clip(v, 1, 65535).astype(np.uint16), 0, r0)
    s2 = None

    if sar:
        wgs = osr.SpatialReference()
        wgs.ImportFromEPSG(4326)
        wgs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
        srs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
        ct = osr.CoordinateTransformation(srs, wgs)
        grids = {}
        if sar_native:
            grids = {o: (utm, gt, width, height) for o in ("desc", "asc")}
        else:
            b = ct.TransformBounds(ORIGIN[0], ORIGIN[1] - height * res, ORIGIN[0] + width * res, ORIGIN[1], 21)
            d = 0.00009  # ~10 m in degrees
            grids["desc"] = (wgs.ExportToWkt(), (b[0], d, 0, b[3], 0, -d),
                             int(math.ceil((b[2] - b[0]) / d)), int(math.ceil((b[3] - b[1]) / d)))
            grids["asc"] = (utm, (ORIGIN[0], 20.0, 0, ORIGIN[1], 0, -20.0), width // 2, height // 2)
        base = {"desc": np.array([-10.0, -16.4], np.float32), "asc": np.array([-10.6, -17.0], np.float32)}
        change = {"desc": np.array(L["change_desc"], np.float32), "asc": np.array(L["change_asc"], np.float32)}
        inv = osr.CoordinateTransformation(wgs, srs)
        for orbit, (wkt, g, w, h_all) in grids.items():
            for date in ("post", "pre"):
                role = f"S1_{orbit.upper()}_{date.upper()}"
                paths[role] = folder / f"s1_{orbit}_{date}.tif"
                ds = _create(paths[role], w, h_all, 2, gdal.GDT_Float32, wkt, g, float("nan"),
                             f"SYNTHETIC Sentinel-1 {orbit} {date}-event VV,VH dB")
                for r0 in range(0, h_all, block_rows):
                    h = min(block_rows, h_all - r0)
                    brng = np.random.default_rng([seed, r0, 1 + (orbit == "asc"), 1 + (date == "pre")])
                    xs = g[0] + (np.arange(w) + 0.5) * g[1]
                    ys = g[3] + (r0 + np.arange(h) + 0.5) * g[5]
                    X, Y = np.meshgrid(xs, ys)
                    if wkt != utm:  # scars live in UTM: map this block's cell centres there
                        pts = np.array(inv.TransformPoints(np.c_[X.ravel(), Y.ravel()]))
                        X, Y = pts[:, 0].reshape(X.shape), pts[:, 1].reshape(X.shape)
                    m, slope = _scar_fields(scars, X, Y, L["slope_radius_m"])
                    # terrain (slopes facing or away from the sensor) is shared by both dates;
                    # speckle is not: log of a multi-look gamma variable, ~2 dB with a dark tail
                    trng = np.random.default_rng([seed, r0, 99, orbit == "asc"])
                    tex = _smooth_noise(trng, h, w, 6) + 0.6 * _smooth_noise(trng, h, w, 2)
                    for k in range(2):
                        speckle = 10 * np.log10(brng.gamma(L["looks"], 1 / L["looks"], (h, w)))
                        v = base[orbit][k] + L["terrain_db"] * tex + speckle + L["slope_db"] * slope + L.get("sar_offset_db", 0.0)
                        if date == "post":
                            v = v + np.where(m, change[orbit][k], 0.0)
                        ds.GetRasterBand(k + 1).WriteArray(v.astype(np.float32), 0, r0)
                ds = None
    if cloud > 0:
        paths["S2_MASK"] = folder / "scl.tif"
        _write_scl(paths["S2_MASK"], width, height, res, cloud)
    truth = {"type": "FeatureCollection", "name": "synthetic_scars",
             "crs": {"type": "name", "properties": {"name": f"urn:ogc:def:crs:EPSG::{EPSG}"}},
             "features": [{"type": "Feature", "properties": {"id": i, "synthetic": "yes"},
                           "geometry": {"type": "Polygon", "coordinates": [s.polygon()]}}
                          for i, s in enumerate(scars)]}
    (folder / "scars.geojson").write_text(json.dumps(truth))
    paths["truth"] = folder / "scars.geojson"
    return {k: str(v) for k, v in paths.items()}


def _write_scl(path: Path, width: int, height: int, res: float, cloud: float) -> None:
    """The SYNTHETIC SCL of ``make_scene``: 20 m pixels in EPSG:4326 covering the scene."""
    utm = osr.SpatialReference()
    utm.ImportFromEPSG(EPSG)
    utm.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    wgs = osr.SpatialReference()
    wgs.ImportFromEPSG(4326)
    wgs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    b = osr.CoordinateTransformation(utm, wgs).TransformBounds(
        ORIGIN[0] - 100, ORIGIN[1] - height * res - 100, ORIGIN[0] + width * res + 100, ORIGIN[1] + 100, 21)
    d = 0.00018  # ~20 m
    w, h = int(math.ceil((b[2] - b[0]) / d)), int(math.ceil((b[3] - b[1]) / d))
    ds = gdal.GetDriverByName("GTiff").Create(str(path), w, h, 1, gdal.GDT_Byte, options=["COMPRESS=DEFLATE"])
    ds.SetProjection(wgs.ExportToWkt())
    ds.SetGeoTransform((b[0], d, 0, b[3], 0, -d))
    ds.SetMetadata({"SYNTHETIC": "yes", "DESCRIPTION": "SYNTHETIC Sentinel-2 L2A scene classification (SCL)"})
    band = ds.GetRasterBand(1)
    band.SetDescription("SCL")
    xs = b[0] + (np.arange(w) + 0.5) * d
    ys = b[3] - (np.arange(h) + 0.5) * d
    X, Y = np.meshgrid(xs, ys)
    pts = np.array(osr.CoordinateTransformation(wgs, utm).TransformPoints(np.c_[X.ravel(), Y.ravel()]))
    ux = pts[:, 0].reshape(X.shape) - ORIGIN[0]  # metres east of the scene's west edge
    edge = cloud_columns(width, cloud) * res
    scl = np.full(X.shape, 4, np.uint8)
    scl[(ux >= edge) & (ux < edge + 100)] = 3
    scl[ux < edge] = 8
    scl[ux < edge - 60] = 9
    band.WriteArray(scl)
    ds = None


# ---- planted scars of controlled size and contrast (the detection-limit benchmark) ----

TILE_PX = 64  # the bundled packages' patch: 64 x 64 px = 41 ha at 10 m


def scar_pixels(share: float, rng: np.random.Generator, tile_px: int = TILE_PX, aspect: float = 3.0) -> np.ndarray:
    """(tile_px, tile_px) bool: one elongated elliptical scar covering exactly
    ``round(share * tile_px**2)`` pixels (at least one), at a random place and orientation
    inside the tile.  The pixels are the ones nearest the ellipse's centre in the
    ellipse's own metric, so the count is exact whatever the discretisation."""
    n = tile_px * tile_px
    k = int(min(n, max(1, round(share * n))))
    a = math.sqrt(aspect * k / math.pi)  # half length (px) of an ellipse of k px, b = a / aspect
    lo, hi = a + 1, tile_px - 1 - a
    cx, cy = (rng.uniform(lo, hi), rng.uniform(lo, hi)) if hi > lo else (tile_px / 2, tile_px / 2)
    theta = rng.uniform(0, math.pi)
    yy, xx = np.mgrid[0:tile_px, 0:tile_px] + 0.5
    dx, dy = xx - cx, yy - cy
    u = dx * math.cos(theta) + dy * math.sin(theta)
    v = -dx * math.sin(theta) + dy * math.cos(theta)
    r2 = (u / a) ** 2 + (v * aspect / a) ** 2
    out = np.zeros(n, dtype=bool)
    out[np.argsort(r2.ravel(), kind="stable")[:k]] = True
    return out.reshape(tile_px, tile_px)


def make_planted_scene(folder: str | Path, shares, n_per_share: int, n_background: int, contrast: float = 1.0,
                       seed: int = 7, cols: int = 12, look: dict | None = None) -> dict:
    """A SYNTHETIC scene of 64 x 64 px tiles for measuring the detection limit: each of
    ``n_per_share`` tiles per share in ``shares`` holds one planted scar of exactly that
    share of the tile's pixels (``scar_pixels``); ``n_background`` tiles hold none.  Tiles
    are placed at random on a grid ``cols`` tiles wide.

    The scar is what ``make_scene`` calls a landslide in each modality, its contrast scaled
    by ``contrast`` (1 = the generator's): Sentinel-2 moves from the vegetation toward the
    bare-soil reflectance (bright R, G, B, lower NIR) by ``contrast`` of the difference;
    the post-event Sentinel-1 backscatter of both orbits rises by ``contrast`` x the
    generator's change (descending 3.5 / 3.0 dB VV / VH, ascending 0.5 / 0.5 dB), the
    pre-event scene has no scar.  Unlike ``make_scene``, no hillslope context (more NIR and
    brighter SAR around the scar) is added: only the scar itself can be detected.  All
    layers are on one UTM 10 m grid.  Writes s2.tif, s1_{desc,asc}_{post,pre}.tif and
    tiles.json ({"tiles": [[row, col, share, planted px], ...]}); returns the paths and
    ``tiles`` (the same list)."""
    L = dict(LOOK, **(look or {}))
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([seed, int(round(contrast * 1000))])
    kinds = [float(s) for s in shares for _ in range(n_per_share)] + [0.0] * n_background
    n = len(kinds)
    rows = -(-n // cols)
    ps, res = TILE_PX, 10.0
    w, h = cols * ps, rows * ps
    order = rng.permutation(rows * cols)[:n]
    scar = np.zeros((h, w), dtype=bool)
    valid = np.zeros((h, w), dtype=bool)
    tiles = []
    for share, cell in zip(kinds, order):
        r, c = divmod(int(cell), cols)
        valid[r * ps:(r + 1) * ps, c * ps:(c + 1) * ps] = True
        px = 0
        if share > 0:
            m = scar_pixels(share, rng)
            scar[r * ps:(r + 1) * ps, c * ps:(c + 1) * ps] = m
            px = int(m.sum())
        tiles.append([r, c, share, px])
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(EPSG)
    utm = srs.ExportToWkt()
    gt = (ORIGIN[0], res, 0, ORIGIN[1], 0, -res)
    paths = {"S2": folder / "s2.tif"}
    veg, soil, amp = (np.array(L[k], np.float32) for k in ("veg", "soil", "amp"))
    tex, fine = _smooth_noise(rng, h, w), _smooth_noise(rng, h, w, 3)
    bright = rng.random((h, w)) < 0.004  # houses, roads, rock
    s2 = _create(paths["S2"], w, h, 4, gdal.GDT_UInt16, utm, gt, 0,
                 f"SYNTHETIC Sentinel-2 R,G,B,NIR with planted scars (contrast {contrast:g})")
    for b in range(4):
        v = veg[b] * (1 + amp[b] * tex + 0.5 * amp[b] * fine) + rng.normal(0, 30, (h, w))
        v = np.where(bright, v + 700, v)
        bare = soil[b] * (1 + 0.06 * tex) + rng.normal(0, 120, (h, w))
        v = np.where(scar, v + contrast * (bare - v), v)
        s2.GetRasterBand(b + 1).WriteArray(np.where(valid, np.clip(v, 1, 65535), 0).astype(np.uint16))
    s2 = None
    base = {"desc": np.array([-10.0, -16.4], np.float32), "asc": np.array([-10.6, -17.0], np.float32)}
    change = {"desc": np.array(L["change_desc"], np.float32), "asc": np.array(L["change_asc"], np.float32)}
    for orbit in ("desc", "asc"):
        terrain = _smooth_noise(rng, h, w, 6) + 0.6 * _smooth_noise(rng, h, w, 2)  # shared by both dates
        for date in ("post", "pre"):
            role = f"S1_{orbit.upper()}_{date.upper()}"
            paths[role] = folder / f"s1_{orbit}_{date}.tif"
            ds = _create(paths[role], w, h, 2, gdal.GDT_Float32, utm, gt, float("nan"),
                         f"SYNTHETIC Sentinel-1 {orbit} {date}-event VV,VH dB with planted scars")
            for k in range(2):
                speckle = 10 * np.log10(rng.gamma(L["looks"], 1 / L["looks"], (h, w)))
                v = base[orbit][k] + L["terrain_db"] * terrain + speckle
                if date == "post":
                    v = v + np.where(scar, contrast * change[orbit][k], 0.0)
                ds.GetRasterBand(k + 1).WriteArray(np.where(valid, v, np.nan).astype(np.float32))
            ds = None
    (folder / "tiles.json").write_text(json.dumps({"synthetic": "yes", "contrast": contrast, "tiles": tiles}))
    out: dict[str, Any] = {k: str(v) for k, v in paths.items()}
    out["tiles"] = tiles
    return out
