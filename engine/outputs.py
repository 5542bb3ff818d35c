"""Write detection results outside QGIS: the tile grid (any OGR format) and the
probability raster (a Cloud Optimized GeoTIFF, one pixel per tile)."""
from __future__ import annotations

import dataclasses
import json
import os
import struct

import numpy as np
from osgeo import gdal, ogr, osr

from .align import InputLayer
from .detect import DetectOptions, DetectResult

gdal.UseExceptions()
ogr.UseExceptions()

# (name, kind) in output order; member probability fields are appended as p_<member>
BASE_FIELDS = (
    ("tile_id", "int"), ("row", "int"), ("col", "int"), ("prob", "real"), ("flagged", "bool"),
    ("status", "str"), ("mode", "str"), ("s2_valid", "real"), ("sar_valid", "real"), ("valid_frac", "real"),
    ("uncertainty", "real"), ("scored_by", "str"),
)
TRAILING_FIELDS = (("model", "str"), ("review", "str"), ("review_note", "str"), ("sample", "int"))
NODATA_PROB = -1.0


def member_field(name: str) -> str:
    return "p_" + name


def field_spec(result: DetectResult):
    return list(BASE_FIELDS) + [(member_field(m), "real") for m in result.members] + list(TRAILING_FIELDS)


def record_values(rec, result: DetectResult, model_name: str) -> dict:
    vals = {"tile_id": rec.tile_id, "row": rec.row, "col": rec.col, "prob": rec.prob,
            "flagged": rec.flagged, "status": rec.status, "mode": rec.mode,
            "s2_valid": rec.s2_valid, "sar_valid": rec.sar_valid, "valid_frac": round(rec.valid_frac, 4),
            "uncertainty": None if rec.uncertainty is None else round(rec.uncertainty, 4),
            "scored_by": rec.scored_by,
            "model": model_name, "review": None, "review_note": None, "sample": None}
    for m in result.members:
        vals[member_field(m)] = rec.members.get(m)
    return vals


def mode_counts_text(result: DetectResult) -> str:
    """``s2+desc+asc: 20; desc+asc: 16; nodata: 2``: tiles per mode."""
    return "; ".join(f"{k}: {v}" for k, v in result.mode_counts.items())


def _driver_for(path: str) -> str:
    ext = os.path.splitext(path)[1].lower()
    return {".gpkg": "GPKG", ".shp": "ESRI Shapefile", ".geojson": "GeoJSON", ".json": "GeoJSON",
            ".fgb": "FlatGeobuf", ".csv": "CSV"}.get(ext, "GPKG")


_POLY_HEAD = struct.pack("<BIII", 1, 3, 1, 5)  # WKB: little-endian, Polygon, 1 ring, 5 points


def write_grid(path: str, result: DetectResult, model_name: str, layer_name: str = "landslide_grid") -> str:
    drv = ogr.GetDriverByName(_driver_for(path))
    if os.path.exists(path):
        drv.DeleteDataSource(path)
    ds = drv.CreateDataSource(path)
    srs = osr.SpatialReference()
    srs.ImportFromWkt(result.grid.crs_wkt)
    lyr = ds.CreateLayer(layer_name, srs, ogr.wkbPolygon)
    types = {"int": ogr.OFTInteger, "real": ogr.OFTReal, "str": ogr.OFTString, "bool": ogr.OFTInteger}
    for name, kind in field_spec(result):
        fd = ogr.FieldDefn(name, types[kind])
        if kind == "bool":
            fd.SetSubType(ogr.OFSTBoolean)
        lyr.CreateField(fd)
    defn = lyr.GetLayerDefn()
    index = {name: defn.GetFieldIndex(name) for name, _ in field_spec(result)}
    lyr.StartTransaction()
    for rec in result.records:
        f = ogr.Feature(defn)
        for k, v in record_values(rec, result, model_name).items():
            if v is not None:
                f.SetField(index[k], int(v) if isinstance(v, bool) else v)  # by index: no name lookup
        x0, y0, x1, y1 = rec.bounds
        # the ring as WKB (little-endian polygon, 1 ring, 5 points): no WKT text to format and parse
        f.SetGeometryDirectly(ogr.CreateGeometryFromWkb(
            _POLY_HEAD + struct.pack("<10d", x0, y0, x1, y0, x1, y1, x0, y1, x0, y0)))
        lyr.CreateFeature(f)
    lyr.CommitTransaction()
    ds = None
    return path


