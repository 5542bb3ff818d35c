"""The review panel's "Adapt and re-score": adapt the model package to the grid's verdicts,
then detect again with the adapted package on the same layers, in a background ``QgsTask``.

The layers come from the grid's run record (``<grid>.detect.json``, written by detect; see
engine/outputs.py), else from a small dialog.  The new grid is written beside the old one
(``<name>_r<k>.gpkg``) with the review state (verdicts, notes, ``sample``, ``pick``,
``stratum``) carried over by tile position; the old grid is left as it is.  The adapted
package goes beside the grid too (``<name>_adapted_r<k>``).
"""
from __future__ import annotations

import os
from pathlib import Path

from qgis.core import QgsApplication, QgsTask
from qgis.gui import QgsFileWidget, QgsMapLayerComboBox
from qgis.PyQt.QtWidgets import QDialog, QDialogButtonBox, QFormLayout, QLabel, QVBoxLayout

from ..core.errors import Cancelled, InputError
from ..engine.align import InputLayer
from ..engine.detect import DetectOptions
from ..engine.outputs import read_run_record, write_grid, write_run_record
from ..engine.review_rounds import carry_values, review_state
from ..engine.verdicts import STRATUM_FIELD, read_grid, write_fields
from ..models.ensemble import MissingDependency
from ..models.package import PackageError, load_package
from ..rendering.compat import RASTER_FILTER

# share of the task's progress bar: adapt's stages, then detect, then writing the grid
ADAPT_STAGES = ("features", "cross-validation", "fit")
ADAPT_SPAN, DETECT_SPAN = 50.0, 45.0
_RUNNING: set = set()  # Python owns the tasks it starts: keep each alive until the manager is done with it


def next_round_paths(grid_path: str) -> tuple[Path, Path]:
    """(new grid file, adapted package folder) beside ``grid_path``, both not existing yet:
    ``grid_r2.gpkg`` and ``grid_adapted_r2`` after ``grid.gpkg``; ``grid_r3...`` after ``grid_r2``."""
    p = Path(grid_path)
    stem, k = p.stem, 2
    head, _, tail = stem.rpartition("_r")
    if head and tail.isdigit():
        stem, k = head, int(tail) + 1
    while (p.parent / f"{stem}_r{k}.gpkg").exists() or (p.parent / f"{stem}_adapted_r{k}").exists():
        k += 1
    return p.parent / f"{stem}_r{k}.gpkg", p.parent / f"{stem}_adapted_r{k}"


def carry_review(old_path: str, new_path: str) -> tuple[int, int]:
    """Copy the review state of the old grid's tiles onto the new grid's tiles at the same
    position.  ``stratum`` follows the old grid's (today's flags of the old grid where a
    sample exists but no stratum was recorded: they were the strata of its draw).  Returns
    (verdicts carried, old tiles with a review state that found no tile)."""
    old, new = read_grid(old_path), read_grid(new_path)
    state = review_state(old_path)
    if (old.sample > 0).any() or STRATUM_FIELD in state:
        st = old.stratum
        state[STRATUM_FIELD] = [int(st[i]) if old.scored[i] else None for i in range(len(old.fid))]
    values, lost = carry_values(old, new, state)
    if values:
        write_fields(new_path, values)
    return len(values.get("review", {})), lost


