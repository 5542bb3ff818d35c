"""landslide:detect: S1/S2 layers in, landslide-probability tile grid out."""
from __future__ import annotations

from qgis.core import (
    QgsCoordinateReferenceSystem,
    QgsFeature,
    QgsFeatureSink,
    QgsField,
    QgsFields,
    QgsGeometry,
    QgsProcessingException,
    QgsProcessingMultiStepFeedback,
    QgsProcessingOutputNumber,
    QgsProcessingOutputString,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterFeatureSink,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterString,
    QgsRectangle,
)

from ..core.errors import Cancelled, InputError
from ..engine.outputs import field_spec, mode_counts_text, record_values, write_probability_raster
from ..models.ensemble import MissingDependency
from ..models.package import PackageError, load_package
from ..pipeline import run_detection
from ..rendering.compat import (
    BOOL,
    DOUBLE,
    FLAG_ADVANCED,
    INT,
    NUMBER_DOUBLE,
    STRING,
    VECTOR_POLYGON,
    WKB_POLYGON,
)
from .common import (
    LandslideAlgorithm,
    StyleLoader,
    add_input_parameters,
    add_scoring_parameters,
    detect_options,
    is_null,
    model_parameter,
)

QTYPES = {"int": INT, "real": DOUBLE, "str": STRING, "bool": BOOL}


