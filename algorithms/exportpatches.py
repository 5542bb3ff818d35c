"""landslide:exportpatches: aligned S1/S2 layers (+ inventory) -> competition-layout patch folder."""
from __future__ import annotations

from qgis.core import (
    QgsProcessingException,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterFolderDestination,
    QgsProcessingParameterNumber,
    QgsProcessingParameterString,
)

from ..core.errors import Cancelled, InputError
from ..engine.export import Inventory, export_patches
from ..models.package import PackageError, load_package
from ..rendering.compat import FLAG_ADVANCED, NUMBER_DOUBLE, VECTOR_POLYGON
from .common import (
    LandslideAlgorithm,
    add_input_parameters,
    detect_options,
    model_parameter,
)


class ExportPatchesAlgorithm(LandslideAlgorithm):
    NAME = "exportpatches"
    DISPLAY = "Export training patches (competition layout)"
    GROUP_ID = "training"

    def shortHelpString(self):
        return self.short_help(
            "Aligns the Sentinel-1/2 layers exactly as 'Detect landslides' does and writes every tile as a 64 "
            "x 64 x 12 .npy patch in the competition layout, labelled from an optional landslide inventory, "
            "for 'Train a model package'.")

    def initAlgorithm(self, config=None):
        adv = FLAG_ADVANCED
        add_input_parameters(self, adv)
        self.addParameter(QgsProcessingParameterFeatureSource(
            "INVENTORY", self.tr("Landslide inventory polygons (labels)"), [VECTOR_POLYGON],
            optional=True))
        self.addParameter(QgsProcessingParameterNumber(
            "MIN_FRACTION", self.tr("Minimum landslide area fraction for a positive tile"),
            NUMBER_DOUBLE, 0.01, minValue=0.0, maxValue=1.0))
        self.addParameter(QgsProcessingParameterNumber(
            "MIN_VALID", self.tr("Minimum valid-pixel fraction of a tile"), NUMBER_DOUBLE,
            0.9, minValue=0.01, maxValue=1.0))
        p = model_parameter()
        p.setDescription(self.tr("Model package whose layout to export (empty: the bundled model)"))
        p.setFlags(p.flags() | adv)
        self.addParameter(p)
        p = QgsProcessingParameterString("PREFIX", self.tr("Patch ID prefix"), "ID")
        p.setFlags(p.flags() | adv)
        self.addParameter(p)
        self.addParameter(QgsProcessingParameterFolderDestination("OUTPUT", self.tr("Patch folder")))
        self.add_outputs(("PATCHES", "Patches written"), ("POSITIVES", "Positive patches"))

    def processAlgorithm(self, parameters, context, feedback):
        try:
            # the layout (channels, patch size, S2 convention) to export in
            pkg = load_package(self.parameterAsFile(parameters, "MODEL", context) or None)
        except PackageError as exc:
            raise QgsProcessingException(str(exc)) from None
        opts = detect_options(self, parameters, context)
        opts.min_valid_fraction = self.parameterAsDouble(parameters, "MIN_VALID", context)
        inventory = None
        source = self.parameterAsSource(parameters, "INVENTORY", context)
        if source is not None:
            wkts = [f.geometry().asWkt() for f in source.getFeatures() if f.hasGeometry()]
            if not wkts:
                raise QgsProcessingException(self.tr("The landslide inventory has no polygons."))
            inventory = Inventory(source.sourceCrs().toWkt(), wkts)
        folder = self.parameterAsString(parameters, "OUTPUT", context)
        try:
            res = export_patches(opts, pkg, folder, inventory,
                                 self.parameterAsDouble(parameters, "MIN_FRACTION", context),
                                 self.parameterAsString(parameters, "PREFIX", context) or "ID",
                                 progress=lambda f, m="": feedback.setProgress(100 * f),
                                 is_cancelled=feedback.isCanceled)
        except Cancelled:
            raise QgsProcessingException(self.tr("Cancelled.")) from None
        except InputError as exc:
            raise QgsProcessingException(str(exc)) from None
        for line in res.log:
            (feedback.pushWarning if line.startswith("Warning") else feedback.pushInfo)(line)
        return {"OUTPUT": folder, "PATCHES": res.n_patches, "POSITIVES": res.n_positive}
