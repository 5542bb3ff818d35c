"""The per-combination table (training/combo_table.py) of the bundled package (the site's
"Accuracy and speed" page renders it at build time: tests/test_docs.py)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / ".build" / "plugins"))

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bundled():
    from sentinel_landslide.models.package import BUNDLED, load_package

    pkg = load_package(BUNDLED)
    if "gbm_real_features" not in pkg.manifest.get("metrics", {}):
        pytest.skip("the bundled package has no GBM metrics yet (./build.sh train)")
    return pkg


def test_every_combination_has_a_row_from_its_manifest_record(bundled):
    from sentinel_landslide.core.channels import COMBINATIONS
    from sentinel_landslide.training.combo_table import combination_rows

    rows = combination_rows(bundled)
    assert [r["combination"] for r in rows] == [c.name for c in COMBINATIONS]
    gbm = bundled.manifest["metrics"]["gbm_real_features"]["ensembles"]
    proxy = bundled.manifest["metrics"].get("nn_proxy", {}).get("ensembles", {})
    for r in rows:
        assert r["package_threshold"] == bundled.threshold(r["combination"])
        if r["basis"] == "whole ensemble":
            rec = proxy[r["combination"]]["at_threshold"]
            assert (r["f1"], r["auc"], r["threshold"]) == (rec["f1"], rec["auc"], rec["threshold"])
            assert set(proxy[r["combination"]]["members"]) == {m["name"] for m in bundled.members_for(r["combination"])}
        else:
            rec = gbm[r["combination"]]
            assert (r["f1"], r["precision"], r["recall"], r["auc"]) == (
                rec["oof_f1"], rec["oof_precision"], rec["oof_recall"], rec["oof_auc"])
            # the networks' OOF was not available: the row says so wherever networks run
            assert ("not available" in r["basis"]) == bool(r["nets"])
        if r["threshold"] is not None:
            assert r["threshold"] == r["package_threshold"]  # the figure is at the threshold the plugin uses


def test_refresh_rewrites_only_between_the_markers(bundled, tmp_path):
    from sentinel_landslide.training.combo_table import END, START, main

    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{START}\nold table\n{END}\noutro\n", encoding="utf-8")
    assert main(["--readme", str(readme)]) == 0
    text = readme.read_text(encoding="utf-8")
    assert text.startswith(f"intro\n{START}\n| combination |") and text.endswith(f"{END}\noutro\n")
    assert "old table" not in text and text.count("\n| `") == 17
    readme.write_text("no markers\n", encoding="utf-8")
    with pytest.raises(SystemExit, match="no combo-table markers"):
        main(["--readme", str(readme)])
