"""./build.sh package: dist/sentinel_landslide.zip for QGIS's "Install from ZIP".

Only what the plugin needs at run time goes in: code, resources, the bundled model
package, metadata, LICENSE, README.  No tests, caches, venvs or training outputs.
The zip must stay under plugins.qgis.org's 25 MB limit; this script refuses otherwise.
"""
from __future__ import annotations

import configparser
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NAME = "sentinel_landslide"
LIMIT = 25 * 1024 * 1024
INCLUDE = ["__init__.py", "plugin.py", "metadata.txt", "LICENSE", "README.md",
           "core", "engine", "models", "training", "pipeline.py", "fetch", "cluster", "rendering", "algorithms", "gui",
           "deps",
           "resources",
           "scripts/__init__.py",
           "scripts/render.py", "requirements-runtime.txt", "cli.py"]
SKIP_PARTS = {"__pycache__", ".pytest_cache", "training_outputs"}
SKIP_SUFFIX = {".pyc", ".pyo", ".aux.xml"}
REQUIRED_METADATA = ("name", "qgisMinimumVersion", "description", "about", "version", "author",
                     "email", "repository", "tracker")


def check_metadata() -> dict:
    cp = configparser.ConfigParser()
    cp.read(ROOT / "metadata.txt", encoding="utf-8")
    meta = dict(cp["general"])
    missing = [k for k in REQUIRED_METADATA if not meta.get(k.lower())]
    if missing:
        raise SystemExit(f"metadata.txt lacks required fields: {', '.join(missing)}")
    return meta


def files():
    for item in INCLUDE:
        p = ROOT / item
        if not p.exists():
            continue
        for f in ([p] if p.is_file() else sorted(p.rglob("*"))):
            if f.is_dir() or SKIP_PARTS & set(f.relative_to(ROOT).parts):
                continue
            if any(str(f).endswith(s) for s in SKIP_SUFFIX):
                continue
            yield f


def main() -> int:
    meta = check_metadata()
    out = ROOT / "dist" / f"{NAME}.zip"
    out.parent.mkdir(exist_ok=True)
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as z:
        for f in files():
            z.write(f, f"{NAME}/{f.relative_to(ROOT).as_posix()}")
    size = out.stat().st_size
    print(f"{out}: {size / 1e6:.2f} MB, version {meta['version']}")
    if size > LIMIT:
        print("ERROR: over the 25 MB limit of plugins.qgis.org", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
