"""A small STAC world for the fetch tests, built from real rasters of ../shared/data.

- Sentinel-2 bands: REAL pixels of scenes/chattogram_s2_rgbn_epsg4326.tif (Chattogram), warped to
  UTM 46N at 10 m and cut into two overlapping granules (north, south) as COGs.  The acquisition
  DATES are SYNTHETIC (the same real pixels stand for every date).
- SCL (S2_MASK): SYNTHETIC per date and granule (20 m), with cloud planted where each date needs it.
- Sentinel-1: REAL backscatter of s1/sen1floods11_spain_7370579_vv_vh_db_epsg4326.tif (Murcia, dB)
  converted to linear power, RELOCATED onto the area's footprint (UTM 46N, 10 m) and rolled by a
  different number of rows per item so every item's pixels differ; dates and orbits SYNTHETIC.

Event: 2024-07-30 (a date: the event day belongs to neither window).  The rules pick
S2 2024-08-04 (both granules: one mosaic), S1 descending post D1 / pre D3 (orbit 150, not the nearer
orbit-77 scene), S1 ascending post A2 / pre A5 (orbit 114: the nearest post, orbit 41, has no pre)."""
from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
from osgeo import gdal, osr

gdal.UseExceptions()

EVENT = "2024-07-30"
EPSG = 32646
# the area of interest (UTM 46N), straddling the two granules' seam
COG = ["COMPRESS=DEFLATE", "BLOCKSIZE=256"]

S2_DATES = {  # date -> (cloud fraction planted over the area, scene metadata eo:cloud_cover)
    "2024-07-27": (0.0, 0.0),   # before the event: not post-event
    "2024-07-30": (0.0, 0.0),   # the event day: neither
    "2024-08-01": (0.5, 3.0),   # nearest, says 3% for the scene, half the area cloudy
    "2024-08-04": (0.02, 85.0), # the clearest over the area, cloudy elsewhere: metadata says 85%
    "2024-08-09": (0.2, 8.0),
}
S2_EXPECTED = "2024-08-04"

S1_ITEMS = [  # id, direction, relative orbit, datetime
    ("D0", "descending", 150, "2024-07-30T12:00:00Z"),  # event day: neither
    ("D1", "descending", 150, "2024-08-01T23:50:00Z"),
    ("D2", "descending", 77, "2024-07-28T23:40:00Z"),
    ("D3", "descending", 150, "2024-07-20T23:50:00Z"),
    ("D4", "descending", 150, "2024-07-08T23:50:00Z"),
    ("D5", "descending", 150, "2024-08-13T23:50:00Z"),
    ("D6", "descending", 77, "2024-08-09T23:40:00Z"),
    ("A1", "ascending", 41, "2024-07-31T11:50:00Z"),
    ("A2", "ascending", 114, "2024-08-03T11:40:00Z"),
    ("A3", "ascending", 114, "2024-07-15T11:40:00Z"),
    ("A5", "ascending", 114, "2024-07-27T11:40:00Z"),
    ("A6", "ascending", 41, "2024-05-01T11:50:00Z"),  # orbit 41 pre, outside the pre window
]
S1_EXPECTED = {"S1_DESC_POST": "D1", "S1_DESC_PRE": "D3", "S1_ASC_POST": "A2", "S1_ASC_PRE": "A5"}
GRD_ITEMS = [("G1", "descending", 150, "2024-07-31T23:50:00Z"), ("G2", "ascending", 114, "2024-07-31T11:40:00Z"),
             ("G3", "descending", 150, "2024-07-19T23:50:00Z"), ("G4", "ascending", 114, "2024-07-26T11:40:00Z")]


