"""The 'landslide' Processing provider."""
from __future__ import annotations

from pathlib import Path

from qgis.core import QgsProcessingProvider
from qgis.PyQt.QtGui import QIcon

from .detect import DetectAlgorithm

ICON = Path(__file__).resolve().parents[1] / "resources" / "icon.svg"


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
        classes = [DetectAlgorithm]
        # optional algorithms register only when their module is present
        for mod, cls in (("exportpatches", "ExportPatchesAlgorithm"), ("train", "TrainAlgorithm"),
                         ("evaluate", "EvaluateAlgorithm"), ("report", "ReportAlgorithm")):
            try:
                module = __import__(f"{__package__}.{mod}", fromlist=[cls])
            except ModuleNotFoundError as exc:
                if exc.name and exc.name.endswith(f"algorithms.{mod}"):
                    continue
                raise
            classes.append(getattr(module, cls))
        return classes
