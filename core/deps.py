"""Optional Python packages: the one pip command that installs them into the Python that is
running (QGIS's own, on every platform) and the message an analyst reads when one is
missing.  Shared by the model runtime, the catalogue fetch and the cluster paths."""
from __future__ import annotations

import os
import sys


def python_executable() -> str:
    """The interpreter QGIS runs Python with.  Inside QGIS ``sys.executable`` is often the
    QGIS binary itself (Windows, macOS), so look for python3/python next to it and in the
    running prefix."""
    exe = sys.executable or ""
    base = os.path.basename(exe).lower()
    if base.startswith("python") and not base.startswith("pythonw"):  # pythonw: no console for pip
        return exe
    names = ("python.exe", "python3.exe") if os.name == "nt" else ("python3", "python")
    dirs = [os.path.join(sys.exec_prefix, "bin"), sys.exec_prefix, os.path.dirname(exe)]
    for d in dirs:
        for n in names:
            p = os.path.join(d, n)
            if d and os.path.isfile(p):
                return p
    return "python" if os.name == "nt" else "python3"


def pip_command(pip_names) -> str:
    """One command installing ``pip_names``; pins numpy below 2 when the
    running numpy is 1.x, so pip cannot upgrade it under GDAL's bindings (built for 1.x)."""
    pkgs = list(pip_names)
    try:
        import numpy

        if int(numpy.__version__.split(".")[0]) < 2:
            pkgs.append('"numpy<2"')
    except ImportError:
        pass
    py = python_executable()
    if " " in py:
        py = f'"{py}"'
    return f"{py} -m pip install {' '.join(pkgs)}"


def install_message(purpose: str, pip_names, tail: str = "") -> str:
    """``Missing Python package(s) for <purpose>: ...`` with the command, for the analyst."""
    where = ("in the OSGeo4W Shell that came with QGIS" if os.name == "nt"
             else "in a terminal (add --user if it reports a permission error)")
    return (f"Missing Python package(s) for {purpose}: {', '.join(pip_names)}. Install them into "
            f"QGIS's Python {where}:\n    {pip_command(pip_names)}\nthen restart QGIS.{tail}")