def _lonlat_polygon(bounds):
    x0, y0, x1, y1 = bounds
    s, t = osr.SpatialReference(), osr.SpatialReference()
    s.ImportFromEPSG(EPSG)
    t.ImportFromEPSG(4326)
    for r in (s, t):
        r.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    ct = osr.CoordinateTransformation(s, t)
    ring = [ct.TransformPoint(x, y)[:2] for x, y in ((x0, y0), (x1, y0), (x1, y1), (x0, y1), (x0, y0))]
    lons, lats = [p[0] for p in ring], [p[1] for p in ring]
    return {"type": "Polygon", "coordinates": [[list(p) for p in ring]]}, [min(lons), min(lats), max(lons), max(lats)]


def _collection(cid):
    return {"type": "Collection", "stac_version": "1.0.0", "id": cid, "description": f"{cid} (test, synthetic)",
            "license": "other", "links": [],
            "extent": {"spatial": {"bbox": [[-180, -90, 180, 90]]}, "temporal": {"interval": [[None, None]]}}}


def _item(iid, coll, when, bounds, props, assets):
    geom, bbox = _lonlat_polygon(bounds)
    return {"type": "Feature", "stac_version": "1.0.0", "id": iid, "collection": coll, "geometry": geom,
            "bbox": bbox, "properties": {"datetime": when, "proj:epsg": EPSG, **props}, "links": [],
            "assets": {k: {"href": v, "type": "image/tiff; application=geotiff; profile=cloud-optimized"}
                       for k, v in assets.items()}}


def _write(path, arrays, gt, dtype, nodata):
    mem = gdal.GetDriverByName("MEM").Create("", arrays[0].shape[1], arrays[0].shape[0], len(arrays), dtype)
    mem.SetGeoTransform(gt)
    mem.SetProjection(f"EPSG:{EPSG}")
    for i, a in enumerate(arrays, 1):
        b = mem.GetRasterBand(i)
        b.WriteArray(a)
        b.SetNoDataValue(nodata)
    gdal.Translate(str(path), mem, format="COG", creationOptions=COG)


