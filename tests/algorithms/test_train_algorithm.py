"""landslide:train: export patches from a scene with an inventory, train, detect with the result."""
from __future__ import annotations

import pytest


@pytest.mark.slow
def test_export_train_detect_round_trip(provider, tmp_path, synthetic_scene, package):
    """The analyst's own-data loop on a SYNTHETIC scene: exportpatches -> train -> detect."""
    import processing
    from qgis.core import QgsProcessingException

    pytest.importorskip("sklearn")
    s1 = {r: synthetic_scene[r] for r in ("S1_DESC_POST", "S1_DESC_PRE", "S1_ASC_POST", "S1_ASC_PRE")}
    exp = processing.run("landslide:exportpatches", dict(S2=synthetic_scene["S2"], INVENTORY=synthetic_scene["truth"],
                                                         OUTPUT=str(tmp_path / "patches"), MODEL=str(package.folder), **s1))
    assert exp["POSITIVES"] >= 2
    members = "none"
    try:
        import timm  # noqa: F401
        import torch  # noqa: F401
        members = "nn_opt_vit_convnext"
    except ImportError:
        pass
    res = processing.run("landslide:train", {"PATCHES": exp["OUTPUT"], "GBM": True, "MEMBERS": members,
                                             "EPOCHS": 1, "FOLDS": 2, "OUTPUT": str(tmp_path / "pkg")})
    from sentinel_landslide.models.package import load_package

    pkg = load_package(res["OUTPUT"])
    kinds = {m["kind"] for m in pkg.manifest["members"]}
    assert {"lightgbm", "xgboost"} <= kinds
    if members != "none":
        assert "onnx" in kinds
        # the networks are trained at the bundled width (WIDTH defaults to 1, recorded only when not 1)
        (net,) = [m for m in pkg.manifest["members"] if m["kind"] == "onnx"]
        assert net.get("width", 1.0) == 1.0
    det = processing.run("landslide:detect", dict(S2=synthetic_scene["S2"], MODEL=res["OUTPUT"],
                                                  OUTPUT=str(tmp_path / "g.gpkg"), **s1))
    assert det["MODE"] == "s2+desc+asc" and det["TILES"] == 70
    with pytest.raises(QgsProcessingException, match="lists no patches|no Train.csv|no labels"):
        processing.run("landslide:train", {"PATCHES": str(tmp_path), "GBM": True, "MEMBERS": "none",
                                           "FOLDS": 2, "OUTPUT": str(tmp_path / "pkg2")})


@pytest.mark.slow
def test_partial_inputs_export_train_detect(provider, tmp_path, synthetic_scene, package):
    """SYNTHETIC scene with Sentinel-2 and the descending post-event scene only: the patches
    carry NaN for the rest, train gives the combinations they support, detect runs with them."""
    import processing

    pytest.importorskip("sklearn")
    exp = processing.run("landslide:exportpatches", dict(S2=synthetic_scene["S2"], S1_DESC_POST=synthetic_scene["S1_DESC_POST"],
                                                         INVENTORY=synthetic_scene["truth"], MODEL=str(package.folder),
                                                         OUTPUT=str(tmp_path / "patches")))
    res = processing.run("landslide:train", {"PATCHES": exp["OUTPUT"], "GBM": True, "MEMBERS": "none",
                                             "FOLDS": 2, "OUTPUT": str(tmp_path / "pkg")})
    from sentinel_landslide.models.package import load_package

    pkg = load_package(res["OUTPUT"])
    assert set(pkg.available_modes()) == {"s2", "s2+desc_post", "desc_post"}
    det = processing.run("landslide:detect", dict(S2=synthetic_scene["S2"], S1_DESC_POST=synthetic_scene["S1_DESC_POST"],
                                                  MODEL=res["OUTPUT"], OUTPUT=str(tmp_path / "g.gpkg")))
    assert det["MODE"] == "s2+desc_post" and det["TILES"] == 70