def probability_array(result: DetectResult) -> np.ndarray:
    arr = np.full((result.n_rows, result.n_cols), NODATA_PROB, dtype=np.float32)
    for r in result.records:
        if r.prob is not None:
            arr[r.row, r.col] = r.prob
    return arr


def write_probability_raster(path: str, result: DetectResult, patch_size: int) -> str:
    """One pixel per tile (patch_size * 10 m), nodata -1, as a Cloud Optimized GeoTIFF."""
    g = result.grid
    mem = gdal.GetDriverByName("MEM").Create("", result.n_cols, result.n_rows, 1, gdal.GDT_Float32)
    mem.SetProjection(g.crs_wkt)
    mem.SetGeoTransform((g.x0, g.res * patch_size, 0, g.y0, 0, -g.res * patch_size))
    band = mem.GetRasterBand(1)
    band.SetNoDataValue(NODATA_PROB)
    band.SetDescription("landslide probability")
    band.WriteArray(probability_array(result))
    mem.SetMetadata({"THRESHOLD": f"{result.threshold:.4f}", "MODE": result.mode,
                     "MEMBERS": ",".join(result.members), "TILES_PER_MODE": mode_counts_text(result),
                     "THRESHOLDS": ",".join(f"{k}={v:.4f}" for k, v in result.thresholds.items())})
    drv = gdal.GetDriverByName("COG") or gdal.GetDriverByName("GTiff")
    drv.CreateCopy(path, mem, options=["COMPRESS=DEFLATE"] if drv.ShortName == "COG" else ["COMPRESS=DEFLATE", "TILED=YES"])
    return path


# -- the run record: what detect scored a grid from ------------------------------------------
# ``<grid file>.detect.json`` beside a grid written to a file: the layers and options of the
# run and the model package, so the review panel's "Adapt and re-score" can run adapt and
# detect again on the same layers.  Options of the run only (not how it was computed:
# threads, bands of a cluster task, unit conventions found).
RUN_RECORD_SUFFIX = ".detect.json"
_NOT_RECORDED = ("threads", "tile_rows", "conventions", "rows_per_batch")


def run_record_path(grid_path: str) -> str:
    return str(grid_path).split("|")[0] + RUN_RECORD_SUFFIX


def _plain(v):
    if isinstance(v, InputLayer):
        return {"role": v.role, "path": v.path, "bands": v.bands, "nodata": v.nodata}
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    return v


def write_run_record(grid_path: str, opts: DetectOptions, model_folder) -> str:
    """Write the run record of a grid (see RUN_RECORD_SUFFIX); returns its path."""
    rec = {"options": {f.name: _plain(getattr(opts, f.name)) for f in dataclasses.fields(opts)
                       if f.name not in _NOT_RECORDED},
           "model": str(model_folder) if model_folder else None}
    path = run_record_path(grid_path)
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(rec, fh, indent=1, default=str)
    return path


def read_run_record(grid_path: str) -> tuple[DetectOptions, str | None] | None:
    """(options, model package folder) detect recorded for a grid; None where there is no
    record or it no longer fits (an input file gone)."""
    path = run_record_path(grid_path)
    if not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as fh:
            rec = json.load(fh)
        known = {f.name for f in dataclasses.fields(DetectOptions)}
        kw = {k: v for k, v in rec.get("options", {}).items() if k in known}

        def layer(d):
            return None if d is None else InputLayer(d["role"], d["path"], d.get("bands"), d.get("nodata"))
        for k in ("s2", "s2_mask"):
            if k in kw:
                kw[k] = layer(kw[k])
        kw["s1"] = {r: layer(d) for r, d in (kw.get("s1") or {}).items()}
        if kw.get("extent") is not None:
            kw["extent"] = tuple(kw["extent"])
        opts = DetectOptions(**kw)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    layers = [x for x in (opts.s2, opts.s2_mask, *opts.s1.values()) if x is not None]
    local = [x.path.split("|")[0] for x in layers if not x.path.startswith("/vsi") and "://" not in x.path]
    if not layers or not all(os.path.exists(p) for p in local):
        return None
    return opts, rec.get("model")
