"""Export aligned scene patches in the competition layout, for training on your own data.

Writes ``<folder>/<ID>.npy`` (64, 64, 12) float32 channels-last in the package
convention, ``Train.csv`` (ID,label,mode) when an inventory is given (else ``Test.csv``
with ID,mode), ``mode`` being the patch's input combination as detection decides it (the
channels it lacks are NaN), and ``patches.gpkg`` with each patch footprint, its ID, label and landslide
area fraction (engine.truth: the rule landslide:evaluate applies too).  The same
layout the competition used, so training reads both.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from osgeo import gdal, ogr, osr

from ..core.channels import CHANNEL_NAMES, COMBINATIONS, N_CHANNELS
from ..core.errors import Cancelled, InputError
from .align import bounded_gdal_cache
from .detect import DetectOptions, TiledScene, run_cache_bytes
from .truth import Truth, box_wkb, is_landslide, reproject_wkts

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


def _landslide_fraction(truth: Truth, tiles: TiledScene, rows, cols) -> np.ndarray:
    """Landslide fraction of each patch of this band: exact intersection with the
    inventory over the tile footprint written to patches.gpkg (and to detect's grid)."""
    return truth.box_fractions([tiles.tile_bounds(int(r), int(c)) for r, c in zip(rows, cols)])


def export_patches(opts: DetectOptions, pkg, folder: str | Path, inventory: Inventory | None = None,
                   min_landslide_fraction: float = 0.01, prefix: str = "ID", progress=None,
                   is_cancelled=None) -> ExportResult:
    """The patches of a scene (and their labels, given an inventory) in the competition
    layout; GDAL's block cache bounded for the run as in detection."""
    with bounded_gdal_cache(run_cache_bytes(opts)):
        return _export_patches(opts, pkg, folder, inventory, min_landslide_fraction, prefix, progress, is_cancelled)


def _export_patches(opts: DetectOptions, pkg, folder: str | Path, inventory: Inventory | None,
                    min_landslide_fraction: float, prefix: str, progress, is_cancelled) -> ExportResult:
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
    truth = None
    if inventory is not None:
        truth = Truth(reproject_wkts(inventory.wkts, inventory.crs_wkt, tiles.grid.crs_wkt))
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
            # a tile is kept when some combination of its sources is valid enough (the
            # channels of the others, e.g. masked optics under a cloud, are NaN)
            keep = np.array([j for j, m in enumerate(b.modes) if m is not None], dtype=int)
            n_skip += len(b.patches) - len(keep)
            if not len(keep):
                continue
            frac = _landslide_fraction(truth, tiles, b.rows[keep], b.cols[keep]) if truth is not None else None
            ids = [f"{prefix}_r{int(b.rows[j]):04d}_c{int(b.cols[j]):04d}" for j in keep]
            labels = None if frac is None else is_landslide(frac, min_landslide_fraction).astype(int)
            try:  # the .npy files, and the rows of Train.csv / Test.csv, batch by batch
                write_patch_folder(folder, ids, b.patches[keep], labels, append=n_rows > 0,
                                   modes=[b.modes[j] for j in keep])
            except ValueError as exc:
                raise InputError(f"Cannot write the patch folder: {exc}") from None
            for k, (j, pid) in enumerate(zip(keep, ids)):
                row, col = int(b.rows[j]), int(b.cols[j])
                f = ogr.Feature(vl.GetLayerDefn())
                if labels is not None and frac is not None:
                    f.SetField("label", int(labels[k]))
                    f.SetField("landslide_frac", float(frac[k]))
                f.SetField("ID", pid)
                f.SetField("row", row)
                f.SetField("col", col)
                f.SetField("valid_frac", float(b.tile_valid[j]))
                f.SetField("mode", b.modes[j])
                f.SetGeometry(ogr.CreateGeometryFromWkb(box_wkb(*tiles.tile_bounds(row, col))))
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
