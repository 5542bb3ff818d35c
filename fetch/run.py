"""run_fetch: from an area and an event date to local COGs named like detect's inputs.

All files are written under a hidden temporary folder inside OUTPUT_FOLDER and renamed into
place only when everything succeeded; on any error or cancel the temporary folder is removed."""
from __future__ import annotations

import csv
import datetime as dt
import hashlib
import json
import os
import shutil
import uuid
from dataclasses import dataclass, field

from osgeo import gdal

from ..core.errors import Cancelled
from .catalog import S1_ASSETS, S2_ASSETS, SCL_ASSETS, Session, Signer, catalog
from .errors import FetchError, NoItems, UncalibratedSAR
from .read import area_grid, scl_fractions, valid_fraction, warp_window, write_cog
from .select import choose_s1, choose_s2, s1_groups, s2_groups

SOURCES = ("S2", "S1_DESC", "S1_ASC")
DIRECTIONS = {"S1_DESC": "descending", "S1_ASC": "ascending"}
ITEM_FIELDS = ("role", "id", "collection", "datetime", "orbit_direction", "relative_orbit",
               "cloud_over_area_pct", "coverage_pct", "platform")
ITEMS_FILE = "items.csv"
PARTIAL_PREFIX = ".fetch-partial-"


@dataclass
class FetchOptions:
    extent: tuple  # xmin, ymin, xmax, ymax, crs (WKT or 'EPSG:n')
    event: str  # 'YYYY-MM-DD' (the event day is then neither pre nor post) or 'YYYY-MM-DDTHH:MM' UTC
    output_folder: str
    post_days: int = 20
    pre_days: int = 30
    max_cloud: float = 20.0
    catalog: str = "planetary"  # planetary, earthsearch, custom
    catalog_url: str = ""
    token_url: str | None = None  # None: the catalog's own (Planetary Computer); '' : no signing
    sources: tuple = SOURCES
    cache_folder: str = ""
    server_filter: bool = True  # False: filter on the client even where the server could
    max_candidates: int = 12  # S2 acquisitions whose SCL window is measured (nearest the event first)


@dataclass
class FetchResult:
    outputs: dict  # role -> path (S2, S2_MASK, S1_DESC_POST, ...)
    items_csv: str
    rows: list
    log: list = field(default_factory=list)
    from_cache: bool = False


def event_windows(event: str, pre_days: int, post_days: int):
    """(pre_start, pre_end, post_start, post_end, note): pre is [pre_start, pre_end), post
    [post_start, post_end].  A bare date leaves the event day out of both windows."""
    s = event.strip()
    try:
        t = dt.datetime.fromisoformat(s.replace("Z", "+00:00"))
    except ValueError:
        raise FetchError(f"EVENT_DATE '{event}' is not a date (YYYY-MM-DD or YYYY-MM-DDTHH:MM, UTC).") from None
    t = t if t.tzinfo else t.replace(tzinfo=dt.timezone.utc)
    if len(s) <= 10:
        pre_end, post_start = t, t + dt.timedelta(days=1)
        note = (f"Event {s} (a date without a time): scenes acquired on the event day are used neither as "
                "pre- nor as post-event; give a UTC time (YYYY-MM-DDTHH:MM) to use them.")
    else:
        pre_end = post_start = t
        note = f"Event {t:%Y-%m-%d %H:%M} UTC."
    return pre_end - dt.timedelta(days=pre_days), pre_end, post_start, post_start + dt.timedelta(days=post_days), note


