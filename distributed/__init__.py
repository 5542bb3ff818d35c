"""Detection on a Dask cluster: the scene is cut into bands of tile rows, each band is a
task scored on a worker, and the client assembles the bands into the same result as the
single-process run.  ``tasks`` is what workers run (no dask import); ``cluster`` and
``batch`` are the client side and import dask / distributed only when called."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

DASK_MODULES = {"dask": "dask", "distributed": "distributed"}


class MissingDask(ImportError):
    """dask / distributed are not installed: the message names the command that installs them."""


def _dask_first() -> None:
    """This package is also called ``distributed``: where the plugin's own folder is on
    ``sys.path`` (``python -m pytest`` from the repository root puts it first) a plain
    ``import distributed`` would find this package instead of Dask's.  The plugin is always
    imported as ``sentinel_landslide`` from its parent folder, so its own folder moves to
    the end of the path (still there for ``bench``/``tests``) and a wrong module is dropped."""
    root = Path(__file__).resolve().parents[1]

    def is_root(p: str) -> bool:
        try:
            return Path(p or ".").resolve() == root
        except OSError:
            return False

    mine = [p for p in sys.path if is_root(p)]
    if mine and not all(is_root(p) for p in sys.path[-len(mine):]):
        sys.path[:] = [p for p in sys.path if not is_root(p)] + mine
    wrong = sys.modules.get("distributed")
    if wrong is not None and not hasattr(wrong, "Client"):
        del sys.modules["distributed"]


def require_dask():
    """Import and return Dask's ``distributed``, or raise MissingDask with the pip command."""
    _dask_first()
    absent = [m for m in DASK_MODULES if importlib.util.find_spec(m) is None]
    if absent:
        from ..core.deps import install_message

        raise MissingDask(install_message(
            "running on a Dask cluster (" + ", ".join(absent) + "; detection without a cluster does not need them)",
            ['"dask[distributed]"']))
    import distributed

    return distributed
