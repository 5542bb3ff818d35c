"""The last algorithm error, with its log, for the diagnostics report ("Copy diagnostics",
``python -m sentinel_landslide.deps status``).  Kept in memory and in one small file in the
temp folder, so a report made in another process (the CLI after a qgis_process run) has it."""
from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

_LAST: dict = {}
MAX_LOG = 8000  # characters of the log kept (its end)


def path() -> Path:
    uid = os.getuid() if hasattr(os, "getuid") else os.environ.get("USERNAME", "user")
    return Path(tempfile.gettempdir()) / f"sentinel_landslide-{uid}" / "last_error.json"


def record(algorithm: str, message: str, log: str = "") -> None:
    """Remember an algorithm's failure (never raises: it runs on an error path)."""
    _LAST.clear()
    _LAST.update({"algorithm": algorithm, "message": message, "log": (log or "")[-MAX_LOG:],
                  "time": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())})
    try:
        p = path()
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps(_LAST), encoding="utf-8")
    except OSError:
        pass


def last() -> dict:
    """The last error of this process, else the one on file, else {}."""
    if _LAST:
        return dict(_LAST)
    try:
        return json.loads(path().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
