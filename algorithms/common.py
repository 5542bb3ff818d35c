"""Helpers shared by the algorithms: layer -> engine input, error translation, styling."""
from __future__ import annotations

from qgis.core import (
    QgsProcessingAlgorithm,
    QgsProcessingException,
    QgsProcessingLayerPostProcessorInterface,
    QgsProcessingOutputNumber,
    QgsProcessingOutputString,
    QgsProcessingParameterBand,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterEnum,
    QgsProcessingParameterExtent,
    QgsProcessingParameterFile,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterString,
)
from qgis.PyQt.QtCore import QCoreApplication

from ..core.channels import ROLE_LABELS, S1_ROLES, S2_BAND_PARAMS
from ..core.links import algorithm_url
from ..engine.align import InputLayer
from ..engine.detect import DetectOptions
from ..engine.units import S2_OFFSET_CHOICES, S2_SCALE_CHOICES, SAR_UNIT_CHOICES
from ..models.ensemble import DEFAULT_CASCADE_MARGIN
from ..models.package import BUNDLED
from ..rendering import RESOURCES
from ..rendering.compat import FILE_FOLDER, FLAG_ADVANCED, NUMBER_DOUBLE, NUMBER_INTEGER, is_null

S1_PARAMS = tuple((role, f"{ROLE_LABELS[role]} (VV, VH)") for role in S1_ROLES)
S2_BANDS = S2_BAND_PARAMS
S2_SCALE_LABELS = ["Detect from the data", "Integers, reflectance x 10000", "Floats, reflectance 0-1"]
S2_OFFSET_LABELS = ["Detect from the data", "Present (processing baseline 04.00 or later)", "Absent"]
SAR_UNIT_LABELS = ["Detect from the data", "Decibels (dB)", "Linear power", "Linear amplitude"]  # order = SAR_UNIT_CHOICES


GROUPS = {"detection": "Detection", "training": "Training", "evaluation": "Review and evaluation"}


class LandslideAlgorithm(QgsProcessingAlgorithm):
    """Identity boilerplate of the provider's algorithms: subclasses set NAME, DISPLAY
    and GROUP_ID (a key of GROUPS) and implement the Processing methods that matter."""

    NAME = ""
    DISPLAY = ""
    GROUP_ID = ""

    def tr(self, text):
        return QCoreApplication.translate("landslide", text)

    def createInstance(self):  # noqa: N802 (QGIS API)
        return type(self)()

    def name(self):
        return self.NAME

    def displayName(self):  # noqa: N802 (QGIS API)
        return self.tr(self.DISPLAY)

    def group(self):
        return self.tr(GROUPS[self.GROUP_ID])

    def groupId(self):  # noqa: N802 (QGIS API)
        return self.GROUP_ID

    def helpUrl(self):  # noqa: N802 (QGIS API)
        """The algorithm's page on the documentation site (the dialog's Help button)."""
        return algorithm_url(self.NAME)

    def add_outputs(self, *specs) -> None:
        """Declare outputs from ``(NAME, label)`` (a number) or ``(NAME, label, str)`` (text)."""
        for name, label, *kind in specs:
            cls = QgsProcessingOutputString if kind and kind[0] is str else QgsProcessingOutputNumber
            self.addOutput(cls(name, self.tr(label)))

    def add_estimate_outputs(self, name: str, label: str) -> None:
        """An estimate and its 95 % interval: ``NAME``, ``NAME_LO``, ``NAME_HI``."""
        self.add_outputs((name, label), (name + "_LO", label + ", 95 % lower bound"),
                         (name + "_HI", label + ", 95 % upper bound"))

    def short_help(self, summary: str) -> str:
        """The dialog's help panel: a summary of a sentence or two and the link to the page that
        holds the parameters, how to read the results and the pitfalls (docs/algorithms/)."""
        url = self.helpUrl()
        return (self.tr(summary) + "\n\n" + self.tr("Parameters, how to read the results and pitfalls:")
                + f' <a href="{url}">{url}</a>')


