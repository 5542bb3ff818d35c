"""Image chips of one tile from the source rasters, as RGB arrays (QGIS- and Qt-free).

A chip is the tile plus a margin of context, warped onto a small north-up grid in the
tile grid's CRS (so chips from layers in other CRSs line up pixel for pixel and the
post-minus-pre SAR difference is taken on one grid).  Reading goes through the engine's
``AlignedLayer`` (a GDAL warped VRT of just that window), and units are decided once per
layer from a decimated sample exactly as ``landslide:detect`` decides them.

Chips: Sentinel-2 true colour, NDVI, and for each orbit SAR VV and VH change
(post - pre, dB).  A chip that cannot be drawn carries a message saying why (which layer
is missing, or that the tile lies outside it) instead of pixels.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import numpy as np
from osgeo import osr

from ..core.channels import PATCH_SIZE, PIXEL_SIZE_M, ROLE_LABELS, S1_ROLES
from ..core.errors import InputError
from ..engine.align import AlignedLayer, Grid, InputLayer, guess_s2_bands
from ..engine.units import decide_s2, decide_sar

ORBITS = (("DESC", "descending"), ("ASC", "ascending"))
SHORT_ORBIT = {"DESC": "desc.", "ASC": "asc."}
TILE_PX = PATCH_SIZE  # pixels across a tile at the detect grid's 10 m

# colour ramps: (position 0..1, (r, g, b))
NDVI_RAMP = ((0.0, (165, 0, 38)), (0.25, (244, 109, 67)), (0.5, (254, 224, 139)),
             (0.75, (166, 217, 106)), (1.0, (0, 104, 55)))  # RdYlGn
DIFF_RAMP = ((0.0, (33, 102, 172)), (0.25, (146, 197, 222)), (0.5, (247, 247, 247)),
             (0.75, (244, 165, 130)), (1.0, (178, 24, 43)))  # RdBu reversed: blue = decrease
NDVI_RANGE = (-0.2, 0.8)
DIFF_RANGE_DB = (-6.0, 6.0)
NODATA_RGB = (190, 190, 190)
STRETCH_PERCENTILES = (2.0, 98.0)  # of the whole layer, as QGIS's default cumulative cut


@dataclass
class Legend:
    vmin: float
    vmax: float
    ramp: tuple
    unit: str

    def ticks(self) -> list[float]:
        return [self.vmin, (self.vmin + self.vmax) / 2.0, self.vmax]


@dataclass
class Chip:
    key: str  # s2_rgb | ndvi | dvv_desc | dvh_desc | dvv_asc | dvh_asc
    title: str
    rgb: np.ndarray | None = None  # (h, w, 3) uint8
    message: str = ""  # why there are no pixels
    legend: Legend | None = None
    tile_rect: tuple = (0, 0, 0, 0)  # the tile inside the chip, pixels: x0, y0, x1, y1

    @property
    def ok(self) -> bool:
        return self.rgb is not None


@dataclass
class Sources:
    """File paths of the source rasters (None: not loaded) and their band numbers."""

    s2: str | None = None
    s2_bands: tuple | None = None  # red, green, blue, NIR; None: from the band names, else 1-4
    s1: dict = field(default_factory=dict)  # role -> path
    vv_band: int = 1
    vh_band: int = 2

    def rgbn_bands(self) -> list[int]:
        """The S2 band numbers of red, green, blue and NIR (guessed once when not given)."""
        if self.s2_bands is None and self.s2:
            self.s2_bands = tuple(guess_s2_bands(self.s2)[0])
        return list(self.s2_bands or (1, 2, 3, 4))

    def has_any(self) -> bool:
        return bool(self.s2) or any(self.s1.get(r) for r in S1_ROLES)


def chip_titles() -> list[tuple[str, str]]:
    """(key, title) of every chip, in display order."""
    out = [("s2_rgb", S2_TITLE), ("ndvi", "NDVI (S2)")]
    for orbit, _label in ORBITS:
        out += [(f"d{pol}_{orbit.lower()}", _sar_title(orbit, pol)) for pol in ("vv", "vh")]
    return out


S2_TITLE = "S2 true colour"


def _sar_title(orbit: str, pol: str) -> str:
    return f"S1 {SHORT_ORBIT[orbit]} {pol.upper()} post-pre"


def apply_ramp(values: np.ndarray, vmin: float, vmax: float, ramp) -> np.ndarray:
    """float (h, w) -> uint8 (h, w, 3); NaN -> NODATA_RGB."""
    t = (np.asarray(values, dtype=np.float64) - vmin) / (vmax - vmin)
    nan = ~np.isfinite(t)
    t = np.clip(np.where(nan, 0.0, t), 0.0, 1.0)
    pos = [p for p, _ in ramp]
    out = np.empty(t.shape + (3,), dtype=np.uint8)
    for k in range(3):
        out[..., k] = np.round(np.interp(t, pos, [c[k] for _, c in ramp])).astype(np.uint8)
    out[nan] = NODATA_RGB
    return out


def stretch(values: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Linear stretch to 0..255 (NaN -> 0)."""
    t = (np.asarray(values, dtype=np.float64) - lo) / max(hi - lo, 1e-9)
    return np.round(np.clip(np.nan_to_num(t, nan=0.0), 0, 1) * 255).astype(np.uint8)


