"""Detection on a Dask cluster: the scene is cut into bands of tile rows, each band is a
task scored on a worker, and the client assembles the bands into the same result as the
single-process run.  ``tasks`` is what workers run (no dask import); ``cluster`` and
``batch`` are the client side and import dask / distributed only when called."""
from __future__ import annotations

import importlib.util

DASK_MODULES = {"dask": "dask", "distributed": "distributed"}


class MissingDask(ImportError):
    """dask / distributed are not installed: the message names the command that installs them."""


def require_dask():
    """Import and return Dask's ``distributed``, or raise MissingDask with the pip command."""
    absent = [m for m in DASK_MODULES if importlib.util.find_spec(m) is None]
    if absent:
        from ..core.deps import install_message

        raise MissingDask(install_message(
            "running on a Dask cluster (" + ", ".join(absent) + "; detection without a cluster does not need them)",
            ["dask", "distributed"], modules=["dask", "distributed"]))
    import distributed

    return distributed