def add_input_parameters(alg, advanced_cls) -> None:
    """The S1/S2 inputs shared by detect and exportpatches (names are part of the API)."""
    alg.addParameter(QgsProcessingParameterRasterLayer(
        "S2", "Sentinel-2 post-event image (R, G, B, NIR)", optional=True))
    for name, label, default in S2_BANDS:
        # no default: unset means "from the band names (B4, B04, Red...), else band 1-4"
        alg.addParameter(QgsProcessingParameterBand(
            name, f"{label} (empty: from the band names, else {default})", None, "S2", optional=True))
    alg.addParameter(QgsProcessingParameterRasterLayer(
        "S2_MASK", "Sentinel-2 cloud mask: L2A scene classification (SCL) or 0/1, 1 = invalid "
        "(empty: the Sentinel-2 layer's SCL band, if any)", optional=True))
    for name, label in S1_PARAMS:
        alg.addParameter(QgsProcessingParameterRasterLayer(name, label, optional=True))
    for name, label, default in (("S1_VV_BAND", "Sentinel-1 VV band number", 1),
                                 ("S1_VH_BAND", "Sentinel-1 VH band number", 2)):
        p = QgsProcessingParameterNumber(name, label, NUMBER_INTEGER, default,
                                         minValue=1)
        p.setFlags(p.flags() | advanced_cls)
        alg.addParameter(p)
    alg.addParameter(QgsProcessingParameterExtent("EXTENT", "Processing extent", optional=True))
    for name, label, options in (("S2_SCALE", "Sentinel-2 value scale", S2_SCALE_LABELS),
                                 ("S2_OFFSET", "Sentinel-2 +1000 reflectance offset", S2_OFFSET_LABELS),
                                 ("SAR_UNITS", "Sentinel-1 units", SAR_UNIT_LABELS)):
        p = QgsProcessingParameterEnum(name, label, options, defaultValue=0)
        p.setFlags(p.flags() | advanced_cls)
        alg.addParameter(p)


def detect_grid(alg, parameters, name, context):
    """(source, field names) of a grid written by detect, or a message saying what to choose."""
    grid = alg.parameterAsSource(parameters, name, context)
    if grid is None:
        raise QgsProcessingException(alg.invalidSourceError(parameters, name))
    names = grid.fields().names()
    if "prob" not in names or "flagged" not in names:
        raise QgsProcessingException(
            "The grid has no 'prob' or 'flagged' field: choose the output of 'Detect landslides (Sentinel-1/2)'.")
    return grid, names


def model_parameter() -> QgsProcessingParameterFile:
    return QgsProcessingParameterFile("MODEL", "Model package folder (empty: the bundled model)",
                                      behavior=FILE_FOLDER,
                                      defaultValue=str(BUNDLED), optional=True)


def add_scoring_parameters(alg, cascade: bool = True) -> None:
    """Advanced scoring parameters (docs/concepts/cascade.md): FULL_ENSEMBLE and
    CASCADE_MARGIN (detection) and EXECUTION_PROVIDER (detection and adapt)."""
    params = []
    if cascade:
        params.append(QgsProcessingParameterBoolean(
            "FULL_ENSEMBLE", "Full ensemble: every network on every tile (off: the networks run only where "
            "the gradient-boosting pair leaves the flag open; same flags)", False))
        params.append(QgsProcessingParameterNumber(
            "CASCADE_MARGIN", "Cascade margin: the networks also run on tiles whose probability may lie "
            "this close to the threshold", NUMBER_DOUBLE, DEFAULT_CASCADE_MARGIN, minValue=0.0, maxValue=1.0))
    params.append(QgsProcessingParameterString(
        "EXECUTION_PROVIDER", "Execution provider of the networks: auto (CUDA, DirectML, CoreML, else CPU), "
        "cpu, or a provider name (cuda, directml, coreml, ...)", "auto", optional=True))
    for p in params:
        p.setFlags(p.flags() | FLAG_ADVANCED)
        alg.addParameter(p)


def _raster_path(alg, parameters, name, context, label) -> str | None:
    layer = alg.parameterAsRasterLayer(parameters, name, context)
    if layer is None:
        if not is_null(parameters.get(name)):
            raise QgsProcessingException(f"The {label} layer could not be loaded: {parameters.get(name)}")
        return None
    if layer.providerType() != "gdal":
        raise QgsProcessingException(
            f"The {label} layer comes from the '{layer.providerType()}' provider; only file-based "
            "(GDAL) rasters can be read. Save it as a GeoTIFF first.")
    return layer.source()


