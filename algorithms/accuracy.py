"""landslide:accuracy: precision, recall, F1, overall accuracy and the landslide area with 95 %
confidence intervals from the verdicts on a stratified sample (Olofsson et al. 2014; Stehman 2014 where the map
was re-scored after the draw)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from qgis.core import (
    QgsProcessingException,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterFileDestination,
)

from ..core.errors import InputError
from ..engine.accuracy import accuracy_page_html, accuracy_table_text, design_accuracy
from ..engine.verdicts import PICK_FIELD, STRATUM_FIELD, picks_of, strata_of, verdict_label
from ..rendering.compat import VECTOR_POLYGON, is_null
from .common import LandslideAlgorithm, detect_grid
from .sample import field_column, grid_arrays

MEASURES = (("OVERALL", "overall", "Overall accuracy"), ("PRECISION", "users", "User's accuracy (precision)"),
            ("RECALL", "producers", "Producer's accuracy (recall)"), ("F1", "f1", "F1"),
            ("LANDSLIDE_TILES", "tiles", "Landslide tiles"), ("LANDSLIDE_AREA_KM2", "area", "Landslide tile area (km2)"))


def accuracy_of_features(features, names):
    """``StratifiedAccuracy`` of a detect grid's features (QGIS features or anything indexable by
    field name with a ``geometry()``); raises InputError with the analyst's message."""
    if "sample" not in names:
        raise InputError("The grid has no 'sample' field: draw a stratified sample first (landslide:sample or the "
                         "review panel's 'Draw accuracy sample') and review its tiles.")
    if "review" not in names:
        raise InputError("The grid has no 'review' field: review the sample tiles in the review panel first.")
    flagged, scored = grid_arrays(features, names)

    def column(name):
        return field_column(features, names, name) if name in names else None

    sample = [int(bool(v)) for v in field_column(features, names, "sample", 0)]
    labels = np.array([np.nan if is_null(f["review"]) or verdict_label(f["review"]) is None
                       else verdict_label(f["review"]) for f in features], dtype=np.float64)
    areas = np.array([f.geometry().area() if f.hasGeometry() else 0.0 for f in features])
    return design_accuracy(flagged, scored, labels, picks_of(column(PICK_FIELD), sample),
                           strata_of(column(STRATUM_FIELD), flagged), tile_areas=areas)


class AccuracyAlgorithm(LandslideAlgorithm):
    GRID = "GRID"
    OUTPUT_HTML = "OUTPUT_HTML"

    NAME = "accuracy"
    DISPLAY = "Accuracy from a stratified sample"
    GROUP_ID = "evaluation"

    def shortHelpString(self):
        return self.short_help(
            "Estimates overall accuracy, precision, recall, F1 and the landslide area with 95 % confidence "
            "intervals from the review verdicts on a stratified sample (Olofsson et al. 2014).")

    def initAlgorithm(self, config=None):
        self.addParameter(QgsProcessingParameterFeatureSource(
            self.GRID, self.tr("Landslide grid with a reviewed sample"), [VECTOR_POLYGON]))
        self.addParameter(QgsProcessingParameterFileDestination(
            self.OUTPUT_HTML, self.tr("Accuracy table"), self.tr("HTML files (*.html)"), optional=True,
            createByDefault=False))
        for key, _, label in MEASURES:
            self.add_estimate_outputs(key, label)
        self.add_outputs(("N_FLAGGED", "Sample verdicts among flagged tiles"),
                         ("N_UNFLAGGED", "Sample verdicts among tiles not flagged"))

    def processAlgorithm(self, parameters, context, feedback):
        grid, names = detect_grid(self, parameters, self.GRID, context)
        try:
            acc = accuracy_of_features(list(grid.getFeatures()), names)
        except InputError as exc:
            raise QgsProcessingException(str(exc)) from None
        for line in accuracy_table_text(acc).splitlines():
            feedback.pushInfo(line)
        out = {"N_FLAGGED": acc.n[0], "N_UNFLAGGED": acc.n[1]}
        for key, attr, _ in MEASURES:
            e = getattr(acc, attr)
            lo, hi = e.ci_clipped() if attr not in ("tiles", "area") else (max(0.0, e.ci[0]), e.ci[1])
            out.update({key: e.value, key + "_LO": lo, key + "_HI": hi})
        path = self.parameterAsFileOutput(parameters, self.OUTPUT_HTML, context)
        if path:
            Path(path).write_text(accuracy_page_html(acc), encoding="utf-8")
            out[self.OUTPUT_HTML] = path
        return out
