"""metadata.txt's ``changelog=`` (what the QGIS plugin manager shows), generated from CHANGELOG.md.

    python -m sentinel_landslide.scripts.changelog            # print the generated value
    python -m sentinel_landslide.scripts.changelog --write    # write it into metadata.txt
    python -m sentinel_landslide.scripts.changelog --check    # exit 1 when metadata.txt differs

One line per released version, newest first: the version, then the entries of its Keep a
Changelog sections (Added, Changed, Deprecated, Removed, Fixed, Security) joined, Markdown
removed.  ``## [Unreleased]`` is left out until it is released.  '%' becomes 'percent':
metadata.txt is read with configparser, whose interpolation breaks on '%'.
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHANGELOG = ROOT / "CHANGELOG.md"
METADATA = ROOT / "metadata.txt"
KINDS = ("Added", "Changed", "Deprecated", "Removed", "Fixed", "Security")
VERSION = re.compile(r"^## \[(?P<v>[^\]]+)\](?: - (?P<date>\d{4}-\d{2}-\d{2}))?\s*$")


def releases(text: str) -> list[tuple[str, str | None, dict[str, list[str]]]]:
    """(version, date, {section: [entries]}) for each ``## [version]`` heading, in file order."""
    out: list[tuple[str, str | None, dict[str, list[str]]]] = []
    section = None
    for line in text.splitlines():
        m = VERSION.match(line)
        if m:
            out.append((m["v"], m["date"], {}))
            section = None
        elif line.startswith("### ") and out:
            section = line[4:].strip()
            out[-1][2].setdefault(section, [])
        elif line.startswith("- ") and out and section:
            out[-1][2][section].append(line[2:].strip())
        elif line.startswith("  ") and out and section and out[-1][2][section]:
            out[-1][2][section][-1] += " " + line.strip()  # a wrapped entry
    return out


def plain(entry: str) -> str:
    s = re.sub(r"\[([^\]]+)\]\([^)]+\)", r"\1", entry)  # links -> their text
    s = s.replace("`", "").replace("**", "")
    s = re.sub(r"\s*%", " percent", s)
    return s if s.endswith((".", ")")) else s + "."


def metadata_changelog(text: str) -> str:
    """The value of metadata.txt's changelog (continuation lines indented by 4 spaces)."""
    lines = []
    for version, _date, sections in releases(text):
        if version.lower() == "unreleased":
            continue
        entries = [plain(e) for kind in KINDS for e in sections.get(kind, [])]
        lines.append(f"{version} " + " ".join(entries))
    return "\n    ".join(lines)


def metadata_value(metadata: str) -> str:
    """The current changelog value of a metadata.txt text (its continuation lines included)."""
    m = re.search(r"^changelog=(.*?)(?=^\S|\Z)", metadata, flags=re.M | re.S)
    if not m:
        raise SystemExit("metadata.txt has no changelog= entry")
    return m.group(1).rstrip("\n")


def with_changelog(metadata: str, value: str) -> str:
    return re.sub(r"^changelog=.*?(?=^\S|\Z)", lambda _: f"changelog={value}\n", metadata, count=1,
                  flags=re.M | re.S)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="changelog", description=__doc__.split("\n\n")[0])
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--write", action="store_true", help="write the value into metadata.txt")
    g.add_argument("--check", action="store_true", help="exit 1 when metadata.txt's changelog differs")
    a = ap.parse_args(argv)
    value = metadata_changelog(CHANGELOG.read_text(encoding="utf-8"))
    meta = METADATA.read_text(encoding="utf-8")
    if a.write:
        METADATA.write_text(with_changelog(meta, value), encoding="utf-8")
    elif a.check:
        if metadata_value(meta) != value:
            print("metadata.txt's changelog differs from CHANGELOG.md: "
                  "python -m sentinel_landslide.scripts.changelog --write", file=sys.stderr)
            return 1
    else:
        print(value)
    return 0


if __name__ == "__main__":
    sys.exit(main())
