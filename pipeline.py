"""Detection wired to the model runtime: the one place where the engine (inputs, grid,
tiles, features) meets the ensemble (``models``).  The QGIS algorithms, the command
line, the benchmark and cluster workers call this; the engine itself never imports a
model runtime (it receives a scorer factory)."""
from __future__ import annotations

from .engine.detect import DetectOptions, DetectResult
from .engine.detect import run_detection as _run_engine
from .models.ensemble import Ensemble, ensemble_for
from .models.package import ModelPackage


def ensemble_factory(pkg: ModelPackage, opts: DetectOptions):
    """``mode -> Ensemble`` for the options' threads, TTA, member selection, cascade and
    execution provider (``models.ensemble.ensemble_for``)."""
    def make(mode: str) -> Ensemble:
        return ensemble_for(pkg, mode, opts)
    return make


def run_detection(opts: DetectOptions, pkg: ModelPackage, progress=None, is_cancelled=None,
                  ensemble: Ensemble | None = None) -> DetectResult:
    """``engine.detect.run_detection`` with the package's own ensemble as the scorer."""
    return _run_engine(opts, pkg, progress=progress, is_cancelled=is_cancelled, ensemble=ensemble,
                       make_scorer=ensemble_factory(pkg, opts))
