"""Export aligned scene patches in the competition layout, for training on your own data.

Writes ``<folder>/<ID>.npy`` (64, 64, 12) float32 channels-last in the package
convention, ``Train.csv`` (ID,label) when an inventory is given (else ``Test.csv`` with
IDs only), and ``patches.gpkg`` with each patch footprint, its ID, label and landslide
area fraction.  The same layout the competition used, so models/training reads both.
"""
from __future__ import annotations

import csv
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from osgeo import gdal, ogr, osr

from .align import InputError
from .detect import Cancelled, DetectOptions, TiledScene

gdal.UseExceptions()
ogr.UseExceptions()


@dataclass
class Inventory:
    """Landslide polygons as WKT geometries in ``crs_wkt``."""

    crs_wkt: str
    wkts: list


@dataclass
class ExportResult:
    folder: Path
    n_patches: int
    n_positive: int
    n_skipped: int
    log: list


def _inventory_layer(inv: Inventory, grid_wkt: str):
    """An in-memory OGR layer of the inventory reprojected to the grid CRS."""
    src, dst = osr.SpatialReference(), osr.SpatialReference()
    src.ImportFromWkt(inv.crs_wkt)
    dst.ImportFromWkt(grid_wkt)
    for s in (src, dst):
        s.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    ct = None if src.IsSame(dst) else osr.CoordinateTransformation(src, dst)
    ds = ogr.GetDriverByName("Memory").CreateDataSource("inv")
    lyr = ds.CreateLayer("inv", dst, ogr.wkbMultiPolygon)
    for w in inv.wkts:
        g = ogr.CreateGeometryFromWkt(w)
        if g is None or g.IsEmpty():
            continue
        if ct is not None:
            g.Transform(ct)
        f = ogr.Feature(lyr.GetLayerDefn())
        f.SetGeometry(g)
        lyr.CreateFeature(f)
    return ds, lyr


def _landslide_fraction(lyr, tiles: TiledScene, row0: int, nrows_px: int) -> np.ndarray:
    """Fraction of each patch of this band covered by inventory polygons (10 m raster)."""
    g = tiles.grid
    w = tiles.n_cols * tiles.ps
    mem = gdal.GetDriverByName("MEM").Create("", w, nrows_px, 1, gdal.GDT_Byte)
    mem.SetProjection(g.crs_wkt)
    mem.SetGeoTransform((g.x0, g.res, 0, g.y0 - row0 * tiles.ps * g.res, 0, -g.res))
    gdal.RasterizeLayer(mem, [1], lyr, burn_values=[1])
    m = mem.ReadAsArray().astype(np.float32)
    k, ps = nrows_px // tiles.ps, tiles.ps
    return m.reshape(k, ps, tiles.n_cols, ps).mean(axis=(1, 3)).reshape(-1)


def export_patches(opts: DetectOptions, pkg, folder: str | Path, inventory: Inventory | None = None,
                   min_landslide_fraction: float = 0.01, prefix: str = "ID", progress=None,
                   is_cancelled=None) -> ExportResult:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    log: list = []
    prog = progress or (lambda frac, msg="": None)
    cancelled = is_cancelled or (lambda: False)
    tiles = TiledScene(opts, pkg, log, allowed_modes=("combined", "optical", "sar"))
    if tiles.mode != "combined":
        log.append(f"Warning: only {tiles.mode} inputs were given; channels of the missing modality are NaN "
                   "in the exported patches.")
    inv_ds = inv_lyr = None
    if inventory is not None:
        inv_ds, inv_lyr = _inventory_layer(inventory, tiles.grid.crs_wkt)
    srs = osr.SpatialReference()
    srs.ImportFromWkt(tiles.grid.crs_wkt)
    gpkg = folder / "patches.gpkg"
    if gpkg.exists():
        gpkg.unlink()
    vds = ogr.GetDriverByName("GPKG").CreateDataSource(str(gpkg))
    vl = vds.CreateLayer("patches", srs, ogr.wkbPolygon)
    for name, typ in (("ID", ogr.OFTString), ("row", ogr.OFTInteger), ("col", ogr.OFTInteger),
                      ("label", ogr.OFTInteger), ("landslide_frac", ogr.OFTReal), ("valid_frac", ogr.OFTReal)):
        vl.CreateField(ogr.FieldDefn(name, typ))
    rows, n_pos, n_skip = [], 0, 0
    vl.StartTransaction()
    t0 = time.perf_counter()
    for i, b in enumerate(tiles):
        if cancelled():
            vl.CommitTransaction()
            vds = None
            raise Cancelled()
        frac = (_landslide_fraction(inv_lyr, tiles, b.row0, b.patches.shape[0] // tiles.n_cols * tiles.ps)
                if inv_lyr is not None else None)
        for j in range(len(b.patches)):
            if b.valid_frac[j] < opts.min_valid_fraction:
                n_skip += 1
                continue
            row, col = int(b.rows[j]), int(b.cols[j])
            pid = f"{prefix}_r{row:04d}_c{col:04d}"
            np.save(folder / f"{pid}.npy", np.ascontiguousarray(b.patches[j].transpose(1, 2, 0)))
            label = None
            f = ogr.Feature(vl.GetLayerDefn())
            if frac is not None:
                label = int(frac[j] >= min_landslide_fraction)
                n_pos += label
                f.SetField("label", label)
                f.SetField("landslide_frac", float(frac[j]))
            f.SetField("ID", pid)
            f.SetField("row", row)
            f.SetField("col", col)
            f.SetField("valid_frac", float(b.valid_frac[j]))
            x0, y0, x1, y1 = tiles.tile_bounds(row, col)
            f.SetGeometry(ogr.CreateGeometryFromWkt(f"POLYGON(({x0} {y0},{x1} {y0},{x1} {y1},{x0} {y1},{x0} {y0}))"))
            vl.CreateFeature(f)
            rows.append((pid, label))
        prog((i + 1) / len(tiles), f"tile rows up to {min(b.row0 + tiles.step, tiles.n_rows)} of {tiles.n_rows}")
    vl.CommitTransaction()
    vds = None
    if not rows:
        raise InputError("No patch has enough valid data to export.")
    name = "Train.csv" if inventory is not None else "Test.csv"
    with open(folder / name, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["ID", "label"] if inventory is not None else ["ID"])
        for pid, label in rows:
            w.writerow([pid, label] if inventory is not None else [pid])
    log.append(f"Exported {len(rows)} patches ({n_pos} positive) to {folder} in {time.perf_counter() - t0:.1f} s; "
               f"{n_skip} patches with too little valid data skipped")
    return ExportResult(folder, len(rows), n_pos, n_skip, log)
