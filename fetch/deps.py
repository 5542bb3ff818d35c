"""The optional package of the fetch step, and the message when it is missing (same style as
models/deps.py: what is missing and how to install it)."""
from __future__ import annotations

import importlib

from ..core.deps import install_message, requirements
from .errors import MissingPackage

PACKAGES = {r.module: r.pip for r in requirements("fetch")}  # module -> pip name


def message(modules) -> str:
    return install_message("fetching from STAC catalogs", [PACKAGES.get(m, m) for m in modules],
                           "\nDetection itself does not need them.", modules=modules)


def pystac_client():
    """The pystac_client module, or MissingPackage with the install command."""
    try:
        return importlib.import_module("pystac_client")
    except ImportError:
        raise MissingPackage(message(["pystac_client"])) from None
