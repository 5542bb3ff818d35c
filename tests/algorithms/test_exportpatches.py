"""landslide:exportpatches through Processing."""
from __future__ import annotations

from ..helpers import S1_ROLES


def test_exportpatches_algorithm(provider, tmp_path, synthetic_scene, package):
    import processing

    params = {"S2": synthetic_scene["S2"], "INVENTORY": synthetic_scene["truth"], "MIN_FRACTION": 0.01,
              "OUTPUT": str(tmp_path / "out"), "MODEL": str(package.folder)}
    params.update({r: synthetic_scene[r] for r in S1_ROLES})
    res = processing.run("landslide:exportpatches", params)
    assert res["PATCHES"] == len(list((tmp_path / "out").glob("*.npy"))) > 0
    assert 0 < res["POSITIVES"] < res["PATCHES"]
