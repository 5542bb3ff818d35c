"""The optional package of the fetch step, and the message when it is missing (same style as
models/deps.py: what is missing and one pip command for the Python that is running)."""
from __future__ import annotations

import importlib
import os
import sys

from .errors import MissingPackage

PACKAGES = {"pystac_client": "pystac-client"}  # module -> pip name


def _python() -> str:
    exe = sys.executable or ""
    base = os.path.basename(exe).lower()
    if base.startswith("python") and not base.startswith("pythonw"):
        return exe
    names = ("python.exe", "python3.exe") if os.name == "nt" else ("python3", "python")
    for d in (os.path.join(sys.exec_prefix, "bin"), sys.exec_prefix, os.path.dirname(exe)):
        for n in names:
            if d and os.path.isfile(os.path.join(d, n)):
                return os.path.join(d, n)
    return "python" if os.name == "nt" else "python3"


def message(modules) -> str:
    names = ", ".join(PACKAGES.get(m, m) for m in modules)
    where = ("in the OSGeo4W Shell that came with QGIS" if os.name == "nt"
             else "in a terminal (add --user if it reports a permission error)")
    py = _python()
    py = f'"{py}"' if " " in py else py
    return (f"Missing Python package(s) for fetching from STAC catalogs: {names}. Install them into "
            f"QGIS's Python {where}:\n    {py} -m pip install {names.replace(', ', ' ')}\nthen restart QGIS. "
            "Detection itself does not need them.")


def pystac_client():
    """The pystac_client module, or MissingPackage with the install command."""
    try:
        return importlib.import_module("pystac_client")
    except ImportError:
        raise MissingPackage(message(["pystac_client"])) from None
