"""landslide:adapt: a new model package fitted to the region from the grid's verdicts
(training/adapt.py does the work; this algorithm parses parameters and reports)."""
from __future__ import annotations

from qgis.core import (
    QgsProcessingException,
    QgsProcessingMultiStepFeedback,
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
            "Fits a new model package to this region from the analyst's review verdicts (from 3 of each class), "
            "in about a minute on a CPU: threshold re-chosen from the design-weighted F1 of cross-validated "
            "probabilities, gradient-boosting members refitted where that estimate says it helps; the region's "
            "landslide share with its interval in the log and outputs. Nothing is written on failure.")

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
        self.add_outputs(("THRESHOLD", "Threshold of the adapted package"), ("CONFIRMED", "Confirmed verdicts used"),
                         ("REJECTED", "Rejected verdicts used"), ("CV_AUC", "Cross-validated AUC on the verdicts"),
                         ("CV_F1", "Cross-validated F1 on the verdicts"), ("MODE", "Mode adapted", str))
        self.add_estimate_outputs("LANDSLIDE_SHARE", "Estimated landslide share of the region (from the random verdicts)")
        self.add_estimate_outputs("LANDSLIDE_TILES", "Estimated landslide tiles in the region")
        self.add_outputs(("RANDOM_VERDICTS", "Verdicts from the random sample"), ("PURPOSIVE_VERDICTS", "Purposive verdicts"),
                         ("FLAGGED_SHARE", "Share of the scene's tiles the adapted package flags"),
                         ("THRESHOLD_CHOICE", "How the threshold was chosen", str))

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
        out = {self.OUTPUT: str(res.folder), "THRESHOLD": res.threshold, "CONFIRMED": res.n_confirmed,
               "REJECTED": res.n_rejected, "CV_AUC": m.get("cv_auc"), "CV_F1": m.get("cv_f1"), "MODE": res.mode}
        out.update(adapt_outputs(res))
        return out


def adapt_outputs(res) -> dict:
    """The share estimate and threshold choice of an ``AdaptResult`` as output values (None
    where unknown: no random verdict)."""
    sh = res.share.as_dict() if res.share is not None else {}
    rec = res.record or {}
    main = rec.get("combinations", {}).get(res.mode, {})
    choice = rec.get("threshold_choice", {})
    how = (f"{rec.get('chosen', '')}: flag {100 * choice.get('fraction', float('nan')):.1f} % of the scene; "
           + ("no random verdict, F1-optimal share of the purposive verdicts" if not choice.get("random_sample")
              else f"lambda {choice.get('lam', 0):.2f} x F1 part + (1 - lambda) x share implied by the estimate")) \
        if choice else ""
    return {"LANDSLIDE_SHARE": sh.get("share"), "LANDSLIDE_SHARE_LO": sh.get("share_lo"),
            "LANDSLIDE_SHARE_HI": sh.get("share_hi"), "LANDSLIDE_TILES": sh.get("count"),
            "LANDSLIDE_TILES_LO": sh.get("count_lo"), "LANDSLIDE_TILES_HI": sh.get("count_hi"),
            "RANDOM_VERDICTS": sh.get("n_random"), "PURPOSIVE_VERDICTS": sh.get("n_purposive"),
            "FLAGGED_SHARE": main.get("scene_flagged_share"), "THRESHOLD_CHOICE": how}
