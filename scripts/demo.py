"""./build.sh demo: a SYNTHETIC S1+S2 scene -> landslide:detect via qgis_process.bin ->
demo_output/landslide_grid.gpkg and a PNG map rendered by QGIS.

The scene is synthetic (engine/synthetic.py): vegetated hills with planted bare-soil
scars and a post-event SAR change; S1 comes on other grids (EPSG:4326, 20 m UTM) so
the run exercises alignment.  The real-data path is shown by the tests (Chattogram).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def score_against_truth(grid: str, truth: str) -> tuple[int, int, int]:
    """(scars touched by a flagged tile, flagged tiles touching no scar, scars).  Its OGR
    objects die here, before QGIS shuts down in render_map: destroyed after exitQgis
    (which tears down GDAL's drivers) they crash the interpreter."""
    from osgeo import ogr

    truth_ds, grid_ds = ogr.Open(truth), ogr.Open(grid)  # layers die with their datasets
    g = grid_ds.GetLayer(0)
    g.SetAttributeFilter("flagged = 1")
    flagged = [f.GetGeometryRef().Clone() for f in g]
    scars = [f.GetGeometryRef().Clone() for f in truth_ds.GetLayer(0)]
    hit = sum(1 for s in scars if any(s.Intersects(t) for t in flagged))
    fp = sum(1 for t in flagged if not any(t.Intersects(s) for s in scars))
    return hit, fp, len(scars)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default=str(ROOT / "demo_output"))
    ap.add_argument("--size", type=int, default=1280, help="scene width in 10 m pixels")
    ap.add_argument("--model", default=None, help="model package folder (default: bundled)")
    ap.add_argument("--seed", type=int, default=7)
    a = ap.parse_args(argv)

    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")  # the map is rendered headless

    from sentinel_landslide.engine.synthetic import make_scene
    from sentinel_landslide.scripts.qgis_env import run_algorithm
    from sentinel_landslide.scripts.render import render_map

    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    print(f"[demo] generating a SYNTHETIC Sentinel-1/2 scene ({a.size} x {a.size * 4 // 5} px at 10 m) ...")
    scene = make_scene(out / "synthetic_scene", width=a.size, height=a.size * 4 // 5, seed=a.seed)
    grid = out / "landslide_grid.gpkg"
    for stale in (grid, out / "landslide_probability.tif"):
        stale.unlink(missing_ok=True)
    params = {"S2": scene["S2"], "OUTPUT": str(grid), "OUTPUT_RASTER": str(out / "landslide_probability.tif")}
    params.update({r: scene[r] for r in ("S1_DESC_POST", "S1_DESC_PRE", "S1_ASC_POST", "S1_ASC_PRE")})
    if a.model:
        params["MODEL"] = a.model
    print("[demo] running landslide:detect through qgis_process.bin ...")
    t0 = time.time()
    rc, res, log = run_algorithm("landslide:detect", params)
    if rc != 0 or not res:
        print(log, file=sys.stderr)
        print("[demo] landslide:detect failed", file=sys.stderr)
        return 1
    r = res["results"]
    for line in log.splitlines():
        if line.startswith(("Mode ", "Grid:", "Sentinel-2 convention", "Warning")) or "patches/s" in line:
            print("   ", line)
    hit, fp, n_scars = score_against_truth(str(grid), scene["truth"])
    png = out / "landslide_map.png"
    render_map(str(png), scene["S2"], str(grid), scene["truth"],
               title=f"SYNTHETIC demo scene - {r['FLAGGED']:.0f} of {r['TILES']:.0f} tiles flagged "
                     f"({r['MODE']}, threshold {r['THRESHOLD']:.2f}); cyan dashes = planted scars")
    summary = {"grid": str(grid), "map_png": str(png), "probability_raster": r.get("OUTPUT_RASTER"),
               "tiles": r["TILES"], "flagged": r["FLAGGED"], "mode": r["MODE"], "threshold": r["THRESHOLD"],
               "planted_scars": n_scars, "scars_touched_by_a_flagged_tile": hit,
               "flagged_tiles_touching_no_scar": fp, "seconds": round(time.time() - t0, 1)}
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(f"[demo] grid:   {grid}")
    print(f"[demo] map:    {png}")
    print(f"[demo] raster: {r.get('OUTPUT_RASTER')}")
    print(f"[demo] {r['FLAGGED']:.0f} of {r['TILES']:.0f} tiles flagged (mode {r['MODE']}, threshold "
          f"{r['THRESHOLD']:.2f}); {hit} of {n_scars} planted scars touched by a flagged tile, "
          f"{fp} flagged tiles touch no scar.  (Synthetic scene: a smoke test of the whole chain, "
          "not an accuracy figure.)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
