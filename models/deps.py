"""The Python packages the runtime needs (core/deps.py REQUIREMENTS, feature "required"), which
are missing, and the message that says how to install them.

No QGIS import: the plugin, the Processing algorithms, the CLI and the tests share it.
Checks use ``importlib.util.find_spec`` (nothing is imported, so a check is cheap)."""
from __future__ import annotations

import importlib.util
import sys

from ..core.deps import install_message, python_executable, requirements  # noqa: F401 (re-exported)

# module -> pip name
RUNTIME = {r.module: r.pip for r in requirements("required")}
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


def message(modules) -> str:
    """What an analyst reads when ``modules`` are missing: which, and how to install them."""
    return install_message("the landslide models", [RUNTIME.get(m, m) for m in modules], modules=modules)
