"""The one definition of "a tile holds a landslide", shared by patch export (training
labels) and evaluation (truth), so a label and a truth never disagree near the threshold.

A tile's landslide fraction is the area of its exact vector intersection with the union of
the inventory polygons (OGR), divided by the tile's area.  A tile is a landslide when that
fraction is at least ``min_fraction`` and above zero.
"""
from __future__ import annotations

from typing import Callable, Iterable, Optional, Sequence

import numpy as np
from osgeo import ogr, osr

from ..core.errors import Cancelled

ogr.UseExceptions()


def is_landslide(frac, min_fraction: float) -> np.ndarray:
    """True where a tile's landslide fraction makes it positive.  ``> 0`` as well, so a
    minimum of 0 does not turn tiles that touch no polygon into landslides."""
    f = np.asarray(frac, dtype=np.float64)
    return (f >= min_fraction) & (f > 0)


def _valid(geom: ogr.Geometry) -> ogr.Geometry:
    if geom is None or geom.IsEmpty() or geom.IsValid():
        return geom
    try:
        fixed = geom.MakeValid()
    except (AttributeError, RuntimeError):
        fixed = None
    if fixed is None or fixed.IsEmpty():
        fixed = geom.Buffer(0)
    return fixed


def _polygonal(geom: ogr.Geometry) -> list:
    """Polygon parts of any geometry (MakeValid may return a collection with lines)."""
    if geom is None or geom.IsEmpty():
        return []
    flat = ogr.GT_Flatten(geom.GetGeometryType())
    if flat == ogr.wkbPolygon:
        return [geom]
    if flat in (ogr.wkbMultiPolygon, ogr.wkbGeometryCollection):
        out = []
        for i in range(geom.GetGeometryCount()):
            out.extend(_polygonal(geom.GetGeometryRef(i).Clone()))
        return out
    return []


def reproject_wkts(wkts: Iterable[str], src_wkt: str, dst_wkt: str) -> list:
    """Inventory geometries (WKT in ``src_wkt``) as WKB in ``dst_wkt``; empty ones dropped."""
    src, dst = osr.SpatialReference(), osr.SpatialReference()
    src.ImportFromWkt(src_wkt)
    dst.ImportFromWkt(dst_wkt)
    for s in (src, dst):
        s.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    ct = None if src.IsSame(dst) else osr.CoordinateTransformation(src, dst)
    out = []
    for w in wkts:
        g = ogr.CreateGeometryFromWkt(w)
        if g is None or g.IsEmpty():
            continue
        if ct is not None:
            g.Transform(ct)
        out.append(bytes(g.ExportToWkb()))
    return out


def box_wkb(x0: float, y0: float, x1: float, y1: float) -> bytes:
    ring = ogr.Geometry(ogr.wkbLinearRing)
    for x, y in ((x0, y0), (x1, y0), (x1, y1), (x0, y1), (x0, y0)):
        ring.AddPoint_2D(x, y)
    poly = ogr.Geometry(ogr.wkbPolygon)
    poly.AddGeometry(ring)
    return bytes(poly.ExportToWkb())


class Truth:
    """An inventory prepared once (made valid, unioned so overlaps count once), then asked
    for the landslide fraction of any tiles in the same CRS."""

    def __init__(self, inventory_wkb: Iterable[bytes]):
        parts: list = []
        for w in inventory_wkb:
            if not w:
                continue
            parts.extend(_polygonal(_valid(ogr.CreateGeometryFromWkb(bytes(w)))))
        if parts:
            union = ogr.Geometry(ogr.wkbMultiPolygon)
            for p in parts:
                union.AddGeometry(p)
            # the union makes the parts disjoint, so their intersection areas simply add up
            parts = _polygonal(union.UnionCascaded())
        self.parts = parts
        # (minx, maxx, miny, maxy) per part, as OGR's GetEnvelope
        self.envelopes = np.array([p.GetEnvelope() for p in parts], dtype=np.float64).reshape(-1, 4)

    def __len__(self) -> int:
        return len(self.parts)

    def fractions(self, tiles_wkb: Sequence[bytes], progress: Optional[Callable[[float], None]] = None,
                  is_cancelled: Optional[Callable[[], bool]] = None) -> np.ndarray:
        """float64 (n_tiles,) in [0, 1]: each tile's area fraction covered by the inventory.
        ``progress(fraction)`` is called as the parts are processed; ``is_cancelled()``
        True raises ``Cancelled``."""
        n = len(tiles_wkb)
        covered = np.zeros(n, dtype=np.float64)
        if n == 0:
            return covered
        tiles = [ogr.CreateGeometryFromWkb(bytes(w)) if w else None for w in tiles_wkb]
        area = np.array([t.GetArea() if t is not None else 0.0 for t in tiles])
        env = np.array([t.GetEnvelope() if t is not None else (np.inf, -np.inf, np.inf, -np.inf) for t in tiles])
        for k, part in enumerate(self.parts):
            if is_cancelled is not None and is_cancelled():
                raise Cancelled()
            if progress is not None and k % 50 == 0:
                progress(k / len(self.parts))
            px0, px1, py0, py1 = self.envelopes[k]
            hit = np.nonzero((env[:, 0] < px1) & (env[:, 1] > px0) & (env[:, 2] < py1) & (env[:, 3] > py0))[0]
            for i in hit:
                inter = tiles[i].Intersection(part)
                if inter is not None and not inter.IsEmpty():
                    covered[i] += inter.GetArea()
        with np.errstate(divide="ignore", invalid="ignore"):
            frac = np.where(area > 0, covered / np.where(area > 0, area, 1.0), 0.0)
        return np.clip(frac, 0.0, 1.0)

    def box_fractions(self, boxes) -> np.ndarray:
        """The same for axis-aligned tiles given as rows of (x0, y0, x1, y1)."""
        return self.fractions([box_wkb(*map(float, b)) for b in np.asarray(boxes, dtype=np.float64).reshape(-1, 4)])


def tile_landslide_fractions(tiles_wkb: Sequence[bytes], inventory_wkb: Iterable[bytes], progress=None,
                             is_cancelled=None) -> np.ndarray:
    """Fraction of each tile's area covered by the inventory polygons (both in one CRS)."""
    return Truth(inventory_wkb).fractions(tiles_wkb, progress=progress, is_cancelled=is_cancelled)
