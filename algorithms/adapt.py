"""landslide:adapt: a new model package fitted to the region from the grid's verdicts
(training/adapt.py does the work; this algorithm parses parameters and reports)."""
from __future__ import annotations

from qgis.core import (
    QgsProcessingException,
    QgsProcessingMultiStepFeedback,
    QgsProcessingOutputNumber,
    QgsProcessingOutputString,
    QgsProcessingParameterFolderDestination,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterVectorLayer,
)

from ..core.errors import Cancelled, InputError
from ..engine.align import InputLayer
from ..models.ensemble import MissingDependency
from ..models.package import PackageError
from ..rendering.compat import FLAG_ADVANCED, VECTOR_POLYGON
from .common import LandslideAlgorithm, add_input_parameters, add_scoring_parameters, detect_options, model_parameter

STAGES = ("features", "cross-validation", "fit")


class AdaptAlgorithm(LandslideAlgorithm):
    GRID = "GRID"
    OUTPUT = "OUTPUT"

    NAME = "adapt"
    DISPLAY = "Adapt the model to the region (from review verdicts)"
    GROUP_ID = "training"

    def shortHelpString(self):
        return self.short_help(
            "Fits a new model package to this region from the analyst's review verdicts, in about a minute on "
            "a CPU: gradient-boosting members refitted, networks re-weighted, threshold re-chosen. Nothing is "
            "written on failure.")

    def initAlgorithm(self, config=None):
        self.addParameter(QgsProcessingParameterVectorLayer(
            self.GRID, self.tr("Grid with review verdicts (output of detect)"), [VECTOR_POLYGON]))
        add_input_parameters(self, FLAG_ADVANCED)
        if self.parameterDefinition("S2_MASK") is None:  # cloud / nodata mask of the S2 image, as detect takes it
            self.addParameter(QgsProcessingParameterRasterLayer(
                "S2_MASK", self.tr("Sentinel-2 mask (as given to detect)"), optional=True))
        self.addParameter(model_parameter())
        add_scoring_parameters(self, cascade=False)  # EXECUTION_PROVIDER of the networks that re-score the tiles
        self.addParameter(QgsProcessingParameterFolderDestination(
            self.OUTPUT, self.tr("Adapted model package folder")))
        self.addOutput(QgsProcessingOutputNumber("THRESHOLD", self.tr("Threshold of the adapted package")))
        self.addOutput(QgsProcessingOutputNumber("CONFIRMED", self.tr("Confirmed verdicts used")))
        self.addOutput(QgsProcessingOutputNumber("REJECTED", self.tr("Rejected verdicts used")))
        self.addOutput(QgsProcessingOutputNumber("CV_AUC", self.tr("Cross-validated AUC on the verdicts")))
        self.addOutput(QgsProcessingOutputNumber("CV_F1", self.tr("Cross-validated F1 on the verdicts")))
        self.addOutput(QgsProcessingOutputString("MODE", self.tr("Mode adapted")))

    def processAlgorithm(self, parameters, context, feedback):
        from ..training.adapt import adapt

        layer = self.parameterAsVectorLayer(parameters, self.GRID, context)
        if layer is None:
            raise QgsProcessingException(self.invalidSourceError(parameters, self.GRID))
        if layer.providerType() != "ogr":
            raise QgsProcessingException("The grid must be a file (GeoPackage, Shapefile...): save it first.")
        grid_path = layer.source().split("|")[0]
        opts = detect_options(self, parameters, context)
        mask = self.parameterAsRasterLayer(parameters, "S2_MASK", context)
        if mask is not None and opts.s2_mask is None:  # detect_options may read it already
            opts.s2_mask = InputLayer("S2_MASK", mask.source(), [1])
        model_dir = self.parameterAsFile(parameters, "MODEL", context) or None
        out = self.parameterAsString(parameters, self.OUTPUT, context)
        steps = QgsProcessingMultiStepFeedback(len(STAGES), feedback)

        def progress(stage, frac):
            steps.setCurrentStep(STAGES.index(stage))
            steps.setProgress(100.0 * frac)

        try:
            res = adapt(grid_path, opts, model_dir, out, progress=progress, is_cancelled=feedback.isCanceled)
        except Cancelled:
            raise QgsProcessingException(self.tr("Cancelled: no package was written.")) from None
        except (InputError, PackageError, MissingDependency) as exc:
            raise QgsProcessingException(str(exc)) from None
        for line in res.log:
            (feedback.pushWarning if line.startswith("Warning") else feedback.pushInfo)(line)
        m = res.metrics
        return {self.OUTPUT: str(res.folder), "THRESHOLD": res.threshold, "CONFIRMED": res.n_confirmed,
                "REJECTED": res.n_rejected, "CV_AUC": m.get("cv_auc"), "CV_F1": m.get("cv_f1"), "MODE": res.mode}