def run_fetch(opts: FetchOptions, progress=None, is_cancelled=None) -> FetchResult:
    sources = tuple(s for s in SOURCES if s in opts.sources)
    if not sources:
        raise FetchError("Choose at least one source to fetch (S2, S1 descending, S1 ascending).")
    cat = catalog(opts.catalog, opts.catalog_url, opts.token_url)
    pre_start, pre_end, post_start, post_end, note = event_windows(opts.event, opts.pre_days, opts.post_days)
    try:
        grid = area_grid(opts.extent)
    except (ValueError, RuntimeError) as exc:
        raise FetchError(f"The area cannot be used: {exc}") from None
    w, h = grid.size
    if w * h > 400_000_000:
        raise FetchError(f"The area is {w} x {h} pixels at 10 m: too large for one fetch; split it.")
    log = [note, f"Area: {w} x {h} pixels of 10 m in EPSG:{grid.epsg} (lon/lat "
                 f"{', '.join(f'{v:.4f}' for v in grid.lonlat)}); post-event window {post_start:%Y-%m-%d %H:%M} to "
                 f"{post_end:%Y-%m-%d %H:%M}, pre-event window {pre_start:%Y-%m-%d %H:%M} to {pre_end:%Y-%m-%d %H:%M}."]
    key = hashlib.sha256(json.dumps({
        "url": cat.url, "s2": cat.s2, "s1": cat.s1_calibrated, "epsg": grid.epsg, "bounds": grid.bounds,
        "windows": [str(x) for x in (pre_start, pre_end, post_start, post_end)], "max_cloud": opts.max_cloud,
        "sources": sources, "max_candidates": opts.max_candidates}, sort_keys=True).encode()).hexdigest()[:24]
    os.makedirs(opts.output_folder, exist_ok=True)
    tmp = os.path.join(opts.output_folder, PARTIAL_PREFIX + uuid.uuid4().hex[:8])
    os.makedirs(tmp)
    try:
        cached = os.path.join(opts.cache_folder, key) if opts.cache_folder else ""
        if cached and os.path.isfile(os.path.join(cached, "result.json")):
            result = _from_cache(cached, tmp, log)
        else:
            result = _fetch(opts, cat, grid, sources, (pre_start, pre_end, post_start, post_end), tmp, log,
                            progress, is_cancelled)
            if cached:
                _to_cache(tmp, cached, result)
        if is_cancelled and is_cancelled():
            raise Cancelled()
        return _publish(tmp, opts.output_folder, result)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _fetch(opts, cat, grid, sources, windows, tmp, log, progress, is_cancelled) -> FetchResult:
    pre_start, pre_end, post_start, post_end = windows
    session = Session(cat, server_filter=opts.server_filter, log=log).open()
    signer = Signer(cat.token_url) if cat.token_url else None
    if signer:
        log.append(f"Asset URLs signed with tokens from {cat.token_url}.")
    work = os.path.join(tmp, "work")
    os.makedirs(work)
    gdal.VSICurlClearCache()  # what is read comes from the server now, not from an earlier run's memory
    state = {"done": 0, "total": 1}

    def step(msg):
        state["done"] += 1
        if progress:
            progress(min(1.0, state["done"] / max(1, state["total"])), msg)

    def href(item, keys, what):
        h = item.href(keys)
        if not h:
            raise NoItems(f"Item {item.id} has no {what} asset (looked for {', '.join(keys)}).")
        return signer.sign(h, item.collection) if signer else h

    def warp(items, keys, what, dst, dtype, nodata):
        return warp_window([href(i, keys, what) for i in items], dst, grid, dtype, nodata, is_cancelled,
                           what=f"{what} of {', '.join(i.id for i in items)}", signed=bool(signer))

    outputs, rows = {}, []
    s1 = {}
    for src in sources:  # search everything first: no read before the selection is known to be possible
        if src == "S2":
            continue
        direction = DIRECTIONS[src]
        cal = [c for c in cat.s1_calibrated if c in session.collections]
        items = [i for c in cal for i in session.search(c, grid.lonlat, pre_start, post_end,
                                                         {"sat:orbit_state": direction})]
        if not items:
            unc = [i for c in cat.s1_uncalibrated if c in session.collections
                   for i in session.search(c, grid.lonlat, pre_start, post_end, {"sat:orbit_state": direction})]
            if unc:
                raise UncalibratedSAR(
                    f"Only uncalibrated Sentinel-1 GRD ({unc[0].collection}, e.g. {unc[0].id}) covers the area "
                    f"({direction}). Detection needs calibrated, terrain-corrected backscatter (gamma0 or sigma0, "
                    "e.g. Planetary Computer's sentinel-1-rtc): use that catalog, or calibrate and "
                    "terrain-correct the GRD yourself (SNAP: Apply-Orbit-File, Calibration, Terrain-Flattening, "
                    "Terrain-Correction) and give the results to detect; or leave the Sentinel-1 sources out.")
            have = ", ".join(cal) or "the catalog has no calibrated Sentinel-1 collection"
            raise NoItems(f"No calibrated Sentinel-1 {direction} item ({have}) over the area between "
                          f"{pre_start:%Y-%m-%d} and {post_end:%Y-%m-%d}.")
        both = [i for i in items if i.href(S1_ASSETS["VV"]) and i.href(S1_ASSETS["VH"])]
        if len(both) < len(items):
            log.append(f"  S1 {direction}: {len(items) - len(both)} item(s) without both VV and VH left out.")
        groups = s1_groups(both)
        post = [g for g in groups if post_start <= g.datetime <= post_end]
        pre = [g for g in groups if pre_start <= g.datetime < pre_end]
        s1[src] = choose_s1(post, pre, direction, log)

    if "S2" in sources:
        if cat.s2 not in session.collections:
            raise NoItems(f"The catalog has no {cat.s2} collection (Sentinel-2 L2A).")
        items = session.search(cat.s2, grid.lonlat, post_start, post_end)
        groups = sorted(s2_groups(items), key=lambda g: g.datetime)[:opts.max_candidates]
        if not groups:
            raise NoItems(f"No Sentinel-2 L2A item ({cat.s2}) over the area between {post_start:%Y-%m-%d} and "
                          f"{post_end:%Y-%m-%d}. Widen POST_DAYS.")
        state["total"] = len(groups) + 1 + 4 * len(s1)
        for n, g in enumerate(groups):
            path = warp(g.items, SCL_ASSETS, "SCL", os.path.join(work, f"scl_{n}.tif"), gdal.GDT_Byte, 0)
            g.cloud, g.coverage = scl_fractions(path)
            g.notes.append(path)
            step(f"SCL window of {g.datetime:%Y-%m-%d} ({g.ids}): {100 * g.cloud:.1f}% cloud")
        best = choose_s2(groups, post_start, opts.max_cloud, log)
        bands = [warp(best.items, keys, band, os.path.join(work, f"s2_{band}.tif"), gdal.GDT_UInt16, 0)
                 for band, keys in (("B04", S2_ASSETS["B04"]), ("B03", S2_ASSETS["B03"]),
                                    ("B02", S2_ASSETS["B02"]), ("B08", S2_ASSETS["B08"]))]
        outputs["S2"] = write_cog(bands, ["B04", "B03", "B02", "B08"], os.path.join(tmp, "S2.tif"))
        outputs["S2_MASK"] = write_cog([best.notes[0]], ["SCL"], os.path.join(tmp, "S2_MASK.tif"))
        step(f"Sentinel-2 {best.datetime:%Y-%m-%d} written (R, G, B, NIR as B04, B03, B02, B08; SCL as S2_MASK)")
        rows += [_row("S2", i, best) for i in best.items]
    else:
        state["total"] = 4 * len(s1)

    for src, (post, pre) in s1.items():
        for when, g in (("POST", post), ("PRE", pre)):
            role = f"{src}_{when}"
            pols = [warp(g.items, S1_ASSETS[p], p, os.path.join(work, f"{role}_{p}.tif"), gdal.GDT_Float32,
                         float("nan")) for p in ("VV", "VH")]
            g.coverage = valid_fraction(pols[0])
            outputs[role] = write_cog(pols, ["VV", "VH"], os.path.join(tmp, f"{role}.tif"))
            step(f"{role}: {g.datetime:%Y-%m-%d} ({g.ids}), {100 * g.coverage:.1f}% of the area covered")
            if g.coverage < 0.999:
                log.append(f"Warning: {role} covers {100 * g.coverage:.1f}% of the area; detect scores the tiles "
                           "outside it with the other layers (every layer is written on the whole area's grid).")
            rows += [_row(role, i, g) for i in g.items]
    log.append("Sentinel-1 is fetched as calibrated, terrain-corrected backscatter (linear power) and Sentinel-2 "
               "as L2A digital numbers: detect identifies the units and the +1000 offset itself.")
    shutil.rmtree(work, ignore_errors=True)
    items_csv = os.path.join(tmp, ITEMS_FILE)
    _write_rows(items_csv, rows)
    return FetchResult(outputs, items_csv, rows, log)


