"""landslide:fetch: an area and an event date in, Sentinel-1/2 COGs named like detect's inputs out."""
from __future__ import annotations

import re

from qgis.core import (
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingOutputFile,
    QgsProcessingOutputRasterLayer,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterDateTime,
    QgsProcessingParameterEnum,
    QgsProcessingParameterExtent,
    QgsProcessingParameterFile,
    QgsProcessingParameterFolderDestination,
    QgsProcessingParameterNumber,
    QgsProcessingParameterString,
)
from qgis.PyQt.QtCore import QDateTime, Qt, QTime

from ..core.channels import ROLE_LABELS
from ..core.errors import Cancelled, InputError
from ..fetch.catalog import CATALOGS
from ..fetch.run import FetchOptions, run_fetch
from ..rendering.compat import DATETIME_TYPE, FILE_FOLDER, FLAG_ADVANCED, NUMBER_DOUBLE, NUMBER_INTEGER
from .common import LandslideAlgorithm

SOURCE_OPTIONS = (("S2", "Sentinel-2 L2A, post-event (with its SCL band)"),
                  ("S1_DESC", "Sentinel-1 descending, pre- and post-event (VV, VH)"),
                  ("S1_ASC", "Sentinel-1 ascending, pre- and post-event (VV, VH)"))
RASTER_OUTPUTS = (("S2", "Sentinel-2 post-event (B04, B03, B02, B08)"),
                  ("S2_MASK", "Sentinel-2 scene classification (SCL)"),
                  *((r, f"{ROLE_LABELS[r]} (VV, VH linear power)")
                    for r in ("S1_DESC_POST", "S1_DESC_PRE", "S1_ASC_POST", "S1_ASC_PRE")))


