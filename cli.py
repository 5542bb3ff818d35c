"""Command line without QGIS (servers, clusters): the same engine as the algorithms.

    python -m sentinel_landslide.cli detect --s2 S2.tif [--s1-desc-post ... --s1-asc-pre ...] \\
        [--s2-mask SCL.tif] --out grid.gpkg [--raster prob.tif] [--model DIR] [--threshold T]
        [--adapt-to-scene | --no-adapt-to-scene] [--base-features train_features_7147.csv.gz]
        [--full-ensemble] [--cascade-margin M] [--execution-provider auto|cpu|cuda|...]
    python -m sentinel_landslide.cli export --s2 S2.tif ... --out patches/ [--inventory slides.gpkg]
    python -m sentinel_landslide.cli batch --scenes SCENES.csv --out DIR [--scheduler ADDRESS | --workers N]

The analyst's loop (the same functions as landslide:sample, landslide:accuracy, landslide:adapt):
    python -m sentinel_landslide.cli sample --grid grid.gpkg [--out sampled.gpkg] [--n-flagged 50 --n-unflagged 50 --seed 42]
    python -m sentinel_landslide.cli accuracy --grid sampled.gpkg [--html accuracy.html]
    python -m sentinel_landslide.cli adapt --grid reviewed.gpkg --s2 S2.tif [--s1-... as detect] --out new_package/

Training: python -m sentinel_landslide.training.train_gbm / train_nn (see --help).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path

import numpy as np

from .core.errors import InputError
from .engine.align import InputLayer
from .engine.detect import DetectOptions
from .engine.sampling import DEFAULT_PER_CLASS
from .engine.units import S2_OFFSET_CHOICES, S2_SCALE_CHOICES, SAR_UNIT_CHOICES
from .models.ensemble import DEFAULT_CASCADE_MARGIN, MissingDependency
from .models.package import PackageError, load_package
from .pipeline import run_detection
from .training.scene_adapt import ADAPT_TO_SCENE_DEFAULT

S1_FLAGS = (("s1_desc_post", "S1_DESC_POST"), ("s1_desc_pre", "S1_DESC_PRE"),
            ("s1_asc_post", "S1_ASC_POST"), ("s1_asc_pre", "S1_ASC_PRE"))


def _inputs(p: argparse.ArgumentParser) -> None:
    p.add_argument("--s2", help="post-event Sentinel-2 raster")
    p.add_argument("--s2-mask", help="Sentinel-2 cloud mask: L2A SCL raster or 0/1 (1 = invalid), band 1; "
                   "default: the S2 raster's band described as SCL, if any")
    p.add_argument("--s2-bands", default=None,
                   help="band numbers of R,G,B,NIR (default: from the band names, B4/B04/Red..., else 1,2,3,4)")
    for flag, _ in S1_FLAGS:
        p.add_argument("--" + flag.replace("_", "-"), dest=flag, help="Sentinel-1 VV,VH raster")
    p.add_argument("--s1-bands", default="1,2", help="band numbers of VV,VH (default 1,2)")
    p.add_argument("--extent", help="xmin,ymin,xmax,ymax in the grid CRS (or add --extent-epsg)")
    p.add_argument("--extent-epsg", type=int)
    p.add_argument("--s2-scale", choices=S2_SCALE_CHOICES, default="auto")
    p.add_argument("--s2-offset", choices=S2_OFFSET_CHOICES, default="auto")
    p.add_argument("--sar-units", choices=SAR_UNIT_CHOICES, default="auto")
    p.add_argument("--min-valid", type=float, default=0.5)
    p.add_argument("--model", help="model package folder (default: bundled)")


def _scene_flags(p: argparse.ArgumentParser) -> None:
    """ADAPT_TO_SCENE of landslide:detect (training/scene_adapt.py; the default lives there)."""
    p.add_argument("--adapt-to-scene", action=argparse.BooleanOptionalAction, default=ADAPT_TO_SCENE_DEFAULT,
                   help="refit the GBM members toward the scene's features before scoring (default: "
                        f"{'on' if ADAPT_TO_SCENE_DEFAULT else 'off'}; docs/concepts/scene-adaptation.md)")
    p.add_argument("--base-features", help="training feature table for --adapt-to-scene (default: "
                   "SENTINEL_LANDSLIDE_BASE_FEATURES or the real competition table where present)")


def _scene_adapter(a):
    """``run_batch``'s ``adapt``: None, or scene_adapted with the command line's table."""
    if not a.adapt_to_scene:
        return None
    from .training.scene_adapt import scene_adapted

    return lambda opts, pkg: scene_adapted(opts, pkg, base_features=a.base_features)
def _scoring_args(p, cascade: bool = True) -> None:
    """Scoring options (docs/concepts/cascade.md)."""
    if cascade:
        p.add_argument("--full-ensemble", action="store_true",
                       help="every network on every tile (default: the cascade; same flags)")
        p.add_argument("--cascade-margin", type=float, default=None,
                       help=f"the networks also run where the probability may lie this close to the threshold "
                            f"(default {DEFAULT_CASCADE_MARGIN})")
    p.add_argument("--execution-provider", default="auto",
                   help="auto (CUDA, DirectML, CoreML, else CPU), cpu, or a provider (cuda, directml, coreml, "
                        "or onnxruntime's name); one that fails to start falls back to the CPU")


def _apply_scoring(o: DetectOptions, a) -> DetectOptions:
    o.full_ensemble = bool(getattr(a, "full_ensemble", False))
    o.cascade_margin = getattr(a, "cascade_margin", None)
    o.execution_provider = getattr(a, "execution_provider", "auto") or "auto"
    return o


def _options(a) -> DetectOptions:
    o = DetectOptions(s2_scale=a.s2_scale, s2_offset=a.s2_offset, sar_units=a.sar_units,
                      min_valid_fraction=a.min_valid)
    if a.s2:
        o.s2 = InputLayer("S2", a.s2, [int(b) for b in a.s2_bands.split(",")] if a.s2_bands else None)
    if a.s2_mask:
        o.s2_mask = InputLayer("S2_MASK", a.s2_mask, [1])
    for flag, role in S1_FLAGS:
        if getattr(a, flag):
            o.s1[role] = InputLayer(role, getattr(a, flag), [int(b) for b in a.s1_bands.split(",")])
    if a.extent:
        wkt = ""
        if a.extent_epsg:
            from osgeo import osr
            s = osr.SpatialReference()
            s.ImportFromEPSG(a.extent_epsg)
            wkt = s.ExportToWkt()
        o.extent = tuple(float(v) for v in a.extent.split(",")) + (wkt,)
    return o


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="sentinel_landslide.cli", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("detect", help="score tiles, write the grid")
    _inputs(d)
    d.add_argument("--out", required=True, help="grid file (.gpkg, .shp, .geojson, .fgb)")
    d.add_argument("--raster", help="optional probability GeoTIFF (one pixel per tile)")
    d.add_argument("--threshold", type=float)
    d.add_argument("--tta", action="store_true")
    _scene_flags(d)
    _scoring_args(d)
    e = sub.add_parser("export", help="write competition-layout patches")
    _inputs(e)
    e.add_argument("--out", required=True, help="folder")
    e.add_argument("--inventory", help="landslide polygons (any OGR format) for Train.csv labels")
    e.add_argument("--min-fraction", type=float, default=0.01)
    b = sub.add_parser("batch", help="many scenes on a Dask cluster (needs dask[distributed])")
    b.add_argument("--scenes", required=True, help="CSV: id, s2, s2_mask, s1_desc_post, ... (see cluster/batch.py)")
    b.add_argument("--out", required=True, help="folder: <id>.gpkg per scene, index.csv, index.json")
    where = b.add_mutually_exclusive_group()
    where.add_argument("--scheduler", help="address of a running Dask scheduler (tcp://host:8786)")
    where.add_argument("--workers", type=int, help="processes of the local cluster started here (default: the cores)")
    b.add_argument("--band-rows", type=int, help="tile rows per task (default: about 4 tasks per worker thread)")
    b.add_argument("--task-threads", type=int, default=1, help="threads of each task's ensemble (default 1)")
    b.add_argument("--model", help="model package folder, on a path every worker sees (default: bundled)")
    _scene_flags(b)
    _scoring_args(b)
    s = sub.add_parser("sample", help="draw a stratified accuracy sample (flagged / not flagged) into the grid's 'sample' field")
    s.add_argument("--grid", required=True, help="grid from detect")
    s.add_argument("--out", help="copy of the grid with the sample (GeoPackage, GeoJSON, Shapefile); default: the grid itself")
    s.add_argument("--n-flagged", type=int, default=DEFAULT_PER_CLASS, help=f"sample size among flagged tiles "
                   f"(default {DEFAULT_PER_CLASS}, capped at the stratum)")
    s.add_argument("--n-unflagged", type=int, default=DEFAULT_PER_CLASS, help="sample size among tiles not flagged")
    s.add_argument("--seed", type=int, default=42)
    c = sub.add_parser("accuracy", help="precision, recall, F1, OA and landslide area with 95 %% intervals from the "
                       "verdicts on the sample (Olofsson et al. 2014)")
    c.add_argument("--grid", required=True, help="grid with a 'sample' field and 'review' verdicts")
    c.add_argument("--html", help="optional HTML table")
    t = sub.add_parser("adapt", help="a new model package fitted to the region from the grid's review verdicts")
    t.add_argument("--grid", required=True, help="grid from detect with verdicts in its 'review' field")
    _inputs(t)
    t.add_argument("--out", required=True, help="folder of the new package (new or empty)")
    t.add_argument("--base-features", help="base training feature table (default: the real competition table where "
                   "present, else the local examples alone)")
    t.add_argument("--threads", type=int, default=2)
    t.add_argument("--seed", type=int, default=42)
    _scoring_args(t, cascade=False)
    a = ap.parse_args(argv)
    if a.cmd == "batch":
        return _batch(a)
    if a.cmd in ("sample", "accuracy"):
        return _sample(a) if a.cmd == "sample" else _accuracy(a)
    if a.cmd == "adapt":
        return _adapt(a)
    try:
        pkg = load_package(a.model)
        opts = _apply_scoring(_options(a), a)
        if a.cmd == "detect":
            from .engine.outputs import write_grid, write_probability_raster, write_run_record

            opts.threshold, opts.tta = a.threshold, a.tta
            with contextlib.ExitStack() as scene_stack:  # --adapt-to-scene: the adapted package lives until scored
                if a.adapt_to_scene:
                    from .training.scene_adapt import scene_adapted

                    pkg, lines = scene_stack.enter_context(scene_adapted(opts, pkg, base_features=a.base_features))
                    for line in lines + [f"Model package used: {pkg.name}"]:
                        print(line, file=sys.stderr)
                res = run_detection(opts, pkg, progress=lambda s, f, m="": print(f"\r{s} {f:5.0%}", end="",
                                                                                 file=sys.stderr))
            print(file=sys.stderr)
            for line in res.log:
                print(line, file=sys.stderr)
            write_grid(a.out, res, pkg.name)
            write_run_record(a.out, opts, pkg.folder)
            if a.raster:
                write_probability_raster(a.raster, res, pkg.patch_size)
            print(json.dumps({"grid": a.out, "tiles": len(res.records), "flagged": res.flagged, "mode": res.mode,
                              "tiles_per_mode": res.mode_counts, "threshold": res.threshold,
                              "seconds": round(res.timings["total"], 2)}))
        else:
            from .engine.export import Inventory, export_patches

            inv = None
            if a.inventory:
                from osgeo import ogr
                ds = ogr.Open(a.inventory)
                lyr = ds.GetLayer(0)
                inv = Inventory(lyr.GetSpatialRef().ExportToWkt(),
                                [f.GetGeometryRef().ExportToWkt() for f in lyr if f.GetGeometryRef()])
            res = export_patches(opts, pkg, a.out, inv, a.min_fraction)
            for line in res.log:
                print(line, file=sys.stderr)
            print(json.dumps({"folder": str(res.folder), "patches": res.n_patches, "positives": res.n_positive}))
    except (InputError, PackageError, MissingDependency) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def _sample(a) -> int:
    from osgeo import gdal

    from .engine.sampling import extend_sample, sample_report, stratum_to_record
    from .engine.verdicts import PICK_FIELD, PICK_RANDOM, STRATUM_FIELD, read_grid, write_fields

    try:
        grid = read_grid(a.grid)
        stratum = grid.extra.get(STRATUM_FIELD)
        purposive = np.isfinite(grid.labels) & np.array([p != PICK_RANDOM for p in grid.pick])
        chosen, numbers = extend_sample(grid.flagged, grid.scored, grid.sample, a.n_flagged, a.n_unflagged,
                                        seed=a.seed, stratum=stratum, exclude=purposive)
        path = a.grid
        if a.out and Path(a.out).resolve() != Path(a.grid).resolve():
            if Path(a.out).exists():
                raise InputError(f"'{a.out}' exists: choose a new file for the sampled grid.")
            gdal.UseExceptions()
            gdal.VectorTranslate(a.out, a.grid)
            path = a.out
        fid = grid.fid
        sample = grid.sample.copy()
        sample[chosen] = numbers
        inside = sample > 0
        strata = dict(stratum_to_record(grid.flagged, grid.scored, stratum))
        try:  # an earlier sample is kept and topped up (engine/sampling.py ADD_RULE); verdicts are kept
            write_fields(path, {"sample": {int(fid[i]): int(n) for i, n in zip(chosen, numbers)},
                                PICK_FIELD: {int(fid[i]): PICK_RANDOM for i in np.flatnonzero(inside)},
                                STRATUM_FIELD: {int(fid[i]): v for i, v in strata.items()}})
        except (RuntimeError, AttributeError) as exc:
            raise InputError(f"The sample could not be written to '{path}' ({exc}): write it to a GeoPackage "
                             "(--out sampled.gpkg).") from None
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    in1 = grid.stratum == 1
    for i, v in strata.items():
        in1[i] = v == 1
    print(sample_report(in1, grid.scored, np.flatnonzero(inside)), file=sys.stderr)
    print(json.dumps({"grid": str(path), "sampled": int(inside.sum()), "added": len(chosen),
                      "sampled_flagged": int((inside & in1).sum()),
                      "sampled_unflagged": int((inside & ~in1).sum())}))
    return 0


def _accuracy(a) -> int:
    from .engine.accuracy import accuracy_page_html, accuracy_table_text, design_accuracy
    from .engine.verdicts import read_grid

    try:
        g = read_grid(a.grid)
        areas = (g.bounds[:, 2] - g.bounds[:, 0]) * (g.bounds[:, 3] - g.bounds[:, 1])  # tiles are rectangles
        acc = design_accuracy(g.flagged, g.scored, g.labels, g.pick, g.stratum, tile_areas=areas)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(accuracy_table_text(acc), file=sys.stderr)
    if a.html:
        Path(a.html).write_text(accuracy_page_html(acc), encoding="utf-8")
    print(json.dumps(dict(acc.as_dict(), area_unit=acc.area_unit, html=a.html)))
    return 0


def _adapt(a) -> int:
    from .training.adapt import adapt

    def progress(stage, frac):
        print(f"\r{stage} {frac:5.0%}", end="", file=sys.stderr)

    try:
        if a.base_features and not Path(a.base_features).is_file():
            raise InputError(f"The base training feature table '{a.base_features}' does not exist.")
        res = adapt(a.grid, _apply_scoring(_options(a), a), a.model, a.out, base_features=a.base_features, threads=a.threads,
                    seed=a.seed, progress=progress)
    except (InputError, PackageError, MissingDependency) as exc:
        print(f"\nerror: {exc}", file=sys.stderr)
        return 2
    print(file=sys.stderr)
    for line in res.log:
        print(line, file=sys.stderr)
    print(json.dumps({"package": str(res.folder), "mode": res.mode, "threshold": res.threshold,
                      "confirmed": res.n_confirmed, "rejected": res.n_rejected, "metrics": res.metrics,
                      "share_estimate": res.share.as_dict() if res.share is not None else None,
                      "threshold_choice": res.record.get("threshold_choice"),
                      "seconds": round(res.seconds, 1)}))
    return 0


def _batch(a) -> int:
    """Exit 0 when every scene is done or skipped, 1 when some failed (see the index), 2 on a
    problem with the whole run (package, CSV, cluster)."""
    from .cluster import MissingDask
    from .cluster.batch import read_scenes, run_batch
    from .cluster.client import open_client

    try:
        pkg = load_package(a.model)
        scenes = read_scenes(a.scenes)
        for sc in scenes:  # the command line's scoring options apply to every scene
            if sc.opts is not None:
                _apply_scoring(sc.opts, a)
        with open_client(a.scheduler, a.workers) as client:
            rows = run_batch(scenes, a.out, pkg, client, band_rows=a.band_rows, task_threads=a.task_threads,
                             log=lambda msg: print(msg, file=sys.stderr), adapt=_scene_adapter(a))
    except (InputError, PackageError, MissingDependency, MissingDask, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    counts = {k: sum(1 for r in rows if r["status"] == k) for k in ("done", "skipped", "failed")}
    print(json.dumps(dict(counts, index=str(Path(a.out) / "index.csv"))))
    return 1 if counts["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
