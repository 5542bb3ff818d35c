"""landslide:sample: a seeded stratified random sample of a detect grid's tiles (flagged /
not flagged), marked in a ``sample`` field of a copy of the grid, for landslide:accuracy."""
from __future__ import annotations

import numpy as np
from qgis.core import (
    QgsFeature,
    QgsFeatureSink,
    QgsField,
    QgsFields,
    QgsProcessingException,
    QgsProcessingOutputNumber,
    QgsProcessingParameterFeatureSink,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterNumber,
)

from ..core.errors import InputError
from ..engine.sampling import DEFAULT_PER_CLASS, draw_sample, sample_report
from ..rendering.compat import INT, NUMBER_INTEGER, VECTOR_POLYGON, is_null
from .common import LandslideAlgorithm, StyleLoader, detect_grid


def grid_arrays(features, names) -> tuple[np.ndarray, np.ndarray]:
    """(flagged, scored) per feature of a detect grid."""
    flagged = np.array([("flagged" in names and not is_null(f["flagged"]) and bool(f["flagged"])) for f in features],
                       dtype=bool)
    scored = []
    for f in features:
        p = f["prob"]
        ok = not is_null(p) and float(p) >= 0
        if "status" in names and not is_null(f["status"]):
            ok = ok and str(f["status"]) == "ok"
        scored.append(ok)
    return flagged, np.array(scored, dtype=bool)


class SampleAlgorithm(LandslideAlgorithm):
    GRID = "GRID"
    N_FLAGGED = "N_FLAGGED"
    N_UNFLAGGED = "N_UNFLAGGED"
    SEED = "SEED"
    OUTPUT = "OUTPUT"

    NAME = "sample"
    DISPLAY = "Draw a stratified accuracy sample"
    GROUP_ID = "evaluation"

    def shortHelpString(self):
        return self.short_help(
            "Draws a seeded stratified random sample of a landslide grid's tiles (flagged and not flagged, 50 "
            "each by default) to review for an honest accuracy estimate.")

    def initAlgorithm(self, config=None):
        self.addParameter(QgsProcessingParameterFeatureSource(
            self.GRID, self.tr("Landslide probability grid (output of detect)"), [VECTOR_POLYGON]))
        self.addParameter(QgsProcessingParameterNumber(
            self.N_FLAGGED, self.tr("Sample size among flagged tiles"), NUMBER_INTEGER, DEFAULT_PER_CLASS, minValue=0))
        self.addParameter(QgsProcessingParameterNumber(
            self.N_UNFLAGGED, self.tr("Sample size among tiles not flagged"), NUMBER_INTEGER, DEFAULT_PER_CLASS,
            minValue=0))
        self.addParameter(QgsProcessingParameterNumber(self.SEED, self.tr("Random seed"), NUMBER_INTEGER, 42))
        self.addParameter(QgsProcessingParameterFeatureSink(
            self.OUTPUT, self.tr("Grid with the sample"), VECTOR_POLYGON))
        for name, label in (("SAMPLED", "Tiles in the sample"), ("SAMPLED_FLAGGED", "Sample tiles among flagged"),
                            ("SAMPLED_UNFLAGGED", "Sample tiles among not flagged")):
            self.addOutput(QgsProcessingOutputNumber(name, self.tr(label)))

    def processAlgorithm(self, parameters, context, feedback):
        grid, names = detect_grid(self, parameters, self.GRID, context)
        feats = list(grid.getFeatures())
        flagged, scored = grid_arrays(feats, names)
        try:
            chosen = draw_sample(flagged, scored, self.parameterAsInt(parameters, self.N_FLAGGED, context),
                                 self.parameterAsInt(parameters, self.N_UNFLAGGED, context),
                                 seed=self.parameterAsInt(parameters, self.SEED, context))
        except InputError as exc:
            raise QgsProcessingException(str(exc)) from None
        inside = np.zeros(len(feats), dtype=bool)
        inside[chosen] = True
        feedback.pushInfo(sample_report(flagged, scored, chosen))

        fields = QgsFields()
        for fld in grid.fields():
            if fld.name() != "sample":
                fields.append(fld)
        fields.append(QgsField("sample", INT))
        sink, dest_id = self.parameterAsSink(parameters, self.OUTPUT, context, fields, grid.wkbType(), grid.sourceCrs())
        if sink is None:
            raise QgsProcessingException(self.invalidSinkError(parameters, self.OUTPUT))
        keep = [n for n in names if n != "sample"]
        for i, f in enumerate(feats):
            out = QgsFeature(fields)
            out.setGeometry(f.geometry())
            out.setAttributes([f[n] for n in keep] + [int(inside[i])])
            sink.addFeature(out, QgsFeatureSink.Flag.FastInsert)
        StyleLoader.attach(context, dest_id, "landslide_grid.qml", "Grid with accuracy sample")
        return {self.OUTPUT: dest_id, "SAMPLED": int(inside.sum()), "SAMPLED_FLAGGED": int((inside & flagged).sum()),
                "SAMPLED_UNFLAGGED": int((inside & ~flagged).sum())}
