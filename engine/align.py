"""Put the analyst's S1/S2 rasters on one 10 m grid, read in windows.

Each input becomes a GDAL warped VRT onto the target grid; reading a window of the VRT
warps just that window, so memory stays bounded whatever the scene size.  An input
already on the grid (same CRS, pixel size and alignment) is read directly instead.
"""
from __future__ import annotations

import math
import re
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
from osgeo import gdal, osr

from ..core.channels import PIXEL_SIZE_M, ROLE_LABELS
from ..core.errors import InputError

gdal.UseExceptions()

# GDAL's block cache (default 5 % of RAM) fills with source blocks when inputs are warped,
# so a run bounds it: memory then stays near the on-grid inputs' whatever the warping
GDAL_CACHE_BYTES = 64 * 1024 * 1024
# ... but at least one row of blocks of every input (block_row_bytes), up to this: a band
# of rows shorter than a block (2 patch rows = 128 px, blocks of 256 or 1024 px) otherwise
# finds the block row the previous band decoded evicted by the other inputs' and decodes
# it again (a full Sentinel-2 tile with four S1 layers: 112 MB per block row)
GDAL_CACHE_CAP_BYTES = 512 * 1024 * 1024
_cache_lock = threading.Lock()
_cache_users = [0, 0]  # runs inside bounded_gdal_cache, the cache max to restore


@contextmanager
def bounded_gdal_cache(nbytes: int = GDAL_CACHE_BYTES):
    """GDAL's block cache at most ``nbytes`` while inside; the previous maximum comes back
    when the last concurrent run leaves (the cache is process-wide)."""
    with _cache_lock:
        if _cache_users[0] == 0:
            _cache_users[1] = gdal.GetCacheMax()
            gdal.SetCacheMax(min(int(nbytes), _cache_users[1]))
        _cache_users[0] += 1
    try:
        yield
    finally:
        with _cache_lock:
            _cache_users[0] -= 1
            if _cache_users[0] == 0:
                gdal.SetCacheMax(_cache_users[1])
osr.UseExceptions()


