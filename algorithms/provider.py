"""The 'landslide' Processing provider."""
from __future__ import annotations

from qgis.core import QgsProcessingProvider
from qgis.PyQt.QtGui import QIcon

from ..rendering import RESOURCES
from .accuracy import AccuracyAlgorithm
from .adapt import AdaptAlgorithm
from .common import records_errors
from .detect import DetectAlgorithm
from .evaluate import EvaluateAlgorithm
from .exportpatches import ExportPatchesAlgorithm
from .fetch import FetchAlgorithm
from .report import ReportAlgorithm
from .sample import SampleAlgorithm
from .train import TrainAlgorithm

ALGORITHMS = (DetectAlgorithm, ExportPatchesAlgorithm, TrainAlgorithm, EvaluateAlgorithm, ReportAlgorithm,
              FetchAlgorithm, SampleAlgorithm, AccuracyAlgorithm, AdaptAlgorithm)
ALGORITHMS = tuple(records_errors(a) for a in ALGORITHMS)  # the last error goes into the diagnostics

ICON = RESOURCES / "icon.svg"


class LandslideProvider(QgsProcessingProvider):
    def id(self):
        return "landslide"

    def name(self):
        return "Sentinel Landslide"

    def longName(self):
        return "Sentinel Landslide (Sentinel-1/2 landslide detection)"

    def icon(self):
        return QIcon(str(ICON))

    def svgIconPath(self):
        return str(ICON)

    def loadAlgorithms(self):
        for alg in self.algorithm_classes():
            self.addAlgorithm(alg())

    @staticmethod
    def algorithm_classes():
        return list(ALGORITHMS)