def ndvi(red: np.ndarray, nir: np.ndarray) -> np.ndarray:
    """On physical reflectance (offset removed); NaN where undefined."""
    red = np.clip(red, 0, None)
    nir = np.clip(nir, 0, None)
    with np.errstate(divide="ignore", invalid="ignore"):
        v = (nir - red) / (nir + red)
    v[~np.isfinite(v)] = np.nan
    return v


def _projected(wkt: str) -> bool:
    s = osr.SpatialReference()
    s.ImportFromWkt(wkt)
    return bool(s.IsProjected())


def chip_grid(bounds, crs_wkt: str, margin: float = 0.25) -> tuple[Grid, tuple]:
    """The chip's grid around a tile ``bounds`` = (xmin, ymin, xmax, ymax) and the tile's
    pixel rectangle inside it."""
    x0, y0, x1, y1 = bounds
    w, h = x1 - x0, y1 - y0
    mx, my = w * margin, h * margin
    cw = w + 2 * mx
    if _projected(crs_wkt):
        px = int(min(256, max(32, round(cw / PIXEL_SIZE_M))))
    else:
        px = int(round(TILE_PX * (1 + 2 * margin)))
    res = cw / px
    py = max(1, int(round((h + 2 * my) / res)))
    grid = Grid(crs_wkt, x0 - mx, y1 + my, res, px, py)
    rect = (mx / res, my / res, (mx + w) / res, (my + h) / res)
    return grid, tuple(int(round(v)) for v in rect)


