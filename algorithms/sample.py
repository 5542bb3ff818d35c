"""landslide:sample: a seeded stratified random sample of a detect grid's tiles (flagged /
not flagged), marked in a ``sample`` field of a copy of the grid (with ``pick = random`` and
the tile's ``stratum``), for landslide:accuracy and adapt.  An existing sample is topped up,
never replaced (engine/sampling.py ADD_RULE)."""
from __future__ import annotations

import numpy as np
from qgis.core import (
    QgsFeature,
    QgsFeatureSink,
    QgsField,
    QgsFields,
    QgsProcessingException,
    QgsProcessingParameterFeatureSink,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterNumber,
)

from ..core.errors import InputError
from ..engine.sampling import DEFAULT_PER_CLASS, extend_sample, sample_report, stratum_to_record
from ..engine.verdicts import PICK_FIELD, PICK_RANDOM, STRATUM_FIELD, verdict_label
from ..rendering.compat import INT, NUMBER_INTEGER, STRING, VECTOR_POLYGON, is_null
from .common import LandslideAlgorithm, StyleLoader, detect_grid


def field_column(features, names, name, default=None) -> list:
    """A grid field's values per feature; ``default`` where the field is NULL or absent."""
    return [default if name not in names or is_null(f[name]) else f[name] for f in features]


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
            "each by default) to review for an honest accuracy estimate; a grid that has a sample keeps it and is topped up.")

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
        self.add_outputs(("SAMPLED", "Tiles in the sample"), ("SAMPLED_FLAGGED", "Sample tiles among flagged"),
                         ("SAMPLED_UNFLAGGED", "Sample tiles among not flagged"))

    def processAlgorithm(self, parameters, context, feedback):
        grid, names = detect_grid(self, parameters, self.GRID, context)
        feats = list(grid.getFeatures())
        flagged, scored = grid_arrays(feats, names)

        def column(name, default=None):
            return field_column(feats, names, name, default)
        sample = np.array([int(v or 0) for v in column("sample", 0)], dtype=np.int64)
        stratum = column(STRATUM_FIELD) if STRATUM_FIELD in names else None
        picks = column(PICK_FIELD)
        purposive = [verdict_label(v) is not None and p != PICK_RANDOM for v, p in zip(column("review"), picks)]
        try:
            chosen, numbers = extend_sample(flagged, scored, sample, self.parameterAsInt(parameters, self.N_FLAGGED, context),
                                            self.parameterAsInt(parameters, self.N_UNFLAGGED, context),
                                            seed=self.parameterAsInt(parameters, self.SEED, context), stratum=stratum,
                                            exclude=purposive)
        except InputError as exc:
            raise QgsProcessingException(str(exc)) from None
        if (sample > 0).any():
            feedback.pushInfo(f"The grid has a sample of {int((sample > 0).sum())} tiles: kept, {len(chosen)} added.")
        new_stratum = stratum_to_record(flagged, scored, stratum)
        strata = np.array([new_stratum.get(i, None if stratum is None else stratum[i]) for i in range(len(feats))],
                          dtype=object)
        sample[chosen] = numbers
        for i in chosen:
            picks[i] = PICK_RANDOM
        for i in np.flatnonzero(sample > 0):  # older grids: sample tiles with no pick were drawn at random
            picks[i] = picks[i] or PICK_RANDOM
        inside = sample > 0
        in_stratum1 = np.array([s == 1 for s in strata])
        feedback.pushInfo(sample_report(in_stratum1, scored, np.flatnonzero(inside)))

        own = ("sample", PICK_FIELD, STRATUM_FIELD)
        fields = QgsFields()
        for fld in grid.fields():
            if fld.name() not in own:
                fields.append(fld)
        for name, kind in (("sample", INT), (PICK_FIELD, STRING), (STRATUM_FIELD, INT)):
            fields.append(QgsField(name, kind))
        sink, dest_id = self.parameterAsSink(parameters, self.OUTPUT, context, fields, grid.wkbType(), grid.sourceCrs())
        if sink is None:
            raise QgsProcessingException(self.invalidSinkError(parameters, self.OUTPUT))
        keep = [n for n in names if n not in own]
        for i, f in enumerate(feats):
            out = QgsFeature(fields)
            out.setGeometry(f.geometry())
            out.setAttributes([f[n] for n in keep] + [int(sample[i]), picks[i], strata[i]])
            sink.addFeature(out, QgsFeatureSink.Flag.FastInsert)
        StyleLoader.attach(context, dest_id, "landslide_grid.qml", "Grid with accuracy sample")
        return {self.OUTPUT: dest_id, "SAMPLED": int(inside.sum()),
                "SAMPLED_FLAGGED": int((inside & in_stratum1).sum()),
                "SAMPLED_UNFLAGGED": int((inside & ~in_stratum1).sum())}
