"""Where the documentation lives: the one home of the site's address.

``algorithms.common.LandslideAlgorithm.helpUrl`` points each Processing algorithm at its
page, ``mkdocs.yml``'s ``site_url`` and ``metadata.txt``'s ``homepage`` are checked against
``DOCS_URL`` by ``tests/test_docs.py``."""
from __future__ import annotations

REPOSITORY_URL = "https://github.com/sentinel-landslide/sentinel-landslide"
DOCS_URL = "https://sentinel-landslide.github.io/sentinel-landslide/"


def algorithm_page(name: str) -> str:
    """The page of ``landslide:<name>`` inside the docs folder (``docs/algorithms/<name>.md``)."""
    return f"algorithms/{name}.md"


def algorithm_url(name: str) -> str:
    """The published address of that page (MkDocs' directory URLs)."""
    return f"{DOCS_URL}algorithms/{name}/"
