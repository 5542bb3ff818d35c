"""The site's algorithm pages are generated from the algorithms' own definitions
(scripts/docs_reference.py): a page that differs from what the provider defines fails here."""
from __future__ import annotations

from ..helpers import ROOT


def test_every_algorithm_page_is_current(provider):
    from sentinel_landslide.scripts.docs_reference import pages, stale

    generated = pages()
    bad = stale(generated)
    assert not bad, ("generated algorithm pages are out of date: " + ", ".join(bad)
                     + "\nrun: python -m sentinel_landslide.scripts.docs_reference (or ./build.sh regen-docs)")


def test_stale_names_a_page_that_differs_and_one_no_algorithm_makes(provider, monkeypatch, tmp_path):
    from sentinel_landslide.scripts import docs_reference as ref

    out = tmp_path / "docs" / "algorithms"
    out.mkdir(parents=True)
    monkeypatch.setattr(ref, "ROOT", tmp_path)
    monkeypatch.setattr(ref, "OUT", out)
    generated = ref.pages()
    for path, text in generated.items():
        path.write_text(text, encoding="utf-8")
    assert ref.stale(generated) == []
    detect = out / "detect.md"
    assert "| `MIN_VALID` | Minimum valid-pixel fraction of a tile | number | `0.5` |" in generated[detect]
    detect.write_text(generated[detect].replace("| `0.5` |", "| `0.4` |"), encoding="utf-8")  # an older default
    (out / "gone.md").write_text("# an algorithm that no longer exists\n", encoding="utf-8")
    assert ref.stale(generated) == ["docs/algorithms/detect.md", "docs/algorithms/gone.md (no such algorithm)"]


def test_pages_carry_the_definitions_and_the_notes(provider):
    from qgis.core import QgsApplication

    from sentinel_landslide.core.links import algorithm_page, algorithm_url
    from sentinel_landslide.scripts.docs_reference import pages

    reg = QgsApplication.processingRegistry()
    generated = pages()
    for alg in reg.providerById("landslide").algorithms():
        path = ROOT / "docs" / algorithm_page(alg.name())
        text = generated[path]
        for p in alg.parameterDefinitions():
            assert f"| `{p.name()}` |" in text, (alg.name(), p.name())
        for o in alg.outputDefinitions():
            assert f"| `{o.name()}` |" in text, (alg.name(), o.name())
        notes = ROOT / "docs" / "algorithms" / "_notes" / f"{alg.name()}.md"
        assert notes.exists(), f"hand-written notes missing: {notes.relative_to(ROOT)}"
        assert f'--8<-- "docs/algorithms/_notes/{alg.name()}.md"' in text
        # the Help button opens the page; the help panel is short and links there
        assert alg.helpUrl() == algorithm_url(alg.name())
        assert alg.helpUrl() in alg.shortHelpString()
        assert len(alg.shortHelpString()) < 600, alg.name()