class FetchAlgorithm(LandslideAlgorithm):
    NAME = "fetch"
    DISPLAY = "Fetch Sentinel-1/2 for an event (STAC)"
    GROUP_ID = "detection"

    def shortHelpString(self):
        return self.short_help(
            "Finds and downloads, for an area and an event date, the Sentinel-1/2 layers 'Detect landslides' "
            "needs from a STAC catalog, cut to the area on one 10 m UTM grid. Needs internet and the "
            "pystac-client package.")

    def initAlgorithm(self, config=None):
        self.addParameter(QgsProcessingParameterExtent("EXTENT", self.tr("Area of interest")))
        self.addParameter(QgsProcessingParameterDateTime(
            "EVENT_DATE", self.tr("Event date and time (UTC; 00:00 = the whole day)"), DATETIME_TYPE))
        self.addParameter(QgsProcessingParameterNumber(
            "POST_DAYS", self.tr("Post-event window (days after the event)"), NUMBER_INTEGER, 20, minValue=1,
            maxValue=366))
        self.addParameter(QgsProcessingParameterNumber(
            "PRE_DAYS", self.tr("Pre-event window for Sentinel-1 (days before the event)"), NUMBER_INTEGER, 30,
            minValue=1, maxValue=366))
        self.addParameter(QgsProcessingParameterNumber(
            "MAX_CLOUD", self.tr("Maximum cloud over the area (%, from the SCL band)"), NUMBER_DOUBLE, 20.0,
            minValue=0.0, maxValue=100.0))
        self.addParameter(QgsProcessingParameterEnum(
            "CATALOG", self.tr("STAC catalog"), [c.label for c in CATALOGS], defaultValue=0))
        self.addParameter(QgsProcessingParameterString(
            "CATALOG_URL", self.tr("Custom STAC API URL (for 'Custom STAC API')"), optional=True))
        self.addParameter(QgsProcessingParameterEnum(
            "SOURCES", self.tr("Sources to fetch"), [label for _, label in SOURCE_OPTIONS], allowMultiple=True,
            defaultValue=[0, 1, 2]))
        self.addParameter(QgsProcessingParameterFolderDestination("OUTPUT_FOLDER", self.tr("Output folder")))
        self.addParameter(QgsProcessingParameterFile(
            "CACHE_FOLDER", self.tr("Cache folder (a rerun with the same inputs skips the network)"),
            behavior=FILE_FOLDER, optional=True))
        p = QgsProcessingParameterString(
            "TOKEN_URL", self.tr("URL signing token endpoint (empty: Planetary Computer's for its catalog, "
                                 "none for the others)"), optional=True)
        p.setFlags(p.flags() | FLAG_ADVANCED)
        self.addParameter(p)
        p = QgsProcessingParameterBoolean(
            "CLIENT_FILTER", self.tr("Filter on the client even where the catalog offers query/filter"), False)
        p.setFlags(p.flags() | FLAG_ADVANCED)
        self.addParameter(p)
        for name, label in RASTER_OUTPUTS:
            self.addOutput(QgsProcessingOutputRasterLayer(name, self.tr(label)))
        self.addOutput(QgsProcessingOutputFile("ITEMS", self.tr("Chosen items (CSV)")))

    def event_text(self, parameters, context) -> str:
        """EVENT_DATE as fetch's ISO text in UTC: 'YYYY-MM-DD' for a date without a time (a string
        of a bare date, or a QDateTime at 00:00, which the widget cannot leave empty), else
        'YYYY-MM-DDTHH:MM:SS'.  A naive value (the widget's) is taken as UTC, one with Z or an
        offset is converted."""
        text = self.parameterAsString(parameters, "EVENT_DATE", context).strip()
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
            return text
        t = self.parameterAsDateTime(parameters, "EVENT_DATE", context)
        if not t.isValid():
            raise QgsProcessingException(self.tr(
                f"EVENT_DATE '{text}' is not a date (YYYY-MM-DD or YYYY-MM-DDTHH:MM, UTC)."))
        if t.timeSpec() != Qt.TimeSpec.LocalTime:
            t = t.toUTC()
        if isinstance(parameters.get("EVENT_DATE"), QDateTime) and t.time() == QTime(0, 0):
            return t.toString("yyyy-MM-dd")
        return t.toString("yyyy-MM-dd'T'HH:mm:ss")

    def processAlgorithm(self, parameters, context, feedback):
        rect = self.parameterAsExtent(parameters, "EXTENT", context)
        crs = self.parameterAsExtentCrs(parameters, "EXTENT", context)
        if rect.isNull() or rect.isEmpty():
            raise QgsProcessingException(self.tr("The area of interest is empty."))
        cat = CATALOGS[self.parameterAsEnum(parameters, "CATALOG", context)]
        picked = self.parameterAsEnums(parameters, "SOURCES", context)
        token = self.parameterAsString(parameters, "TOKEN_URL", context).strip()
        opts = FetchOptions(
            extent=(rect.xMinimum(), rect.yMinimum(), rect.xMaximum(), rect.yMaximum(),
                    crs.toWkt() if crs.isValid() else ""),
            event=self.event_text(parameters, context),
            output_folder=self.parameterAsString(parameters, "OUTPUT_FOLDER", context),
            post_days=self.parameterAsInt(parameters, "POST_DAYS", context),
            pre_days=self.parameterAsInt(parameters, "PRE_DAYS", context),
            max_cloud=self.parameterAsDouble(parameters, "MAX_CLOUD", context),
            catalog=cat.key, catalog_url=self.parameterAsString(parameters, "CATALOG_URL", context).strip(),
            token_url=token or None, sources=tuple(SOURCE_OPTIONS[i][0] for i in picked),
            cache_folder=self.parameterAsString(parameters, "CACHE_FOLDER", context) or "",
            server_filter=not self.parameterAsBool(parameters, "CLIENT_FILTER", context))

        def progress(frac, msg):
            feedback.setProgress(100.0 * frac)
            if msg:
                feedback.pushInfo(msg)

        try:
            result = run_fetch(opts, progress=progress, is_cancelled=feedback.isCanceled)
        except Cancelled:
            raise QgsProcessingException(self.tr("Cancelled: nothing was written to the output folder.")) from None
        except InputError as exc:  # every fetch error (catalog, no items, uncalibrated SAR, network, token)
            raise QgsProcessingException(str(exc)) from None
        for line in result.log:
            (feedback.pushWarning if line.startswith("Warning") else feedback.pushInfo)(line)
        outputs = {"OUTPUT_FOLDER": opts.output_folder, "ITEMS": result.items_csv}
        for name, _label in RASTER_OUTPUTS:
            path = result.outputs.get(name)
            outputs[name] = path
            if path:
                context.addLayerToLoadOnCompletion(path, QgsProcessingContext.LayerDetails(
                    name, context.project(), name))
        return outputs