def block_row_bytes(layers) -> int:
    """Decoded bytes of one row of blocks across the bands read of every ``InputLayer``
    (what GDAL's cache must hold so that consecutive bands of rows decode each block once);
    0 for a layer that cannot be opened (reported properly when the run opens it)."""
    total = 0
    for lyr in layers:
        try:
            ds = gdal.Open(lyr.path)
        except RuntimeError:
            continue
        if ds is None:
            continue
        # bands not chosen yet (a Sentinel-2 layer's are guessed later): every band counts
        for b in (lyr.bands or range(1, ds.RasterCount + 1)):
            if not 1 <= b <= ds.RasterCount:
                continue
            band = ds.GetRasterBand(b)
            bw, bh = band.GetBlockSize()
            width = -(-ds.RasterXSize // max(1, bw)) * max(1, bw)
            total += width * max(1, bh) * gdal.GetDataTypeSize(band.DataType) // 8
    return total


def cache_bytes_for(layers) -> int:
    """The block-cache bound of a run reading ``layers``: GDAL_CACHE_BYTES, or one block
    row of the inputs (+25 %) where that is more, at most GDAL_CACHE_CAP_BYTES.  Memory
    stays bounded by the scene's width, not its area."""
    return int(min(GDAL_CACHE_CAP_BYTES, max(GDAL_CACHE_BYTES, 1.25 * block_row_bytes(layers))))


@contextmanager
def decode_threads(n: int | None):
    """Datasets opened inside decode their compressed blocks on ``n`` threads (GDAL's
    ``GDAL_NUM_THREADS``, read when a GTiff or JPEG 2000 dataset is opened, for the
    datasets of this thread only): a window spanning several blocks (a band of rows of a
    deflated Sentinel tile spans dozens) then decompresses them side by side.  The pixels
    are the same; only the reader's wall time shrinks.  ``n`` None or < 2: unchanged."""
    if not n or n < 2:
        yield
        return
    key = "GDAL_NUM_THREADS"
    old = gdal.GetThreadLocalConfigOption(key, None)
    gdal.SetThreadLocalConfigOption(key, str(int(n)))
    try:
        yield
    finally:
        gdal.SetThreadLocalConfigOption(key, old)



@dataclass
class InputLayer:
    role: str  # one of ROLE_LABELS
    path: str  # anything GDAL opens
    bands: list[int] | None  # 1-based band numbers in the order the role needs them (S2: None = guess)
    nodata: float | None = None  # overrides the file's nodata value

    @property
    def label(self) -> str:
        return ROLE_LABELS.get(self.role, self.role)

    @property
    def band_list(self) -> list[int]:
        """The bands once chosen (detect guesses unset S2 bands before opening anything)."""
        if self.bands is None:
            raise InputError(f"The {self.label} layer's bands were not chosen.")
        return self.bands


@dataclass
class Grid:
    """A north-up grid: top-left corner (x0, y0), square pixels of ``res``."""

    crs_wkt: str
    x0: float
    y0: float
    res: float
    width: int
    height: int
    # (col0, row0, col1, row1): the processing area's pixels when the grid reaches beyond
    # it (to whole tiles on the west and north: plan_grid's tile_px); None = the whole grid
    area: tuple | None = None

    @property
    def geotransform(self):
        return (self.x0, self.res, 0.0, self.y0, 0.0, -self.res)

    @property
    def bounds(self):
        return (self.x0, self.y0 - self.height * self.res, self.x0 + self.width * self.res, self.y0)

    @property
    def area_bounds(self):
        """(xmin, ymin, xmax, ymax) of the processing area (``bounds`` when ``area`` is None)."""
        c0, r0, c1, r1 = self.area or (0, 0, self.width, self.height)
        return (self.x0 + c0 * self.res, self.y0 - r1 * self.res, self.x0 + c1 * self.res, self.y0 - r0 * self.res)


# Sentinel-2 band names per role (R, G, B, NIR), as band descriptions spell them
_S2_ROLE_NAMES = (("RED", "B4", "B04"), ("GREEN", "B3", "B03"), ("BLUE", "B2", "B02"),
                  ("NIR", "B8", "B08", "NIRBAND"))
_COLOUR_INTERP = (gdal.GCI_RedBand, gdal.GCI_GreenBand, gdal.GCI_BlueBand, None)


def guess_s2_bands(path: str) -> tuple[list[int], str]:
    """R, G, B, NIR band numbers of a Sentinel-2 raster whose band numbers were not given.

    From the band descriptions (``B4``, ``B04``, ``Red``, ``B8``, ``NIR``...; red-edge and
    ``B8A`` bands are not taken for red or NIR) or, for R, G, B, the colour
    interpretation; each role must match exactly one band.  Otherwise bands 1-4.  Returns
    (bands, a sentence for the log)."""
    try:
        ds = gdal.Open(path)
    except RuntimeError:
        ds = None
    if ds is None:  # open_layer reports it properly later
        return [1, 2, 3, 4], "Sentinel-2 bands 1-4 taken as R, G, B, NIR"
    found = []
    for names, interp in zip(_S2_ROLE_NAMES, _COLOUR_INTERP):
        hits = []
        for b in range(1, ds.RasterCount + 1):
            band = ds.GetRasterBand(b)
            tokens = set(re.split(r"[^A-Z0-9]+", (band.GetDescription() or "").upper()))
            if {"EDGE", "REDEDGE", "RE"} & tokens:
                continue
            if tokens & set(names) or (interp is not None and band.GetColorInterpretation() == interp):
                hits.append(b)
        found.append(hits)
    if all(len(h) == 1 for h in found) and len({h[0] for h in found}) == 4:
        bands = [h[0] for h in found]
        return bands, (f"Sentinel-2 bands {', '.join(map(str, bands))} taken as R, G, B, NIR "
                       "(from the band names)")
    if ds.RasterCount == 4:
        return [1, 2, 3, 4], "Sentinel-2 bands 1-4 taken as R, G, B, NIR"
    return [1, 2, 3, 4], (f"Warning: the Sentinel-2 layer has {ds.RasterCount} bands whose names do not say "
                          "which are red, green, blue and NIR; bands 1-4 are taken as R, G, B, NIR. Set the "
                          "band parameters if that is wrong.")


def source_nodata(layer: InputLayer, src: gdal.Dataset):
    """The nodata value in force: the analyst's override, else the file's (first band)."""
    if layer.nodata is not None:
        return layer.nodata
    return src.GetRasterBand(layer.band_list[0]).GetNoDataValue()


def open_layer(layer: InputLayer) -> gdal.Dataset:
    try:
        ds = gdal.Open(layer.path)
    except RuntimeError as exc:
        raise InputError(f"The {layer.label} layer cannot be opened ({exc}).") from None
    if ds is None:
        raise InputError(f"The {layer.label} layer cannot be opened: {layer.path}")
    if not ds.GetProjection():
        raise InputError(f"The {layer.label} layer has no coordinate reference system.")
    for b in layer.band_list:
        if b < 1 or b > ds.RasterCount:
            raise InputError(
                f"The {layer.label} layer has {ds.RasterCount} band(s); band {b} does not exist."
            )
    gt = ds.GetGeoTransform()
    if gt[2] != 0 or gt[4] != 0:
        pass  # rotated rasters are fine: the warp handles them
    return ds


def _srs(wkt: str) -> osr.SpatialReference:
    """A CRS from WKT or anything GDAL reads as one ("EPSG:4326"), x = easting / longitude."""
    s = osr.SpatialReference()
    s.SetFromUserInput(wkt)
    s.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    return s


def native_bounds(ds: gdal.Dataset):
    gt = ds.GetGeoTransform()
    xs = [gt[0] + i * gt[1] + j * gt[2] for i in (0, ds.RasterXSize) for j in (0, ds.RasterYSize)]
    ys = [gt[3] + i * gt[4] + j * gt[5] for i in (0, ds.RasterXSize) for j in (0, ds.RasterYSize)]
    return min(xs), min(ys), max(xs), max(ys)


def transform_bounds(bounds, src_wkt: str, dst_wkt: str):
    src, dst = _srs(src_wkt), _srs(dst_wkt)
    if src.IsSame(dst):
        return tuple(bounds)
    ct = osr.CoordinateTransformation(src, dst)
    return tuple(ct.TransformBounds(bounds[0], bounds[1], bounds[2], bounds[3], 21))


def utm_epsg_for(lon: float, lat: float) -> int:
    """The WGS 84 / UTM zone's EPSG code at a point."""
    zone = int(math.floor((lon + 180.0) / 6.0)) % 60 + 1
    return (32600 if lat >= 0 else 32700) + zone


def utm_wkt_for(lon: float, lat: float) -> str:
    s = osr.SpatialReference()
    s.ImportFromEPSG(utm_epsg_for(lon, lat))
    return s.ExportToWkt()


def _is_metric_projected(wkt: str) -> bool:
    s = _srs(wkt)
    return bool(s.IsProjected()) and abs(s.GetLinearUnits() - 1.0) < 1e-9


def _intersect(a, b):
    return [max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])]


