"""The site's pictures (docs/img/, rendered by scripts/screenshots.py) are never stale without
this test noticing: each picture's recorded fingerprint (docs/img/screenshots.json) must equal
the fingerprint of what it is made from now (the algorithm's parameters and help for a dialog;
styles, panel, report, scene and model files for the rest).  Cheap: nothing is rendered."""
from __future__ import annotations

import re

from ..helpers import ROOT


def test_every_picture_is_current(provider):
    from sentinel_landslide.scripts.screenshots import fingerprints, read_manifest, stale_pictures

    bad = stale_pictures(fingerprints(), read_manifest())
    assert not bad, ("stale pictures in docs/img: " + "; ".join(bad)
                     + "\nrun: python -m sentinel_landslide.scripts.screenshots (or ./build.sh regen-docs)")


def test_a_changed_dialog_or_style_is_noticed(provider, monkeypatch):
    """A new parameter changes the dialog's fingerprint; an edited style file the map's."""
    from sentinel_landslide.scripts import screenshots as shots

    current = shots.fingerprints()
    recorded = {k: dict(v) for k, v in current.items()}
    assert shots.stale_pictures(current, recorded) == []
    recorded["detect-dialog.png"]["landslide:detect"] = "0" * 16  # as if made before a parameter was added
    recorded["uncertainty-map.png"]["resources/landslide_grid_uncertainty.qml"] = "0" * 16
    bad = shots.stale_pictures(current, recorded)
    assert bad == ["detect-dialog.png (landslide:detect changed)",
                   "uncertainty-map.png (resources/landslide_grid_uncertainty.qml changed)"]
    del recorded["grid-map.png"]
    assert "grid-map.png (not rendered yet)" in shots.stale_pictures(current, recorded)


def test_every_picture_is_used_and_every_used_picture_exists():
    from sentinel_landslide.scripts.screenshots import IMG, PICTURES

    used = set()
    for md in (ROOT / "docs").rglob("*.md"):
        used.update(re.findall(r"img/([\w.-]+\.png)", md.read_text(encoding="utf-8")))
    used.update(re.findall(r"docs/img/([\w.-]+\.png)", (ROOT / "README.md").read_text(encoding="utf-8")))
    made_elsewhere = {p.name for p in IMG.glob("*.png")} - set(PICTURES)  # e.g. other branches' figures
    assert used - set(PICTURES) - made_elsewhere == set(), "pictures used but not made"
    assert set(PICTURES) - used == set(), "pictures made but used on no page"
    for png in PICTURES:
        assert (IMG / png).stat().st_size > 5000, png  # a real picture, not an empty file
