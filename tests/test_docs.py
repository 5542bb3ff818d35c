"""The front door and the site's contracts, without QGIS: README's length and links, the
changelog that metadata.txt's is generated from, one address for the site, a build that
fetches nothing, and the hook that fills the generated tables."""
from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / ".build" / "plugins"))


def test_readme_is_a_front_door():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 150, "README.md is a front door: at most 150 lines (the rest is in docs/)"
    assert "./build.sh demo" in text and "./build.sh test" in text
    assert "landslide:detect" in text


def test_readme_links_resolve():
    from sentinel_landslide.core.links import DOCS_URL

    text = (ROOT / "README.md").read_text(encoding="utf-8")
    links = re.findall(r"\]\(([^)\s]+)\)", text)
    assert any(link.startswith(DOCS_URL) for link in links), "the README links into the site"
    for link in links:
        if link.startswith(DOCS_URL):
            page = link[len(DOCS_URL):].split("#")[0].strip("/")
            md = ROOT / "docs" / (page + ".md" if page else "index.md")
            assert md.exists() or (ROOT / "docs" / page / "index.md").exists(), link
        elif not re.match(r"https?://", link):
            assert (ROOT / link.split("#")[0]).exists(), link


def test_one_address_for_the_site():
    from sentinel_landslide.core.links import DOCS_URL, REPOSITORY_URL

    meta = (ROOT / "metadata.txt").read_text(encoding="utf-8")
    assert f"\nhomepage={DOCS_URL}\n" in meta
    assert f"\nrepository={REPOSITORY_URL}\n" in meta
    mk = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    assert re.search(rf"^site_url: {re.escape(DOCS_URL)}(\s|$)", mk, re.M)
    assert re.search(rf"^repo_url: {re.escape(REPOSITORY_URL)}$", mk, re.M)


def test_the_site_build_fetches_nothing():
    """Material downloads Google Fonts unless told not to; its privacy / social plugins download too."""
    mk = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    assert re.search(r"^\s+font: false\b", mk, re.M)
    plugins = re.search(r"^plugins:\n((?:\s+-.*\n)+)", mk, re.M).group(1)
    assert [p.strip("- \n") for p in plugins.splitlines()] == ["search"]
    assert re.search(r"^strict: true$", mk, re.M)
    req = (ROOT / "requirements-docs.txt").read_text(encoding="utf-8")
    assert re.search(r"^mkdocs==", req, re.M) and re.search(r"^mkdocs-material>=9\.\d+,<", req, re.M)


def test_metadata_changelog_is_generated_from_changelog_md():
    from sentinel_landslide.scripts.changelog import metadata_changelog, metadata_value

    text = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    assert re.search(r"^## \[Unreleased\]$", text, re.M), "CHANGELOG.md keeps an [Unreleased] section"
    meta = (ROOT / "metadata.txt").read_text(encoding="utf-8")
    assert metadata_value(meta) == metadata_changelog(text), \
        "metadata.txt's changelog differs from CHANGELOG.md: python -m sentinel_landslide.scripts.changelog --write"
    version = re.search(r"^version=(\S+)$", meta, re.M).group(1)
    released = re.findall(r"^## \[(\d[^\]]*)\] - \d{4}-\d{2}-\d{2}$", text, re.M)
    assert released and released[0] == version, "the newest released section is metadata.txt's version"


def test_changelog_generation_rules():
    from sentinel_landslide.scripts.changelog import metadata_changelog, with_changelog

    text = """# Changelog

## [Unreleased]
### Added
- Not released yet.

## [1.1.0] - 2027-01-02
### Added
- A `new` algorithm, see [its page](https://example.org/x/):
  F1 up by 5%
### Measured
- 12 s on a laptop
### Fixed
- A crash

## [1.0.0] - 2027-01-01
### Added
- First.
"""
    assert metadata_changelog(text) == ("1.1.0 A new algorithm, see its page: F1 up by 5 percent. A crash.\n"
                                        "    1.0.0 First.")
    meta = "[general]\nname=x\nchangelog=old\n    older\ncategory=Raster\n"
    assert with_changelog(meta, "1.0.0 First.") == "[general]\nname=x\nchangelog=1.0.0 First.\ncategory=Raster\n"


def test_metadata_reads_with_configparser():
    """configparser interpolation breaks on '%' (it broke the plugin zip once)."""
    import configparser

    c = configparser.ConfigParser()
    c.read(ROOT / "metadata.txt", encoding="utf-8")
    assert c["general"]["changelog"].startswith(c["general"]["version"])


def test_hook_fills_the_generated_tables(tmp_path):
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import docs_hooks
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    md = "# t\n<!-- include: bench/results.md -->\n"
    out = docs_hooks.expand(md)
    bench = (ROOT / "bench" / "results.md").read_text(encoding="utf-8")
    first = bench.splitlines()[0]
    assert first.startswith("# ") and ("#" + first) in out and "\n# " not in out.split("\n", 1)[1]
    with pytest.raises(FileNotFoundError, match="no/such.md"):
        docs_hooks.expand("<!-- include: no/such.md -->")
    from sentinel_landslide.models.package import BUNDLED

    if not (BUNDLED / "manifest.json").exists():
        pytest.skip("no bundled package built yet")
    table = docs_hooks.expand("<!-- generated: combo-table -->")
    assert table.startswith("| combination |") and table.count("\n| `") == 17
    assert "<!-- generated: combo-table -->" in (ROOT / "docs" / "accuracy.md").read_text(encoding="utf-8")
    gbm = docs_hooks.expand("<!-- generated: gbm-table -->")
    assert gbm.count("\n| `") == 17 and "| `s2+desc+asc` |" in gbm
    nets = docs_hooks.expand("<!-- generated: nn-table -->")
    assert nets.count("\n| `nn_") == 7