class AdaptRescoreTask(QgsTask):
    """adapt -> detect -> grid with the review carried over.  ``result``: dict after success;
    ``error``: the analyst's message after a failure or cancel.  ``on_done(task, ok)`` runs in
    the main thread when the task ends."""

    def __init__(self, grid_path: str, opts: DetectOptions, model_folder: str | None, package_out: str,
                 grid_out: str, on_done=None, threads: int = 2, rounds_scale: float = 1.0):
        super().__init__("Sentinel Landslide: adapt and re-score", QgsTask.Flag.CanCancel)
        self.grid_path, self.opts, self.model_folder = str(grid_path), opts, model_folder
        self.package_out, self.grid_out = str(package_out), str(grid_out)
        self.on_done, self.threads, self.rounds_scale = on_done, threads, rounds_scale
        self.result: dict | None = None
        self.error: str | None = None
        self.log: list = []

    def _cancelled(self) -> bool:
        return self.isCanceled()

    def run(self) -> bool:  # worker thread: no GUI here
        from ..pipeline import run_detection
        from ..training.adapt import adapt

        tmp = self.grid_out + ".part.gpkg"
        try:
            def adapt_progress(stage, frac):
                k = ADAPT_STAGES.index(stage) if stage in ADAPT_STAGES else 0
                self.setProgress(ADAPT_SPAN * (k + min(1.0, frac)) / len(ADAPT_STAGES))

            res = adapt(self.grid_path, self.opts, self.model_folder, self.package_out, threads=self.threads,
                        progress=adapt_progress, is_cancelled=self._cancelled, rounds_scale=self.rounds_scale)
            self.log += res.log
            pkg = load_package(self.package_out)
            opts = DetectOptions(**{**self.opts.__dict__, "threshold": None, "threads": self.threads})

            def detect_progress(stage, frac, msg=""):
                self.setProgress(ADAPT_SPAN + DETECT_SPAN * (0.1 * frac if stage == "align" else 0.1 + 0.9 * frac))

            det = run_detection(opts, pkg, progress=detect_progress, is_cancelled=self._cancelled)
            if self.isCanceled():
                raise Cancelled()
            self.log += det.log
            write_grid(tmp, det, pkg.name)
            carried, lost = carry_review(self.grid_path, tmp)
            os.replace(tmp, self.grid_out)
            write_run_record(self.grid_out, opts, pkg.folder)
            self.setProgress(100.0)
            self.result = {"grid": self.grid_out, "package": self.package_out, "threshold": res.threshold,
                           "confirmed": res.n_confirmed, "rejected": res.n_rejected, "tiles": len(det.records),
                           "flagged": det.flagged, "carried": carried, "lost": lost}
            return True
        except Cancelled:
            self.error = "Adapt and re-score was cancelled: no new grid was written."
        except (InputError, PackageError, MissingDependency) as exc:
            self.error = str(exc)
        except Exception as exc:  # noqa: BLE001 - a task must report, not crash QGIS
            self.error = f"Adapt and re-score failed: {type(exc).__name__}: {exc}"
        if os.path.exists(tmp):
            os.remove(tmp)
        return False

    def start(self) -> None:
        """Hand the task to QGIS's task manager (kept alive here until it ends)."""
        _RUNNING.add(self)
        QgsApplication.taskManager().addTask(self)

    def finished(self, ok: bool) -> None:  # main thread
        _RUNNING.discard(self)
        if not ok and self.error is None:
            self.error = "Adapt and re-score was cancelled: no new grid was written."
        if self.on_done is not None:
            self.on_done(self, ok)


def recorded_inputs(grid_path: str) -> tuple[DetectOptions, str | None] | None:
    """(options, model folder) detect recorded for the grid (None: ask the analyst)."""
    return read_run_record(grid_path)


INPUT_ROLES = (("S2", "Sentinel-2 post-event image"), ("S2_MASK", "Sentinel-2 cloud mask (optional)"),
               ("S1_DESC_POST", "S1 descending, post-event"), ("S1_DESC_PRE", "S1 descending, pre-event"),
               ("S1_ASC_POST", "S1 ascending, post-event"), ("S1_ASC_PRE", "S1 ascending, pre-event"))


class InputsDialog(QDialog):
    """Asks for the layers detect scored the grid from, where the grid has no run record."""

    def __init__(self, prefill: dict, parent=None):
        super().__init__(parent)
        self.setWindowTitle("Layers of the detect run")
        lay = QVBoxLayout(self)
        msg = QLabel("This grid has no record of the layers detect scored it from (it was written before version "
                     "0.5, or by another tool). Choose the same layers, and the model package it was scored with "
                     "(empty: the bundled one).", self)
        msg.setWordWrap(True)
        lay.addWidget(msg)
        form = QFormLayout()
        self.combos = {}
        for role, label in INPUT_ROLES:
            cb = QgsMapLayerComboBox(self)
            cb.setFilters(RASTER_FILTER)
            cb.setAllowEmptyLayer(True)
            cb.setLayer(prefill.get(role))
            self.combos[role] = cb
            form.addRow(label, cb)
        self.model = QgsFileWidget(self)
        self.model.setStorageMode(QgsFileWidget.StorageMode.GetDirectory)
        form.addRow("Model package (empty: bundled)", self.model)
        lay.addLayout(form)
        box = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel, self)
        box.accepted.connect(self.accept)
        box.rejected.connect(self.reject)
        lay.addWidget(box)

    def options(self) -> tuple[DetectOptions, str | None]:
        opts = DetectOptions()
        for role, _ in INPUT_ROLES:
            layer = self.combos[role].currentLayer()
            if layer is None:
                continue
            if role == "S2":
                opts.s2 = InputLayer("S2", layer.source(), None)  # bands from their names, as detect guesses
            elif role == "S2_MASK":
                opts.s2_mask = InputLayer("S2_MASK", layer.source(), [1])
            else:
                opts.s1[role] = InputLayer(role, layer.source(), [1, 2])
        return opts, (self.model.filePath() or None)


def has_inputs(opts: DetectOptions) -> bool:
    return opts.s2 is not None or bool(opts.s1)