class DetectAlgorithm(LandslideAlgorithm):
    OUTPUT = "OUTPUT"
    OUTPUT_RASTER = "OUTPUT_RASTER"

    NAME = "detect"
    DISPLAY = "Detect landslides (Sentinel-1/2)"
    GROUP_ID = "detection"

    def shortHelpString(self):
        return self.tr(
            "Scores every 640 m x 640 m tile (64 x 64 pixels at 10 m) of the area for landslide "
            "presence with an ensemble of transformer and gradient-boosting models (arXiv 2604.05959).\n\n"
            "Inputs: a post-event Sentinel-2 image (R, G, B, NIR; L2A reflectance x 10000, with or "
            "without the +1000 offset, or 0-1 floats) and/or Sentinel-1 VV/VH calibrated backscatter (dB, "
            "linear power or linear amplitude, detected from the values) for the descending and ascending orbits, "
            "each before and after the event. Layers "
            "may differ in CRS, resolution and extent: they are warped onto one 10 m grid (the "
            "Sentinel-2 UTM grid) over their common area.\n\n"
            "Any combination runs: Sentinel-2 or not, and each orbit absent, post-event only (VV, VH) or "
            "post and pre (also the change). An optional Sentinel-2 cloud mask (an L2A SCL raster, "
            "or 0/1 with 1 = invalid; any CRS and resolution; also taken from an 'SCL' band of the "
            "Sentinel-2 layer) removes clouds, shadows and cirrus from the optical pixels.\n\n"
            "Per tile fallback: each tile is scored by the richest combination whose sources are valid "
            "there (at least the minimum valid fraction each): a tile under cloud with SAR is scored by "
            "the SAR members with that combination's threshold; a tile with nothing valid is 'nodata'. "
            "The tile's 'mode' field names its combination (e.g. s2+desc+asc, desc+asc, s2, desc_post); "
            "'s2_valid' and 'sar_valid' give the valid fractions. The log says which members ran for "
            "each combination and counts tiles per mode.\n\n"
            "Output: one polygon per tile with the ensemble probability 'prob', 'flagged' (prob >= "
            "threshold), each member's probability (p_*), the valid-pixel fraction, and 'status' "
            "('nodata' tiles, with too few valid pixels, get no probability), and 'uncertainty' (0-1: "
            "0.7 x closeness of prob to the threshold + 0.3 x spread of the members' probabilities; see the "
            "README). The threshold defaults "
            "to the model package's value for each tile's combination.\n\n"
            "Cascade (default): the gradient-boosting pair scores every tile first; the networks run only "
            "where the model weights leave the flag open or the probability may lie within the cascade "
            "margin of the threshold. Flags are those of the full ensemble; 'scored_by' says 'full' or "
            "'gbm' per tile, and on 'gbm' tiles 'prob' is the pair's weighted mean (see the docs page "
            "'cascade'). Full ensemble (advanced) runs every member everywhere. Execution provider "
            "(advanced): auto uses a GPU when this onnxruntime offers one, else the CPU.\n\n"
            "Dask scheduler (advanced): the address of a running Dask cluster (tcp://host:8786) scores "
            "the scene there in bands of tile rows, with the same result; the inputs and the model package "
            "must be on paths the workers see. Empty: in this process.")

    def initAlgorithm(self, config=None):
        adv = FLAG_ADVANCED
        add_input_parameters(self, adv)
        self.addParameter(model_parameter())
        self.addParameter(QgsProcessingParameterNumber(
            "THRESHOLD", self.tr("Probability threshold (empty: the model package's value)"),
            NUMBER_DOUBLE, None, optional=True, minValue=0.0, maxValue=1.0))
        p = QgsProcessingParameterNumber("MIN_VALID", self.tr("Minimum valid-pixel fraction of a tile"),
                                         NUMBER_DOUBLE, 0.5, minValue=0.01, maxValue=1.0)
        p.setFlags(p.flags() | adv)
        self.addParameter(p)
        p = QgsProcessingParameterBoolean("TTA", self.tr("Flip test-time augmentation (4x slower networks)"), False)
        p.setFlags(p.flags() | adv)
        self.addParameter(p)
        add_scoring_parameters(self)
        p = QgsProcessingParameterString(
            "DASK_SCHEDULER", self.tr("Dask scheduler address (empty: run here)"), "", optional=True)
        p.setFlags(p.flags() | adv)
        self.addParameter(p)
        self.addParameter(QgsProcessingParameterFeatureSink(
            self.OUTPUT, self.tr("Landslide probability grid"), VECTOR_POLYGON))
        self.addParameter(QgsProcessingParameterRasterDestination(
            self.OUTPUT_RASTER, self.tr("Landslide probability raster (one pixel per tile)"),
            optional=True, createByDefault=False))
        self.addOutput(QgsProcessingOutputNumber("FLAGGED", self.tr("Number of flagged tiles")))
        self.addOutput(QgsProcessingOutputNumber("TILES", self.tr("Number of tiles")))
        self.addOutput(QgsProcessingOutputNumber("THRESHOLD", self.tr("Threshold used")))
        self.addOutput(QgsProcessingOutputString("MODE", self.tr("Combination of the inputs (e.g. s2+desc+asc)")))
        self.addOutput(QgsProcessingOutputString("TILES_PER_MODE", self.tr(
            "Tiles per mode, e.g. 's2+desc+asc: 20; desc+asc: 16; nodata: 2'")))
        self.addOutput(QgsProcessingOutputNumber("NODATA", self.tr("Number of nodata tiles")))

    def processAlgorithm(self, parameters, context, feedback):
        steps = QgsProcessingMultiStepFeedback(3, feedback)
        model_dir = self.parameterAsFile(parameters, "MODEL", context) or None
        try:
            pkg = load_package(model_dir)
        except PackageError as exc:
            raise QgsProcessingException(f"Model package problem: {exc}") from None
        opts = detect_options(self, parameters, context)
        if not is_null(parameters.get("THRESHOLD")):
            opts.threshold = self.parameterAsDouble(parameters, "THRESHOLD", context)
        opts.min_valid_fraction = self.parameterAsDouble(parameters, "MIN_VALID", context)
        opts.tta = self.parameterAsBool(parameters, "TTA", context)
        feedback.pushInfo(f"Model package: {pkg.name} ({pkg.folder})")

        def progress(stage, frac, msg=""):
            steps.setCurrentStep(0 if stage == "align" else 1)
            steps.setProgress(100.0 * frac)
            if msg and stage == "align":
                feedback.pushInfo(msg)

        scheduler = (self.parameterAsString(parameters, "DASK_SCHEDULER", context) or "").strip()
        try:
            if scheduler:  # dask is imported only on this path
                from ..cluster import MissingDask
                from ..cluster.client import detect_on_cluster

                feedback.pushInfo(f"Scoring on the Dask cluster at {scheduler}")
                try:
                    result = detect_on_cluster(opts, pkg, scheduler, progress=progress,
                                               is_cancelled=feedback.isCanceled)
                except MissingDask as exc:
                    raise QgsProcessingException(str(exc)) from None
                except OSError as exc:
                    raise QgsProcessingException(
                        f"Could not use the Dask cluster at '{scheduler}': {exc}. Check the address and that "
                        "the scheduler is running, or leave the Dask scheduler parameter empty.") from None
                except (Cancelled, InputError, PackageError, MissingDependency):
                    raise
                except Exception as exc:  # noqa: BLE001 - e.g. KilledWorker: the cluster lost its workers
                    raise QgsProcessingException(
                        f"The run on the Dask cluster at '{scheduler}' failed: {type(exc).__name__}: {exc}") from None
            else:
                result = run_detection(opts, pkg, progress=progress, is_cancelled=feedback.isCanceled)
        except Cancelled:
            raise QgsProcessingException(self.tr("Cancelled: no output was written.")) from None
        except (InputError, PackageError, MissingDependency) as exc:
            raise QgsProcessingException(str(exc)) from None
        for line in result.log:
            (feedback.pushWarning if line.startswith("Warning") else feedback.pushInfo)(line)

        # the output is created only now, so a failure or cancel above leaves nothing behind
        steps.setCurrentStep(2)
        spec = field_spec(result)
        fields = QgsFields()
        for name, kind in spec:
            fields.append(QgsField(name, QTYPES[kind]))
        crs = QgsCoordinateReferenceSystem.fromWkt(result.grid.crs_wkt)
        sink, dest_id = self.parameterAsSink(parameters, self.OUTPUT, context, fields,
                                             WKB_POLYGON, crs)
        if sink is None:
            raise QgsProcessingException(self.invalidSinkError(parameters, self.OUTPUT))
        n = len(result.records)
        for i, rec in enumerate(result.records):
            f = QgsFeature(fields)
            vals = record_values(rec, result, pkg.name)
            f.setAttributes([vals[name] for name, _ in spec])
            x0, y0, x1, y1 = rec.bounds
            f.setGeometry(QgsGeometry.fromRect(QgsRectangle(x0, y0, x1, y1)))
            sink.addFeature(f, QgsFeatureSink.Flag.FastInsert)
            if i % 2000 == 0:
                steps.setProgress(100.0 * i / n)
        outputs = {self.OUTPUT: dest_id, "FLAGGED": result.flagged, "TILES": n, "MODE": result.mode,
                   "THRESHOLD": result.threshold, "TILES_PER_MODE": mode_counts_text(result),
                   "NODATA": result.mode_counts.get("nodata", 0)}
        raster = self.parameterAsOutputLayer(parameters, self.OUTPUT_RASTER, context)
        if raster:
            write_probability_raster(raster, result, pkg.patch_size)
            outputs[self.OUTPUT_RASTER] = raster
            StyleLoader.attach(context, raster, "probability_raster.qml")
        StyleLoader.attach(context, dest_id, "landslide_grid.qml", "Landslide probability grid")
        feedback.pushInfo(result.summary())
        return outputs
