"""landslide:detect: S1/S2 layers in, landslide-probability tile grid out."""
from __future__ import annotations

import contextlib
import os

from qgis.core import (
    QgsCoordinateReferenceSystem,
    QgsFeature,
    QgsFeatureSink,
    QgsField,
    QgsFields,
    QgsGeometry,
    QgsProcessingException,
    QgsProcessingMultiStepFeedback,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterFeatureSink,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterString,
    QgsRectangle,
)

from ..core.errors import Cancelled, InputError
from ..engine.outputs import field_spec, mode_counts_text, record_values, write_probability_raster, write_run_record
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
from ..training.scene_adapt import ADAPT_TO_SCENE_DEFAULT, scene_adapted
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
        return self.short_help(
            "Scores every 640 m tile of the inputs' union for landslides with the ensemble of arXiv "
            "2604.05959, from Sentinel-2 and/or Sentinel-1 layers in any CRS, and writes a styled probability grid. "
            "Detection limit (SYNTHETIC scars): with Sentinel-2 half the scar tiles are flagged only from a scar "
            "of about 5 % of the tile (2 ha); a typical real landslide tile (0.2 ha of scar) lies below it.")

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
        self.addParameter(QgsProcessingParameterBoolean(
            "ADAPT_TO_SCENE", self.tr("Adapt the model to the scene (refit its GBMs toward the scene's features)"),
            ADAPT_TO_SCENE_DEFAULT))
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
        self.add_outputs(("FLAGGED", "Number of flagged tiles"), ("TILES", "Number of tiles"), ("THRESHOLD", "Threshold used"),
                         ("MODE", "Combination of the inputs (e.g. s2+desc+asc)", str),
                         ("TILES_PER_MODE", "Tiles per mode, e.g. 's2+desc+asc: 20; desc+asc: 16; nodata: 2'", str),
                         ("NODATA", "Number of nodata tiles"))

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
        adapt_scene = self.parameterAsBool(parameters, "ADAPT_TO_SCENE", context)
        scene_stack = contextlib.ExitStack()  # ADAPT_TO_SCENE: the adapted package lives until scored
        try:
            if adapt_scene:
                pkg, lines = scene_stack.enter_context(scene_adapted(
                    opts, pkg, progress=lambda f: progress("align", f), is_cancelled=feedback.isCanceled))
                for line in lines:
                    (feedback.pushWarning if line.startswith("Warning") else feedback.pushInfo)(line)
                feedback.pushInfo(f"Model package used: {pkg.name}")
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
        finally:
            scene_stack.close()
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
        if os.path.isfile(str(dest_id).split("|")[0]):  # what it was scored from, for 'Adapt and re-score'
            write_run_record(str(dest_id), opts, pkg.folder)
        feedback.pushInfo(result.summary())
        return outputs