def _cover(a, b):
    return [min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3])]


def _empty(box) -> bool:
    return box[0] >= box[2] or box[1] >= box[3]


def _processing_area_lonlat(layers: list, dss: list, extent=None) -> tuple:
    """(lon0, lat0, lon1, lat1) of the area detection will cover: the union of the layers'
    extents clipped to ``extent``.  Falls back to the reference layer's bounds where that
    area is empty (plan_grid then says what does not overlap)."""
    wgs84 = osr.SRS_WKT_WGS84_LAT_LONG
    ref_box = list(transform_bounds(native_bounds(dss[0]), dss[0].GetProjection(), wgs84))
    box = ref_box
    try:
        for ds in dss[1:]:
            box = _cover(box, transform_bounds(native_bounds(ds), ds.GetProjection(), wgs84))
        if extent is not None and extent[4]:  # an extent without a CRS is in the grid's, not yet known
            box = _intersect(box, transform_bounds(extent[:4], extent[4], wgs84))
    except RuntimeError:
        return tuple(ref_box)
    return tuple(box) if not _empty(box) else tuple(ref_box)


def plan_grid(layers: list[InputLayer], extent=None, res: float = PIXEL_SIZE_M, tile_px: int | None = None,
              min_reach: float = 0.0) -> Grid:
    """The target grid over the processing area: the union of the layers' extents, clipped
    to ``extent`` = (xmin, ymin, xmax, ymax, crs_wkt) if given (a pixel outside a layer's
    footprint is no data for that layer; detection falls back per tile to the inputs valid
    there).  CRS: the reference layer's (S2 if given, else the first SAR layer) when metric,
    else the UTM zone of the centre of the area processed, not of the whole raster.  Pixel
    edges snap to the reference raster's own 10 m lattice where it has one.

    ``tile_px``: tiles of that many pixels start at the corner of the area all layers
    cover (clipped to ``extent``), as they did when the grid was that common area, so the
    tiles there are the same; the grid reaches out to the union in whole tiles on the west
    and north (``Grid.area`` is then the union's pixel window in it; the rest is no data),
    on the sides where the union reaches at least ``min_reach`` of a tile beyond the common
    area (a tile with less could not have that valid fraction)."""
    if not layers:
        raise InputError("No input layer was given.")
    dss = [open_layer(lyr) for lyr in layers]
    ref_ds = dss[0]
    ref_wkt = ref_ds.GetProjection()
    if _is_metric_projected(ref_wkt):
        crs = _srs(ref_wkt).ExportToWkt()
    else:  # the UTM zone of the area processed, not of the whole (maybe continental) raster
        lon0, lat0, lon1, lat1 = _processing_area_lonlat(layers, dss, extent)
        crs = utm_wkt_for((lon0 + lon1) / 2, (lat0 + lat1) / 2)

    boxes = []
    for layer, ds in zip(layers, dss):
        try:
            boxes.append(list(transform_bounds(native_bounds(ds), ds.GetProjection(), crs)))
        except RuntimeError as exc:
            raise InputError(f"The {layer.label} layer cannot be reprojected to the analysis grid ({exc}).") from None
    # a layer that overlaps no other is a mistake (another place, a wrong CRS), not coverage
    for i in [*range(1, len(layers)), 0]:  # the reference layer last: it names the other
        layer, b = layers[i], boxes[i]
        if len(boxes) > 1 and all(_empty(_intersect(b, o)) for j, o in enumerate(boxes) if j != i):
            other = layers[1 if i == 0 else 0]
            raise InputError(f"The {layer.label} layer does not overlap the {other.label} layer "
                             "(nor any other input layer).")
    union, common = boxes[0], boxes[0]
    for b in boxes[1:]:
        union, common = _cover(union, b), _intersect(common, b)
    if extent is not None:
        e = transform_bounds(extent[:4], extent[4], crs) if extent[4] else tuple(extent[:4])
        union, common = _intersect(union, e), _intersect(common, e)
        if _empty(union):
            raise InputError("The processing extent does not overlap the input layers.")

    # snap to the reference raster's lattice when it is metric with a 10 m multiple pixel
    ox, oy = 0.0, 0.0
    gt = ref_ds.GetGeoTransform()
    if _srs(ref_wkt).IsSame(_srs(crs)) and gt[2] == 0 and gt[4] == 0:
        ox, oy = gt[0] % res, gt[3] % res

    def snap(box):  # (x0, y1, x1, y0): outward to the lattice
        return (math.floor((box[0] - ox) / res + 1e-6) * res + ox, math.ceil((box[3] - oy) / res - 1e-6) * res + oy,
                math.ceil((box[2] - ox) / res - 1e-6) * res + ox, math.floor((box[1] - oy) / res + 1e-6) * res + oy)

    x0, y1, x1, y0 = snap(union)
    gx0, gy1 = x0, y1
    if tile_px and not _empty(common):
        # tiles start at the common area's corner; a side of the union reaching less than
        # min_reach of a tile beyond it (a reprojected footprint's sliver) holds no tile
        # that could be scored, and is left out
        cx0, cy1, cx1, cy0 = snap(common)
        reach = max(1.0, min_reach * tile_px) * res - 1e-6
        x0, y1 = (x0 if cx0 - x0 >= reach else cx0), (y1 if y1 - cy1 >= reach else cy1)
        x1, y0 = (x1 if x1 - cx1 >= reach else cx1), (y0 if cy0 - y0 >= reach else cy0)
        step = tile_px * res
        gx0 = cx0 - math.ceil((cx0 - x0) / step - 1e-6) * step
        gy1 = cy1 + math.ceil((y1 - cy1) / step - 1e-6) * step
    width, height = int(round((x1 - gx0) / res)), int(round((gy1 - y0) / res))
    if width < 1 or height < 1:
        raise InputError("The area of the inputs is smaller than one pixel.")
    c0, r0 = int(round((x0 - gx0) / res)), int(round((gy1 - y1) / res))
    area = None if (c0, r0) == (0, 0) else (c0, r0, width, height)
    return Grid(crs, gx0, gy1, res, width, height, area)


