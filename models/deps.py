"""The Python packages the runtime needs, which are missing, and the one pip command that
installs them into the Python that is running (QGIS's own, on every platform).

No QGIS import: the plugin, the Processing algorithms, the CLI and the tests share it.
Checks use ``importlib.util.find_spec`` (nothing is imported, so a check is cheap)."""
from __future__ import annotations

import importlib.util
import os
import sys

# module -> pip name; xgboost-cpu installs the same ``xgboost`` module, 5 MB instead of ~480
RUNTIME = {"onnxruntime": "onnxruntime", "lightgbm": "lightgbm", "xgboost": "xgboost-cpu"}
# which member kinds need which module
KIND_MODULES = {"onnx": "onnxruntime", "lightgbm": "lightgbm", "xgboost": "xgboost"}


def missing(modules=None) -> list[str]:
    """The modules (default: all of RUNTIME) that cannot be imported, in RUNTIME's order."""
    mods = list(RUNTIME) if modules is None else [m for m in RUNTIME if m in set(modules)]
    out = []
    for m in mods:
        if m in sys.modules:  # imported already (present), or set to None (blocked: missing)
            found = sys.modules[m] is not None
        else:
            try:
                found = importlib.util.find_spec(m) is not None
            except (ImportError, ValueError):  # a broken install
                found = False
        if not found:
            out.append(m)
    return out


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


def pip_command(modules) -> str:
    """One command installing the pip packages of ``modules``; pins numpy below 2 when the
    running numpy is 1.x, so pip cannot upgrade it under GDAL's bindings (built for 1.x)."""
    pkgs = [RUNTIME.get(m, m) for m in modules]
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


def message(modules) -> str:
    """What an analyst reads when ``modules`` are missing: which, and the command."""
    names = ", ".join(RUNTIME.get(m, m) for m in modules)
    where = ("in the OSGeo4W Shell that came with QGIS" if os.name == "nt"
             else "in a terminal (add --user if it reports a permission error)")
    return (f"Missing Python package(s) for the landslide models: {names}. Install them into "
            f"QGIS's Python {where}:\n    {pip_command(modules)}\nthen restart QGIS. The README lists "
            "the command per platform.")
