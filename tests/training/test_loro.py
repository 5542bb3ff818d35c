"""training/loro.py: the leave-one-region-out benchmark runs end to end on the REAL feature
table (--quick: a third of the patches, two held-out regions, one seed) and writes its table."""
from __future__ import annotations

import numpy as np
import pytest

from ..helpers import shared_file


def test_kmeans_regions_are_seeded_and_separate_clusters():
    from sentinel_landslide.training.loro import kmeans

    rng = np.random.default_rng(0)
    Z = np.vstack([rng.normal(size=(50, 2)) + c for c in ((0, 0), (8, 0), (0, 8))])
    lab = kmeans(Z, 3, seed=1)
    assert np.array_equal(lab, kmeans(Z, 3, seed=1))
    for k in range(3):  # each true cluster lands in one k-means cluster
        assert len(set(lab[50 * k:50 * (k + 1)].tolist())) == 1
    assert len(set(lab.tolist())) == 3


@pytest.mark.slow
def test_quick_benchmark_compares_every_method_on_unreviewed_patches(tmp_path):
    path = shared_file("zindi/train_features_7147.csv.gz")
    from sentinel_landslide.training.loro import METHODS, README_HEADING, run, table, write_block

    res = run(path, n_regions=6, seeds=1, ks=(20,), rounds_scale=0.05, threads=2, quick=True, log=lambda *_: None)
    rows = res["rows"]
    assert len(rows) == 2 and {r["region"] for r in rows} == {0, 1}
    for r in rows:
        assert {k for k, _ in METHODS} <= set(r)
        pi = 1 / r["all"]["ratio"]  # flag everything: flagged / true = unreviewed / landslides
        assert r["all"]["f1"] == pytest.approx(2 * pi / (1 + pi))
        assert 0.5 < r["base"]["auc"] <= 1 and 0 <= r["new"]["f1"] <= 1 and r["new"]["ratio"] > 0
        assert r["n_pos"] >= 1 and r["true_rest"] > 0
    text = table(res)
    assert text.count("\n| 20 |") == len(METHODS)
    doc = tmp_path / "page.md"
    doc.write_text("# Page\n\nintro\n", encoding="utf-8")
    write_block(doc, res, "python -m sentinel_landslide.training.loro --quick")
    out = doc.read_text(encoding="utf-8")
    assert out.startswith("# Page\n\n" + README_HEADING) and "--quick" in out and "intro" in out
    write_block(doc, res, "again")  # replaced, not appended
    assert doc.read_text(encoding="utf-8").count(README_HEADING) == 1


def test_readme_carries_the_page_block_between_its_markers(tmp_path):
    from sentinel_landslide.training.loro import README_END, README_HEADING, README_START, write_readme

    page = tmp_path / "page.md"
    page.write_text(f"# Page\n\n{README_HEADING}\n\n| K | method |\n|---|---|\n| 40 | new |\n\nRegions (6): long\n"
                    "Reproduce: `cmd`\n\n## More\n\nbody\n",
                    encoding="utf-8")
    readme = tmp_path / "README.md"
    readme.write_text(f"top\n{README_START}\nold table\n{README_END}\nbottom\n", encoding="utf-8")
    write_readme(readme, page)
    out = readme.read_text(encoding="utf-8")
    assert "old table" not in out and "| 40 | new |" in out and "body" not in out and "Regions" not in out
    assert "Reproduce: `cmd`" in out
    assert out.startswith("top\n") and out.endswith("bottom\n")
    write_readme(readme, page)  # idempotent
    assert readme.read_text(encoding="utf-8") == out
    readme.write_text("no markers\n", encoding="utf-8")
    with pytest.raises(SystemExit):
        write_readme(readme, page)