class World:
    def __init__(self, root: Path, s2_src: Path, s1_src: Path):
        self.root = root
        files = root / "files"
        files.mkdir(parents=True)
        full = gdal.Warp("", str(s2_src), format="MEM", dstSRS=f"EPSG:{EPSG}", xRes=10, yRes=10,
                         targetAlignedPixels=True, resampleAlg="near", srcNodata=0, dstNodata=0)
        gt = full.GetGeoTransform()
        self.s2_full = full.ReadAsArray()  # (4, rows, cols): the real pixels on the output-like grid
        self.s2_gt = gt
        rows, cols = full.RasterYSize, full.RasterXSize
        x0, y_top = gt[0], gt[3]
        # two granules: north rows [0, 1100), south rows [1000, rows) (they overlap like MGRS tiles)
        self.granules = {"46QNA": (0, 1100), "46QNB": (1000, rows)}
        # the area: rows 900-1250 straddle the seam; cols 300-700
        self.area = (x0 + 300 * 10, y_top - 1250 * 10, x0 + 700 * 10, y_top - 900 * 10)
        self.extent = (*self.area, f"EPSG:{EPSG}")
        self.assets_rel = {}
        for tile, (r0, r1) in self.granules.items():
            ggt = (x0, 10, 0, y_top - r0 * 10, 0, -10)
            for b, name in enumerate(("B04", "B03", "B02", "B08")):
                _write(files / f"S2_{tile}_{name}.tif", [self.s2_full[b, r0:r1]], ggt, gdal.GDT_UInt16, 0)
        self.items, self.rtc, self.grd = [], [], []
        self.bytes_total = {}
        rng = np.random.default_rng(5)
        for date, (cloud, meta) in S2_DATES.items():
            for tile, (r0, r1) in self.granules.items():
                h, w = (r1 - r0 + 1) // 2, (cols + 1) // 2
                scl = np.full((h, w), 4, np.uint8)  # vegetation
                scl[rng.random((h, w)) < 0.03] = 6  # water speckle
                # cloud outside the area to make the scene metadata high where asked
                if meta > 50:
                    scl[:, (700 // 2) + 5:] = 9
                    scl[: max(0, (900 - r0) // 2 - 5), :] = 9
                # cloud over the area: the first `cloud` fraction of the area's columns (20 m pixels)
                ar0, ar1 = max(0, (900 - r0) // 2), max(0, min(h, (1250 - r0) // 2))
                ncol = int(round(cloud * 200))
                if ar1 > ar0 and ncol:
                    scl[ar0:ar1, 150:150 + ncol] = 9 if cloud > 0.05 else 3
                name = f"SCL_{date}_{tile}.tif"
                _write(files / name, [scl], (x0, 20, 0, y_top - r0 * 10, 0, -20), gdal.GDT_Byte, 0)
                iid = f"S2A_MSIL2A_{date.replace('-', '')}T040551_T{tile}"
                assets = {b: f"{{FILES}}/S2_{tile}_{b}.tif" for b in ("B04", "B03", "B02", "B08")}
                assets["SCL"] = f"{{FILES}}/{name}"
                bounds = (x0, y_top - r1 * 10, x0 + cols * 10, y_top - r0 * 10)
                self.items.append(_item(iid, "sentinel-2-l2a", f"{date}T04:05:51Z", bounds,
                                        {"platform": "sentinel-2a", "eo:cloud_cover": meta, "s2:mgrs_tile": tile,
                                         "s2:datatake_id": f"GS2A_{date.replace('-', '')}T040551_047"}, assets))
        # Sentinel-1: real dB -> linear power, relocated onto the area
        ds = gdal.Open(str(s1_src))
        db = ds.ReadAsArray().astype(np.float32)  # (2, 512, 512)
        power = np.where(np.isfinite(db), 10.0 ** (db / 10.0), np.nan).astype(np.float32)
        cx, cy = (self.area[0] + self.area[2]) / 2, (self.area[1] + self.area[3]) / 2
        s1_gt = (cx - 2560, 10, 0, cy + 2560, 0, -10)
        s1_bounds = (cx - 2560, cy - 2560, cx + 2560, cy + 2560)
        self.s1_gt, self.s1_pixels = s1_gt, {}
        for k, (iid, direction, orbit, when) in enumerate(S1_ITEMS + GRD_ITEMS):
            coll = "sentinel-1-grd" if iid.startswith("G") else "sentinel-1-rtc"
            rolled = np.roll(power, 7 * (k + 1), axis=1)
            self.s1_pixels[iid] = rolled
            assets = {}
            for p, pol in enumerate(("vv", "vh")):
                name = f"S1_{iid}_{pol}.tif"
                _write(files / name, [rolled[p]], s1_gt, gdal.GDT_Float32, float("nan"))
                assets[pol] = f"{{FILES}}/{name}"
            it = _item(f"S1A_IW_{iid}_{when[:10].replace('-', '')}", coll, when, s1_bounds,
                       {"platform": "sentinel-1a", "sat:orbit_state": direction, "sat:relative_orbit": orbit,
                        "sar:polarizations": ["VV", "VH"], "sar:instrument_mode": "IW"}, assets)
            (self.grd if coll == "sentinel-1-grd" else self.rtc).append(it)
        self.file_sizes = {p.name: p.stat().st_size for p in files.iterdir()}

    def s1_id(self, short):
        return next(i["id"] for i in self.rtc + self.grd if f"_{short}_" in i["id"])

    def catalog(self, base_url: str, collections=("sentinel-2-l2a", "sentinel-1-rtc", "sentinel-1-grd")):
        """(collections, items) with asset hrefs on base_url."""
        def fix(it):
            it = dict(it, assets={k: dict(v, href=v["href"].replace("{FILES}", base_url))
                                  for k, v in it["assets"].items()})
            return it
        items = [fix(i) for i in self.items + self.rtc + self.grd if i["collection"] in collections]
        return [_collection(c) for c in collections], items


def event_datetime():
    return dt.datetime(2024, 7, 30, tzinfo=dt.timezone.utc)