def detect_options(alg, parameters, context) -> DetectOptions:
    opts = DetectOptions()
    s2 = _raster_path(alg, parameters, "S2", context, "Sentinel-2")
    if s2:
        given = [None if is_null(parameters.get(n)) else alg.parameterAsInt(parameters, n, context)
                 for n, _, _ in S2_BANDS]
        # none given: the engine reads them from the band names; some given: the rest default
        bands = None if all(g is None for g in given) else [g or d for g, (_, _, d) in zip(given, S2_BANDS)]
        opts.s2 = InputLayer("S2", s2, bands)
    mask = _raster_path(alg, parameters, "S2_MASK", context, "Sentinel-2 cloud mask")
    if mask:
        opts.s2_mask = InputLayer("S2_MASK", mask, [1])
    vv = alg.parameterAsInt(parameters, "S1_VV_BAND", context) or 1
    vh = alg.parameterAsInt(parameters, "S1_VH_BAND", context) or 2
    for name, label in S1_PARAMS:
        path = _raster_path(alg, parameters, name, context, label.split(" (")[0])
        if path:
            opts.s1[name] = InputLayer(name, path, [vv, vh])
    if not is_null(parameters.get("EXTENT")):
        rect = alg.parameterAsExtent(parameters, "EXTENT", context)
        crs = alg.parameterAsExtentCrs(parameters, "EXTENT", context)
        if not rect.isNull() and not rect.isEmpty():
            opts.extent = (rect.xMinimum(), rect.yMinimum(), rect.xMaximum(), rect.yMaximum(),
                           crs.toWkt() if crs.isValid() else "")
    opts.s2_scale = S2_SCALE_CHOICES[alg.parameterAsEnum(parameters, "S2_SCALE", context)]
    opts.s2_offset = S2_OFFSET_CHOICES[alg.parameterAsEnum(parameters, "S2_OFFSET", context)]
    opts.sar_units = SAR_UNIT_CHOICES[alg.parameterAsEnum(parameters, "SAR_UNITS", context)]
    if alg.parameterDefinition("FULL_ENSEMBLE") is not None:
        opts.full_ensemble = alg.parameterAsBool(parameters, "FULL_ENSEMBLE", context)
    if alg.parameterDefinition("CASCADE_MARGIN") is not None and not is_null(parameters.get("CASCADE_MARGIN")):
        opts.cascade_margin = alg.parameterAsDouble(parameters, "CASCADE_MARGIN", context)
    if alg.parameterDefinition("EXECUTION_PROVIDER") is not None:
        opts.execution_provider = (alg.parameterAsString(parameters, "EXECUTION_PROVIDER", context) or "auto").strip()
    return opts


class StyleLoader(QgsProcessingLayerPostProcessorInterface):
    """Applies a bundled .qml to an output when Processing loads it on the canvas."""

    instances = []  # keep Python wrappers alive until QGIS has called them

    def __init__(self, qml: str):
        super().__init__()
        self.qml = qml

    def postProcessLayer(self, layer, context, feedback):  # noqa: N802 (QGIS API)
        if layer is not None and layer.isValid():
            layer.loadNamedStyle(str(RESOURCES / self.qml))
            layer.triggerRepaint()

    @classmethod
    def attach(cls, context, dest_id, qml, name=None):
        if not context.willLoadLayerOnCompletion(dest_id):
            return
        loader = cls(qml)
        cls.instances.append(loader)
        details = context.layerToLoadOnCompletionDetails(dest_id)
        if name:
            details.name = name
        details.setPostProcessor(loader)


def records_errors(cls):
    """Make ``cls.processAlgorithm`` remember its failure and log for the diagnostics report
    (core/lasterror.py); a cancel is not an error.  Applied to every algorithm by the provider."""
    run = cls.processAlgorithm
    if getattr(run, "records_errors", False):
        return cls

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802 (QGIS API)
        try:
            return run(self, parameters, context, feedback)
        except Exception as exc:
            if not (feedback is not None and feedback.isCanceled()):
                from ..core import lasterror

                log = feedback.textLog() if feedback is not None and hasattr(feedback, "textLog") else ""
                lasterror.record(f"landslide:{self.name()}", f"{type(exc).__name__}: {exc}", log)
            raise

    processAlgorithm.records_errors = True
    cls.processAlgorithm = processAlgorithm
    return cls