class ChipRenderer:
    """Renders the chips of tiles of one grid; caches per-layer unit decisions and stretches."""

    def __init__(self, sources: Sources, crs_wkt: str, margin: float = 0.25):
        self.sources = sources
        self.crs_wkt = crs_wkt
        self.margin = margin
        self._s2_conv = None  # (S2Convention, per-band (lo, hi) in reflectance x 10000)
        self._sar_conv: dict = {}

    # -- per-layer decisions -------------------------------------------------------------
    def _s2_convention(self, aligned: AlignedLayer):
        if self._s2_conv is None:
            sample = aligned.sample(256)
            conv = decide_s2(sample)
            refl = self._reflectance(sample, conv)
            lims = []
            for b in range(3):
                v = refl[b][np.isfinite(refl[b])]
                lims.append(tuple(np.percentile(v, STRETCH_PERCENTILES)) if v.size else (0.0, 3000.0))
            self._s2_conv = (conv, lims)
        return self._s2_conv

    @staticmethod
    def _reflectance(raw: np.ndarray, conv) -> np.ndarray:
        """raw -> reflectance x 10000 without the offset."""
        return raw * np.float32(conv.scale) - np.float32(1000.0 if conv.offset_present else 0.0)

    def _sar(self, role: str, grid: Grid):
        path = self.sources.s1.get(role)
        if not path:
            return None, f"No {ROLE_LABELS[role]} layer selected"
        layer = InputLayer(role, path, [self.sources.vv_band, self.sources.vh_band])
        aligned = AlignedLayer.open(layer, grid)
        key = (path, self.sources.vv_band, self.sources.vh_band)
        if key not in self._sar_conv:
            self._sar_conv[key] = decide_sar(aligned.sample(256), label=ROLE_LABELS[role])
        conv = self._sar_conv[key]
        if aligned.average_linear_power(conv.scale):  # as the detection reads it
            conv = conv.averaged_as_power()
        return conv.to_db(aligned.read(0, grid.height)), ""

    # -- chips ---------------------------------------------------------------------------
    def render(self, bounds) -> list[Chip]:
        grid, rect = chip_grid(bounds, self.crs_wkt, self.margin)
        chips = self._s2_chips(grid) + self._sar_chips(grid)
        for c in chips:
            c.tile_rect = rect
        return chips

    def _s2_chips(self, grid: Grid) -> list[Chip]:
        rgb = Chip("s2_rgb", S2_TITLE)
        nd = Chip("ndvi", "NDVI (S2)", legend=Legend(*NDVI_RANGE, NDVI_RAMP, ""))
        if not self.sources.s2:
            rgb.message = nd.message = "No Sentinel-2 layer selected"
            return [rgb, nd]
        try:
            aligned = AlignedLayer.open(InputLayer("S2", self.sources.s2, self.sources.rgbn_bands()), grid)
            conv, lims = self._s2_convention(aligned)
            refl = self._reflectance(aligned.read(0, grid.height), conv)
        except (InputError, ValueError, RuntimeError) as exc:
            rgb.message = nd.message = str(exc)
            return [rgb, nd]
        if not np.isfinite(refl).any():
            rgb.message = nd.message = "The tile lies outside the Sentinel-2 layer"
            return [rgb, nd]
        rgb.rgb = np.dstack([stretch(refl[b], *lims[b]) for b in range(3)])
        rgb.rgb[~np.isfinite(refl[:3]).all(axis=0)] = NODATA_RGB
        nd.rgb = apply_ramp(ndvi(refl[0], refl[3]), *NDVI_RANGE, NDVI_RAMP)
        return [rgb, nd]

    def _sar_chips(self, grid: Grid) -> list[Chip]:
        chips = []
        for orbit, label in ORBITS:
            o = orbit.lower()
            pair = [Chip(f"d{pol}_{o}", _sar_title(orbit, pol),
                         legend=Legend(*DIFF_RANGE_DB, DIFF_RAMP, "dB")) for pol in ("vv", "vh")]
            try:
                post, m1 = self._sar(f"S1_{orbit}_POST", grid)
                pre, m2 = self._sar(f"S1_{orbit}_PRE", grid)
            except (InputError, ValueError, RuntimeError) as exc:
                post = pre = None
                m1, m2 = str(exc), ""
            if post is None or pre is None:
                for c in pair:
                    c.message = "\n".join(m for m in (m1, m2) if m)
                chips += pair
                continue
            diff = post - pre
            if not np.isfinite(diff).any():
                for c in pair:
                    c.message = f"The tile lies outside the Sentinel-1 {label} layers"
                chips += pair
                continue
            for k, c in enumerate(pair):
                c.rgb = apply_ramp(diff[k], *DIFF_RANGE_DB, DIFF_RAMP)
            chips += pair
        return chips


# -- picking source layers by name -----------------------------------------------------
_S2_RE = re.compile(r"(^|[^a-z0-9])(s2[ab]?|sentinel[-_ ]?2|msi|l2a|l1c)([^a-z0-9]|$)")
_S1_RE = re.compile(r"(^|[^a-z0-9])(s1[abc]?|sentinel[-_ ]?1|sar|grd|iw|sigma0?|gamma0?)([^a-z0-9]|$)")


def _tokens(text: str) -> set[str]:
    return set(t for t in re.split(r"[^a-z0-9]+", text.lower()) if t)


def guess_role(text: str) -> str | None:
    """The source role a raster's name/file name suggests: 'S2', 'S1_DESC_POST', ... or None."""
    t = text.lower()
    tok = _tokens(t)
    is_s1 = bool(_S1_RE.search(t)) or bool(tok & {"vv", "vh"})
    if not is_s1:
        return "S2" if _S2_RE.search(t) else None
    desc = any(x.startswith(("desc", "dsc")) for x in tok) or "des" in tok
    asc = any(x.startswith("asc") for x in tok)
    post = bool(tok & {"post", "after", "postevent"}) or "post" in t
    pre = bool(tok & {"pre", "before", "preevent"}) or re.search(r"(^|[^a-z])pre([^a-z]|$)", t) is not None
    if desc == asc or post == pre:
        return None
    return f"S1_{'DESC' if desc else 'ASC'}_{'POST' if post else 'PRE'}"


def guess_sources(layers: list[tuple[str, str]]) -> dict:
    """layers: (id, name + ' ' + file name); returns role -> id, first match wins."""
    out: dict = {}
    for lid, text in layers:
        role = guess_role(text)
        if role and role not in out:
            out[role] = lid
    return out


def finite_or_none(v) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None
