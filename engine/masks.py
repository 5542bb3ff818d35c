"""The Sentinel-2 validity mask: an L2A scene classification (SCL) raster or any 0/1 mask
(1 = invalid), warped with nearest neighbour onto the 10 m grid and read in the same
row windows as the scene (memory stays bounded).

SCL classes 0 (no data), 1 (saturated), 3 (cloud shadow), 8, 9 (cloud medium / high
probability) and 10 (thin cirrus) are invalid.  A pixel outside the mask's footprint (or
at its nodata value) is invalid too: nothing says it is clear.
"""
from __future__ import annotations

import math

import numpy as np
from osgeo import gdal

from ..core.channels import S2_MASK_ROLE, SCL_CLASSES, SCL_INVALID
from ..core.errors import InputError
from .align import AlignedLayer, Grid, InputLayer, native_bounds, open_layer, transform_bounds

gdal.UseExceptions()

EXPECTED = ("a Sentinel-2 L2A scene classification (SCL, integer classes 0-11) or a 0/1 mask "
            "(1 = cloud or otherwise invalid, 0 = clear)")


def find_scl_band(path: str) -> int | None:
    """The band of a Sentinel-2 raster whose description is ``SCL``, or None."""
    try:
        ds = gdal.Open(path)
    except RuntimeError:
        return None
    if ds is None:
        return None
    for b in range(1, ds.RasterCount + 1):
        if (ds.GetRasterBand(b).GetDescription() or "").strip().upper() == "SCL":
            return b
    return None


class S2Mask:
    """``invalid(row0, nrows)`` -> (nrows, width) bool, True where the S2 pixel is not valid."""

    def __init__(self, layer: InputLayer, grid: Grid, log: list, footprint: InputLayer | None = None):
        """``footprint``: the Sentinel-2 layer; the masked share then counts only the grid
        pixels inside its bounds (the processing area may reach beyond Sentinel-2, where
        the mask has nothing to say)."""
        layer = InputLayer(S2_MASK_ROLE, layer.path, list(layer.bands or [1]), layer.nodata)
        self.layer = layer
        src = open_layer(layer)
        b = transform_bounds(native_bounds(src), src.GetProjection(), grid.crs_wkt)
        g = grid.bounds
        if b[0] >= g[2] or b[2] <= g[0] or b[1] >= g[3] or b[3] <= g[1]:
            raise InputError(f"The {layer.label} does not overlap the processing area (the union of the "
                             "Sentinel-1/2 layers).")
        lo, hi = self._range(src, layer)
        if not (math.isfinite(lo) and math.isfinite(hi)):
            raise InputError(f"The {layer.label} holds no valid value: expected {EXPECTED}.")
        if lo < 0 or hi > 11:
            raise InputError(f"The {layer.label} holds values from {lo:g} to {hi:g}: expected {EXPECTED}.")
        desc = (src.GetRasterBand(layer.band_list[0]).GetDescription() or "").strip().upper()
        self.kind = "scl" if desc == "SCL" or hi > 1 else "binary"
        self.aligned = AlignedLayer.open(layer, grid, resampling="near")
        self.lut: np.ndarray | None = None  # SCL class -> masked
        if self.kind == "scl":
            self.lut = np.zeros(256, dtype=bool)
            self.lut[list(SCL_INVALID)] = True
            log.append(f"{layer.label}: read as a Sentinel-2 scene classification (SCL); masked classes "
                       + ", ".join(f"{c} ({SCL_CLASSES[c]})" for c in SCL_INVALID)
                       + f"; warped with nearest neighbour ({self.aligned.resampling})")
        else:
            log.append(f"{layer.label}: read as a 0/1 mask, 1 = masked; warped with nearest neighbour "
                       f"({self.aligned.resampling})")
        self.masked = 0
        self.total = 0
        self._count = None  # (col0, row0, col1, row1) of the grid counted in masked / total; None = all
        if footprint is not None:
            s2 = open_layer(footprint)
            fb, r = transform_bounds(native_bounds(s2), s2.GetProjection(), grid.crs_wkt), grid.res
            self._count = (max(0, math.floor((fb[0] - grid.x0) / r + 1e-6)),
                           max(0, math.floor((grid.y0 - fb[3]) / r + 1e-6)),
                           min(grid.width, math.ceil((fb[2] - grid.x0) / r - 1e-6)),
                           min(grid.height, math.ceil((grid.y0 - fb[1]) / r - 1e-6)))

    def _range(self, src: gdal.Dataset, layer: InputLayer) -> tuple[float, float]:
        """Minimum and maximum over the whole band (its nodata left out), and a check on a
        decimated sample that the values are whole numbers."""
        band = src.GetRasterBand(layer.band_list[0])
        try:
            lo, hi = band.ComputeRasterMinMax(False)
        except RuntimeError:  # every pixel is nodata
            return float("nan"), float("nan")
        nd = layer.nodata if layer.nodata is not None else band.GetNoDataValue()
        if layer.nodata is not None and nd is not None and (lo == nd or hi == nd):
            # the analyst's nodata override is not the file's: take it out of the range
            arr = band.ReadAsArray(buf_xsize=min(src.RasterXSize, 1024), buf_ysize=min(src.RasterYSize, 1024),
                                   resample_alg=gdal.GRIORA_NearestNeighbour).astype(np.float64)
            arr = arr[arr != nd]
            if arr.size == 0:
                return float("nan"), float("nan")
            lo, hi = float(arr.min()), float(arr.max())
        sample = band.ReadAsArray(buf_xsize=min(src.RasterXSize, 512), buf_ysize=min(src.RasterYSize, 512),
                                  resample_alg=gdal.GRIORA_NearestNeighbour).astype(np.float64)
        if nd is not None:
            sample = sample[sample != nd]
        sample = sample[np.isfinite(sample)]
        if sample.size and np.any(sample != np.round(sample)):
            raise InputError(f"The {layer.label} holds fractional values: expected {EXPECTED}.")
        return float(lo), float(hi)

    def _invalid(self, a: np.ndarray) -> np.ndarray:
        nan = ~np.isfinite(a)
        if self.lut is not None:
            out = self.lut[np.where(nan, 0, a).astype(np.uint8)]
        else:
            out = a >= 0.5
        out |= nan
        return out

    def invalid_window(self, x0: int, y0: int, w: int, h: int) -> np.ndarray:
        """(h, w) bool of a grid window (a sample: not counted in ``masked_fraction``)."""
        return self._invalid(self.aligned.read_window(x0, y0, w, h)[0])

    def invalid(self, row0: int, nrows: int) -> np.ndarray:
        out = self._invalid(self.aligned.read(row0, nrows)[0])
        part = out
        if self._count is not None:
            c0, r0, c1, r1 = self._count
            part = out[max(0, r0 - row0):max(0, min(nrows, r1 - row0)), c0:max(c0, c1)]
        self.masked += int(part.sum())
        self.total += part.size
        return out

    @property
    def masked_fraction(self) -> float:
        return self.masked / self.total if self.total else 0.0
