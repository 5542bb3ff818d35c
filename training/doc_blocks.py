"""Generated blocks in Markdown files: the text between two marker comments is replaced by a
script's output (README and docs tables have one source each: the script that measured them)."""
from __future__ import annotations

from pathlib import Path


def replace_between(path: Path, start: str, end: str, body: str, what: str) -> None:
    """Replace the text between ``start`` and ``end`` in ``path`` by ``body`` (markers kept);
    SystemExit naming ``what`` when a marker is missing."""
    text = Path(path).read_text(encoding="utf-8")
    if start not in text or end not in text:
        raise SystemExit(f"{path} has no {what} markers ({start} ... {end})")
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    Path(path).write_text(head + start + "\n" + body + end + tail, encoding="utf-8")