def sample_windows(grid: Grid, max_size: int = 512, k: int = 8) -> list[tuple[int, int, int, int]]:
    """Windows (x0, y0, w, h) of the grid for a sample of about max_size^2 pixels: the
    whole grid when it is that small, else k x k windows spread evenly over it."""
    if grid.width * grid.height <= max_size * max_size:
        return [(0, 0, grid.width, grid.height)]
    win = max(1, max_size // k)
    ww, wh = min(win, grid.width), min(win, grid.height)
    xs = np.linspace(0, grid.width - ww, k).astype(int)
    ys = np.linspace(0, grid.height - wh, k).astype(int)
    return [(int(x), int(y), ww, wh) for y in ys for x in xs]


def _warp(ds: gdal.Dataset, grid: Grid, resampling: str, nodata) -> gdal.Dataset:
    """A warped VRT of ``ds`` on the grid, float32, NaN where there is no data."""
    return gdal.Warp(
        "", ds, format="VRT", dstSRS=grid.crs_wkt, outputBounds=grid.bounds,
        xRes=grid.res, yRes=grid.res, resampleAlg=resampling, outputType=gdal.GDT_Float32,
        srcNodata=None if nodata is None else nodata, dstNodata=float("nan"),
        warpOptions=["UNIFIED_SRC_NODATA=YES"], multithread=False,
    )


# GDAL's built-in pixel functions: dB -> power 10^(x/10); amplitude -> power |x|^2
_TO_POWER = {"dB": "dB2pow", "amplitude": "intensity"}


def _power_vrt(layer: InputLayer, src: gdal.Dataset, scale: str, nodata) -> gdal.Dataset:
    """The layer's bands as linear power, in a virtual raster (nothing is written): GDAL's
    dB2pow / intensity pixel functions over the source bands.  Source nodata pixels reach
    the pixel function as NaN (ComplexSource NODATA), so they stay no data, NaN, whatever
    their value (mapping a nodata of 9999 dB to power would overflow)."""
    from xml.sax.saxutils import escape

    func = _TO_POWER[scale]
    nd = "" if nodata is None or math.isnan(nodata) else f"<NODATA>{float(nodata)!r}</NODATA>"
    gt = src.GetGeoTransform()
    bands = "".join(
        f'<VRTRasterBand dataType="Float32" band="{i + 1}" subClass="VRTDerivedRasterBand"><NoDataValue>nan</NoDataValue>'
        f"<PixelFunctionType>{func}</PixelFunctionType><SourceTransferType>Float32</SourceTransferType>"
        f'<ComplexSource><SourceFilename relativeToVRT="0">{escape(layer.path)}</SourceFilename>'
        f"<SourceBand>{b}</SourceBand>{nd}</ComplexSource></VRTRasterBand>"
        for i, b in enumerate(layer.band_list))
    xml = (f'<VRTDataset rasterXSize="{src.RasterXSize}" rasterYSize="{src.RasterYSize}">'
           f"<SRS>{escape(src.GetProjection())}</SRS><GeoTransform>{', '.join(repr(v) for v in gt)}</GeoTransform>"
           f"{bands}</VRTDataset>")
    return gdal.Open(xml)


def _resampling(ds: gdal.Dataset, grid: Grid) -> str:
    """Average when the source is finer than the grid, bilinear otherwise."""
    gt = ds.GetGeoTransform()
    src_res = abs(gt[1])
    try:
        b = transform_bounds(native_bounds(ds), ds.GetProjection(), grid.crs_wkt)
        src_res = (b[2] - b[0]) / ds.RasterXSize
    except RuntimeError:
        pass
    return "average" if src_res < grid.res * 0.75 else "bilinear"


@dataclass
class AlignedLayer:
    """One input on the target grid; ``read(row0, nrows)`` -> (bands, nrows, width) float32,
    NaN where there is no data (outside the layer, nodata, or non-finite)."""

    layer: InputLayer
    grid: Grid
    _ds: gdal.Dataset = field(repr=False, default=None)
    direct: bool = False
    _xoff: int = 0
    _yoff: int = 0
    resampling: str = "nearest"
    # direct reads go to the source itself (no VRT in between) and drop its decoded
    # blocks from GDAL's cache once the reads have passed them (rows are read top to
    # bottom), so memory stays near one block row instead of filling GDAL_CACHEMAX
    _src: gdal.Dataset = field(repr=False, default=None)
    _block_h: int = 0
    # averaged as linear power (average_linear_power): read() converts back to dB
    _power_src: gdal.Dataset = field(repr=False, default=None)
    _to_db: bool = False

    @classmethod
    def open(cls, layer: InputLayer, grid: Grid, resampling: str | None = None) -> "AlignedLayer":
        """``resampling`` overrides the choice by pixel size (a class raster: "near")."""
        src = open_layer(layer)
        nodata = source_nodata(layer, src)
        sel = gdal.Translate("", src, format="VRT", bandList=layer.band_list, outputType=gdal.GDT_Float32,
                             noData="none" if nodata is None else nodata)
        gt = src.GetGeoTransform()
        same = (_srs(src.GetProjection()).IsSame(_srs(grid.crs_wkt)) and gt[2] == 0 and gt[4] == 0
                and abs(gt[1] - grid.res) < 1e-6 and abs(gt[5] + grid.res) < 1e-6)
        if same:
            fx, fy = (grid.x0 - gt[0]) / grid.res, (gt[3] - grid.y0) / grid.res
            if abs(fx - round(fx)) < 1e-6 and abs(fy - round(fy)) < 1e-6:
                block_h = max(src.GetRasterBand(b).GetBlockSize()[1] for b in layer.band_list)
                return cls(layer, grid, sel, True, int(round(fx)), int(round(fy)), "none (already on grid)",
                           src, block_h)
        rs = resampling or _resampling(src, grid)
        return cls(layer, grid, _warp(sel, grid, rs, nodata), False, 0, 0, rs)

    def average_linear_power(self, scale: str) -> bool:
        """SAR backscatter in dB or linear amplitude that is averaged onto a coarser grid
        is averaged as linear power instead: under speckle the mean of dB values is the log
        of a geometric mean, biased low against the multilooked power.  ``read`` then
        returns dB.  False (nothing changed) when the layer is read directly, interpolated
        rather than averaged, or already linear power."""
        if self.direct or self.resampling != "average" or scale not in _TO_POWER:
            return False
        src = open_layer(self.layer)
        if src.GetRasterBand(self.layer.band_list[0]).GetMaskFlags() & (gdal.GMF_PER_DATASET | gdal.GMF_ALPHA):
            return False  # an internal mask or alpha band: the derived bands would lose it
        self._power_src = _power_vrt(self.layer, src, scale, source_nodata(self.layer, src))
        self._ds = _warp(self._power_src, self.grid, "average", float("nan"))
        self._to_db = True
        self.resampling = "average of linear power"
        return True

    def read(self, row0: int, nrows: int, out: np.ndarray | None = None) -> np.ndarray:
        """(bands, nrows, width) float32 of grid rows row0.., NaN where no data (values
        equal to the nodata value or outside the layer).  ``out``: a C-contiguous float32
        array of that shape to fill instead of a new one (saves a copy per band)."""
        g = self.grid
        nrows = max(0, min(nrows, g.height - row0))
        shape = (len(self.layer.band_list), nrows, g.width)
        if out is not None and (out.shape != shape or out.dtype != np.float32 or not out.flags.c_contiguous):
            raise ValueError(f"out must be C-contiguous float32 {shape}")
        if nrows == 0:
            return np.full(shape, np.nan, dtype=np.float32) if out is None else out
        if not self.direct:
            out = np.empty(shape, dtype=np.float32) if out is None else out
            self._ds.ReadAsArray(0, row0, g.width, nrows, buf_obj=out)  # GDAL fills it in place
            if self._to_db:  # averaged power -> dB as SarConvention.to_db does (NaN stays NaN)
                with np.errstate(invalid="ignore"):
                    np.maximum(out, np.float32(1e-10), out=out)
                    np.log10(out, out=out)
                out *= np.float32(10.0)
                return out  # the source's nodata was masked before averaging
        else:
            ds = self._ds
            x0, y0 = self._xoff, self._yoff + row0
            cx0, cy0 = max(0, x0), max(0, y0)
            cx1, cy1 = min(ds.RasterXSize, x0 + g.width), min(ds.RasterYSize, y0 + nrows)
            inside = (cx0, cy0, cx1, cy1) == (x0, y0, x0 + g.width, y0 + nrows)
            if out is None:
                out = np.empty(shape, dtype=np.float32)
            if not inside:
                out.fill(np.nan)
            if cx1 > cx0 and cy1 > cy0:
                if self._src is not None and inside:
                    self._src.ReadAsArray(cx0, cy0, cx1 - cx0, cy1 - cy0, buf_obj=out, band_list=list(self.layer.band_list))
                elif self._src is not None:
                    arr = self._src.ReadAsArray(cx0, cy0, cx1 - cx0, cy1 - cy0, band_list=list(self.layer.band_list),
                                                buf_type=gdal.GDT_Float32)
                    out[:, cy0 - y0:cy1 - y0, cx0 - x0:cx1 - x0] = arr.reshape(len(self.layer.band_list), cy1 - cy0, cx1 - cx0)
                else:
                    arr = ds.ReadAsArray(cx0, cy0, cx1 - cx0, cy1 - cy0)
                    out[:, cy0 - y0:cy1 - y0, cx0 - x0:cx1 - x0] = arr.reshape(len(self.layer.band_list), cy1 - cy0, cx1 - cx0)
                # reads ending on a block boundary leave no cached block that a later
                # (lower) window needs; elsewhere GDAL's LRU cache does the bounding
                if self._src is not None and self._block_h and (cy1 % self._block_h == 0 or cy1 == ds.RasterYSize):
                    self._src.FlushCache()
        nd = self.layer.nodata
        if nd is None:
            nd = self._ds.GetRasterBand(1).GetNoDataValue()
        # one pass, and none where the nodata value is NaN or unset (the warp's own
        # nodata is NaN); an infinite value is left as it is: every consumer treats
        # non-finite pixels as no data
        if nd is not None and math.isfinite(nd):
            np.copyto(out, np.float32(np.nan), where=out == np.float32(nd))
        return out

    def read_window(self, x0: int, y0: int, w: int, h: int) -> np.ndarray:
        """(bands, h, w) float32 of a window of the grid (columns x0.., rows y0..), NaN where
        no data, as ``read`` gives for those pixels; for small samples on the grid (the
        Sentinel-2 unit decision under a cloud mask), not for the scene's bulk reads."""
        g = self.grid
        nb = len(self.layer.band_list)
        out = np.full((nb, h, w), np.nan, dtype=np.float32)
        ox, oy = (self._xoff, self._yoff) if self.direct else (0, 0)
        ds = self._ds
        # the window in the dataset's pixels, clipped to both the grid and the dataset
        cx0, cy0 = max(0, x0 + ox, ox), max(0, y0 + oy, oy)
        cx1 = min(ds.RasterXSize, x0 + ox + w, ox + g.width)
        cy1 = min(ds.RasterYSize, y0 + oy + h, oy + g.height)
        if cx1 > cx0 and cy1 > cy0:
            arr = ds.ReadAsArray(cx0, cy0, cx1 - cx0, cy1 - cy0, buf_type=gdal.GDT_Float32)
            out[:, cy0 - oy - y0:cy1 - oy - y0, cx0 - ox - x0:cx1 - ox - x0] = arr.reshape(nb, cy1 - cy0, cx1 - cx0)
        if self._to_db:
            with np.errstate(invalid="ignore", divide="ignore"):
                out = np.float32(10.0) * np.log10(np.maximum(out, np.float32(1e-10)))
            return out
        nd = self.layer.nodata
        if nd is None:
            nd = ds.GetRasterBand(1).GetNoDataValue()
        if nd is not None and math.isfinite(nd):
            out[out == np.float32(nd)] = np.nan
        return out

    def sample(self, max_size: int = 512) -> np.ndarray:
        """A decimated read of the whole layer (for unit detection), NaN for nodata.

        A nearest-neighbour decimation touches every block of the file, i.e. decodes the
        whole layer (a full tile: seconds of CPU and GDAL_CACHEMAX of memory) unless it has
        overviews.  A layer of more than a few dozen blocks without overviews is therefore
        sampled as a regular grid of small windows, each inside one block where the blocks
        are that large, with about as many pixels."""
        src = open_layer(self.layer)
        w, h = src.RasterXSize, src.RasterYSize
        band0 = src.GetRasterBand(self.layer.band_list[0])
        bw, bh = band0.GetBlockSize()
        n_blocks = math.ceil(w / max(1, bw)) * math.ceil(h / max(1, bh))
        # k x k windows of win x win px, about max_size^2 px in all, touching at most about a
        # quarter of the blocks (the cost of detection must not grow with the scene)
        k = min(16, math.isqrt(n_blocks // 4))
        win = max(1, max_size // max(k, 1))
        if band0.GetOverviewCount() == 0 and k >= 3 and min(w, h) >= 4 * k * win:
            arr = np.empty((len(self.layer.band_list), k * win, k * win), dtype=np.float32)
            xs, ys = self._window_starts(w, bw, k, win), self._window_starts(h, bh, k, win)
            for i, y in enumerate(ys):
                for j, x in enumerate(xs):
                    arr[:, i * win:(i + 1) * win, j * win:(j + 1) * win] = src.ReadAsArray(
                        int(x), int(y), win, win, band_list=list(self.layer.band_list),
                        buf_type=gdal.GDT_Float32).reshape(len(self.layer.band_list), win, win)
            for i, b in enumerate(self.layer.band_list):
                nd = self.layer.nodata if self.layer.nodata is not None else src.GetRasterBand(b).GetNoDataValue()
                if nd is not None and not math.isnan(nd):
                    arr[i][arr[i] == np.float32(nd)] = np.nan
            return arr
        scale = max(1, math.ceil(max(w, h) / max_size))
        bx, by = max(1, w // scale), max(1, h // scale)
        arrs = []
        for b in self.layer.band_list:
            band = src.GetRasterBand(b)
            a = band.ReadAsArray(buf_xsize=bx, buf_ysize=by, resample_alg=gdal.GRIORA_NearestNeighbour).astype(np.float32)
            nd = self.layer.nodata if self.layer.nodata is not None else band.GetNoDataValue()
            if nd is not None and not math.isnan(nd):
                a[a == nd] = np.nan
            arrs.append(a)
        return np.stack(arrs)

    @staticmethod
    def _window_starts(size: int, block: int, k: int, win: int) -> np.ndarray:
        """k window starts spread over [0, size - win], moved to a block's start when the
        window then still fits inside that block (one block decoded per window)."""
        starts = np.linspace(0, size - win, k).astype(int)
        if block >= win:
            snapped = (starts // block) * block
            starts = np.where(snapped + win <= size, snapped, starts)
        return starts