def _row(role, item, g) -> dict:
    return {"role": role, "id": item.id, "collection": item.collection,
            "datetime": item.datetime.strftime("%Y-%m-%dT%H:%M:%SZ"), "orbit_direction": item.orbit_direction,
            "relative_orbit": "" if item.relative_orbit is None else item.relative_orbit,
            "cloud_over_area_pct": "" if g.cloud is None else round(100 * g.cloud, 2),
            "coverage_pct": "" if g.coverage is None else round(100 * g.coverage, 2), "platform": item.platform}


def _write_rows(path, rows):
    with open(path, "w", newline="", encoding="utf-8") as f:
        wr = csv.DictWriter(f, ITEM_FIELDS)
        wr.writeheader()
        wr.writerows(rows)


def _to_cache(tmp, cached, result: FetchResult):
    part = cached + ".partial-" + uuid.uuid4().hex[:6]
    os.makedirs(part)
    try:
        for p in list(result.outputs.values()) + [result.items_csv]:
            shutil.copy2(p, os.path.join(part, os.path.basename(p)))
        with open(os.path.join(part, "result.json"), "w", encoding="utf-8") as f:
            json.dump({"outputs": {k: os.path.basename(v) for k, v in result.outputs.items()},
                       "rows": result.rows, "log": result.log}, f, indent=1)
        shutil.rmtree(cached, ignore_errors=True)
        os.replace(part, cached)
    finally:
        shutil.rmtree(part, ignore_errors=True)


def _from_cache(cached, tmp, log) -> FetchResult:
    with open(os.path.join(cached, "result.json"), encoding="utf-8") as f:
        meta = json.load(f)
    outputs = {}
    for role, name in meta["outputs"].items():
        outputs[role] = shutil.copy2(os.path.join(cached, name), os.path.join(tmp, name))
    items_csv = shutil.copy2(os.path.join(cached, ITEMS_FILE), os.path.join(tmp, ITEMS_FILE))
    log += [f"From the cache {cached} (same area, dates, catalog and sources): no network access. Delete that "
            "folder to search the catalog again."] + meta["log"][2:]
    return FetchResult(outputs, items_csv, meta["rows"], log, from_cache=True)


def _publish(tmp, folder, result: FetchResult) -> FetchResult:
    """Rename every finished file into the output folder (each rename is atomic)."""
    final = {}
    for role, p in result.outputs.items():
        final[role] = os.path.join(folder, os.path.basename(p))
        os.replace(p, final[role])
    items = os.path.join(folder, ITEMS_FILE)
    os.replace(result.items_csv, items)
    return FetchResult(final, items, result.rows, result.log, result.from_cache)
