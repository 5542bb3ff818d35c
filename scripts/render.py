"""Render a detection grid over the S2 true colour to PNG with QGIS (headless)."""
from __future__ import annotations

from pathlib import Path

RES = Path(__file__).resolve().parents[1] / "resources"


def render_map(png: str, s2_path: str, grid_path: str, truth_path: str | None = None,
               width: int = 1400, title: str | None = None) -> str:
    """Works inside QGIS or standalone (then it starts and stops its own QgsApplication)."""
    from qgis.core import QgsApplication

    if QgsApplication.instance() is not None:
        return _render(png, s2_path, grid_path, truth_path, width, title)
    app = QgsApplication([], False)
    app.initQgis()
    try:
        _render(png, s2_path, grid_path, truth_path, width, title)  # its layers die before exitQgis
    finally:
        app.exitQgis()
    return png


def _render(png, s2_path, grid_path, truth_path, width, title):
    from qgis.core import (
        QgsContrastEnhancement,
        QgsMapRendererCustomPainterJob,
        QgsMapSettings,
        QgsMultiBandColorRenderer,
        QgsRasterLayer,
        QgsVectorLayer,
    )
    from qgis.PyQt.QtCore import QSize
    from qgis.PyQt.QtGui import QColor, QFont, QImage, QPainter

    s2 = QgsRasterLayer(s2_path, "Sentinel-2 true colour")
    rend = QgsMultiBandColorRenderer(s2.dataProvider(), 1, 2, 3)
    for setter, band in ((rend.setRedContrastEnhancement, 1), (rend.setGreenContrastEnhancement, 2),
                         (rend.setBlueContrastEnhancement, 3)):
        ce = QgsContrastEnhancement(s2.dataProvider().dataType(band))
        stats = s2.dataProvider().cumulativeCut(band, 0.02, 0.98, s2.extent(), 250000)
        ce.setMinimumValue(stats[0])
        ce.setMaximumValue(stats[1])
        ce.setContrastEnhancementAlgorithm(QgsContrastEnhancement.ContrastEnhancementAlgorithm.StretchToMinimumMaximum)
        setter(ce)
    s2.setRenderer(rend)
    grid = QgsVectorLayer(grid_path, "grid", "ogr")
    grid.loadNamedStyle(str(RES / "landslide_grid.qml"))
    layers = [grid]
    if truth_path:
        truth = QgsVectorLayer(truth_path, "truth", "ogr")
        from qgis.core import QgsFillSymbol, QgsSingleSymbolRenderer
        truth.setRenderer(QgsSingleSymbolRenderer(QgsFillSymbol.createSimple(
            {"color": "0,0,0,0", "outline_color": "#00e5ff", "outline_width": "0.5", "outline_style": "dash"})))
        layers = [truth, grid]
    layers.append(s2)
    ms = QgsMapSettings()
    ms.setLayers(layers)
    ms.setDestinationCrs(grid.crs())
    ext = grid.extent()
    ms.setExtent(ext)
    h = int(width * ext.height() / max(ext.width(), 1e-9))
    ms.setOutputSize(QSize(width, h))
    ms.setBackgroundColor(QColor("white"))
    img = QImage(QSize(width, h), QImage.Format.Format_ARGB32)
    img.fill(QColor("white"))
    p = QPainter(img)
    job = QgsMapRendererCustomPainterJob(ms, p)
    job.start()
    job.waitForFinished()
    if title:
        p.setPen(QColor("white"))
        f = QFont()
        f.setPointSize(14)
        p.setFont(f)
        p.fillRect(0, 0, width, 34, QColor(0, 0, 0, 150))
        p.drawText(10, 24, title)
    p.end()
    img.save(png)
    return png
