"""Helpers shared by the tests (plain functions; fixtures live in conftest.py)."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PLUGINS = ROOT / ".build" / "plugins"
PLUGINS.mkdir(parents=True, exist_ok=True)
if not (PLUGINS / "sentinel_landslide").exists():
    (PLUGINS / "sentinel_landslide").symlink_to(ROOT)
if str(PLUGINS) not in sys.path:
    sys.path.insert(0, str(PLUGINS))

from sentinel_landslide.core.channels import S1_ROLES  # noqa: E402

SHARED = ROOT.parent / "shared" / "data"


def shared_file(rel: str) -> Path:
    """A file of ../shared/data, or skip the test cleanly where it is absent."""
    p = SHARED / rel
    if not p.exists():
        pytest.skip(f"../shared/data/{rel} is not available on this machine")
    return p


def scene_options(scene: dict, sar: bool = True, s2: bool = True, **kw):
    from sentinel_landslide.engine.align import InputLayer
    from sentinel_landslide.engine.detect import DetectOptions

    o = DetectOptions(**kw)
    if s2:
        o.s2 = InputLayer("S2", scene["S2"], [1, 2, 3, 4])
    if sar:
        o.s1 = {r: InputLayer(r, scene[r], [1, 2]) for r in S1_ROLES}
    return o


def scene_params(scene: dict, out, sar: bool = True, s2: bool = True, **extra) -> dict:
    """landslide:detect parameters for a scene dict; MODEL from the test package override."""
    p = {"OUTPUT": str(out)}
    if os.environ.get("SENTINEL_LANDSLIDE_TEST_PACKAGE"):  # default: the bundled package
        p["MODEL"] = os.environ["SENTINEL_LANDSLIDE_TEST_PACKAGE"]
    if s2:
        p["S2"] = scene["S2"]
    if sar:
        p.update({r: scene[r] for r in S1_ROLES})
    p.update(extra)
    return p


_PROVIDER = []  # keep the Python wrapper alive: QGIS does not own it


def ensure_provider():
    """Register the 'landslide' provider with QGIS Processing unless it already is."""
    from qgis.core import QgsApplication

    from sentinel_landslide.algorithms.provider import LandslideProvider

    reg = QgsApplication.processingRegistry()
    if reg.providerById("landslide") is None:
        _PROVIDER.append(LandslideProvider())
        assert reg.addProvider(_PROVIDER[-1])
    return reg.providerById("landslide")


def scene_like_table(scene: dict, package, path, copies: int = 5, seed: int = 0) -> Path:
    """A SYNTHETIC training feature table (the columns of train_features_7147.csv.gz) made of
    the synthetic scene's own tile features, jittered and repeated: a training set that
    resembles the scene, so ADAPT_TO_SCENE refits instead of warning.  Label 1 for the tiles
    with the lowest mean NDVI (bare scars), 0 otherwise."""
    import csv
    import gzip

    import numpy as np

    from sentinel_landslide.core.features import BASE_FEATURES
    from sentinel_landslide.training.scene_adapt import scene_features

    feats, _ = scene_features(scene_options(scene), package)
    f = feats["s2+desc+asc"]
    n = len(f["ndvi_mean"])
    rng = np.random.default_rng(seed)
    label = (f["ndvi_mean"] <= np.quantile(f["ndvi_mean"], 0.25)).astype(int)
    with gzip.open(path, "wt", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["ID", "label", *BASE_FEATURES])
        for k in range(copies):
            for i in range(n):
                vals = [float(f[c][i]) * (1 + 0.02 * rng.normal()) for c in BASE_FEATURES]
                w.writerow([f"SYN_{k}_{i}", int(label[i]), *[f"{v:.6g}" for v in vals]])
    return Path(path)


def grid_rows(path):
    """Every feature's fields and geometry of a grid, sorted (for equality across runs)."""
    from osgeo import ogr

    ds = ogr.Open(str(path))
    lyr = ds.GetLayer(0)
    defn = lyr.GetLayerDefn()
    names = [defn.GetFieldDefn(i).GetName() for i in range(defn.GetFieldCount())]
    return names, sorted(tuple(f.GetField(n) for n in names) + (f.GetGeometryRef().ExportToWkt(),) for f in lyr)
