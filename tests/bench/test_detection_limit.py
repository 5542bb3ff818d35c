"""The detection-limit benchmark's core (bench/detection_limit.py) in --quick mode on its
SYNTHETIC planted-scar scenes, through the real pipeline and the bundled package."""
from __future__ import annotations

import pytest


def test_auc_and_limit_rules():
    from sentinel_landslide.bench.detection_limit import auc, limit, seen_from

    assert auc([0.9, 0.8], [0.1, 0.2]) == 1.0 and auc([0.1], [0.9]) == 0.0 and auc([0.5], [0.5]) == 0.5
    rows = [{"combo": "s2", "contrast": 1.0, "share": s, "n": 10, "flagged": f, "auc": a}
            for s, f, a in ((0.0, 0, None), (0.01, 2, 0.8), (0.05, 6, 0.95), (0.25, 3, 1.0))]
    assert limit(rows, "s2", 1.0) == 0.05 and seen_from(rows, "s2", 1.0) == 0.05
    rows[0]["flagged"] = 5  # half the scar-free tiles flagged: no limit can be read
    assert limit(rows, "s2", 1.0) == "false alarms"


def test_quick_run_writes_the_table_and_plot(tmp_path, package_dir):
    pytest.importorskip("matplotlib")
    from sentinel_landslide.bench.detection_limit import QUICK, main

    md, png = tmp_path / "dl.md", tmp_path / "dl.png"
    assert main(["--quick", "--package", str(package_dir), "--out-md", str(md), "--out-png", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = md.read_text()
    assert text.startswith("# Detection limit (SYNTHETIC") and "## In short" in text
    assert "python -m sentinel_landslide.bench.detection_limit --quick" in text
    table = [ln for ln in text.splitlines() if ln.startswith("| ") and not ln.startswith("| combination")]
    assert [ln.split(" | ")[0][2:] for ln in table] == list(QUICK["combos"])
    n = QUICK["tiles"]
    for ln in table:
        cells = ln.strip("| ").split(" | ")
        assert cells[3] == cells[3].split("/")[0] + f"/{2 * n}"  # scar-free tiles of the scene
        assert all(c.endswith(")") and c.split("/")[1].startswith(f"{n} (AUC ") for c in cells[4:])


def test_the_richest_combination_sees_a_quarter_tile_scar(package):
    """Real behaviour, not the plumbing: with S2 and both orbits, tiles with a 25 % scar
    at the generator's contrast score above every scar-free tile of the scene."""
    from sentinel_landslide.bench.detection_limit import measure

    rows = measure(package, shares=(0.25,), contrasts=(1.0,), combos=("s2+desc+asc",), tiles=4, log=lambda s: None)
    scar = next(r for r in rows if r["share"] == 0.25)
    assert scar["auc"] == 1.0 and scar["mode"] == "s2+desc+asc"
