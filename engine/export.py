"""Export aligned scene patches in the competition layout, for training on your own data.

Writes ``<folder>/<ID>.npy`` (64, 64, 12) float32 channels-last in the package
convention, ``Train.csv`` (ID,label) when an inventory is given (else ``Test.csv`` with
IDs only), and ``patches.gpkg`` with each patch footprint, its ID, label and landslide
area fraction.  The same layout the competition used, so training reads both.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from osgeo import gdal, ogr, osr

from ..core.channels import CHANNEL_NAMES, COMBINATIONS, N_CHANNELS
from ..core.errors import Cancelled, InputError
from .detect import DetectOptions, TiledScene

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
    tiles = TiledScene(opts, pkg, log, allowed_modes=[c.name for c in COMBINATIONS])
    if len(tiles.combination.channels) < N_CHANNELS:
        missing = [CHANNEL_NAMES[c] for c in range(N_CHANNELS) if c not in tiles.combination.channels]
        log.append(f"Warning: only {tiles.mode} inputs were given; the channels they lack ({', '.join(missing)}) "
                   "are NaN in the exported patches.")
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
                      ("label", ogr.OFTInteger), ("landslide_frac", ogr.OFTReal), ("valid_frac", ogr.OFTReal),
                      ("mode", ogr.OFTString)):
        vl.CreateField(ogr.FieldDefn(name, typ))
    from .patch_folder import write_patch_folder  # plain numpy + csv, no training deps

    n_rows, n_pos, n_skip = 0, 0, 0
    vl.StartTransaction()
    t0 = time.perf_counter()
    try:
        for i, b in enumerate(tiles):
            if cancelled():
                raise Cancelled()
            frac = (_landslide_fraction(inv_lyr, tiles, b.row0, b.patches.shape[0] // tiles.n_cols * tiles.ps)
                    if inv_lyr is not None else None)
            # a tile is kept when some combination of its sources is valid enough (the
            # channels of the others, e.g. masked optics under a cloud, are NaN)
            keep = np.array([j for j, m in enumerate(b.modes) if m is not None], dtype=int)
            n_skip += len(b.patches) - len(keep)
            if not len(keep):
                continue
            ids = [f"{prefix}_r{int(b.rows[j]):04d}_c{int(b.cols[j]):04d}" for j in keep]
            labels = None if frac is None else (frac[keep] >= min_landslide_fraction).astype(int)
            try:  # the .npy files, and the rows of Train.csv / Test.csv, batch by batch
                write_patch_folder(folder, ids, b.patches[keep], labels, append=n_rows > 0)
            except ValueError as exc:
                raise InputError(f"Cannot write the patch folder: {exc}") from None
            for k, (j, pid) in enumerate(zip(keep, ids)):
                row, col = int(b.rows[j]), int(b.cols[j])
                f = ogr.Feature(vl.GetLayerDefn())
                if labels is not None:
                    f.SetField("label", int(labels[k]))
                    f.SetField("landslide_frac", float(frac[j]))
                f.SetField("ID", pid)
                f.SetField("row", row)
                f.SetField("col", col)
                f.SetField("valid_frac", float(b.tile_valid[j]))
                f.SetField("mode", b.modes[j])
                x0, y0, x1, y1 = tiles.tile_bounds(row, col)
                f.SetGeometry(ogr.CreateGeometryFromWkt(f"POLYGON(({x0} {y0},{x1} {y0},{x1} {y1},{x0} {y1},{x0} {y0}))"))
                vl.CreateFeature(f)
            n_rows += len(keep)
            n_pos += 0 if labels is None else int(labels.sum())
            prog((i + 1) / len(tiles), f"tile rows up to {min(b.row0 + tiles.step, tiles.n_rows)} of {tiles.n_rows}")
    finally:
        vl.CommitTransaction()
        vds = None
    if not n_rows:
        raise InputError("No patch has enough valid data to export.")
    log.append(f"Exported {n_rows} patches ({n_pos} positive) to {folder} in {time.perf_counter() - t0:.1f} s; "
               f"{n_skip} patches with too little valid data skipped")
    return ExportResult(folder, n_rows, n_pos, n_skip, log)
