"""Render a detection grid over the S2 true colour to PNG with QGIS (headless)."""
from __future__ import annotations

from pathlib import Path

RES = Path(__file__).resolve().parents[1] / "resources"


def render_map(png: str, s2_path: str, grid_path: str, truth_path: str | None = None,
               width: int = 1400, title: str | None = None, style: str = "landslide_grid.qml") -> str:
    """Works inside QGIS or standalone (then it starts and stops its own QgsApplication).
    ``style``: the grid's style, a file of resources/ (e.g. landslide_grid_uncertainty.qml)."""
    from qgis.core import QgsApplication

    if QgsApplication.instance() is not None:
        return _render(png, s2_path, grid_path, truth_path, width, title, style)
    app = QgsApplication([], False)
    app.initQgis()
    try:
        _render(png, s2_path, grid_path, truth_path, width, title, style)  # its layers die before exitQgis
    finally:
        app.exitQgis()
    return png


def s2_true_colour(s2):
    """Give a Sentinel-2 layer (bands R, G, B first) a 2-98 % stretched true-colour renderer."""
    from qgis.core import QgsContrastEnhancement, QgsMultiBandColorRenderer

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
    return s2


def render_layers(layers, extent, crs, width: int):
    """``layers`` (top first) rendered onto a white QImage ``width`` px wide over ``extent``
    in ``crs`` (the height follows the extent's aspect)."""
    from qgis.core import QgsMapRendererCustomPainterJob, QgsMapSettings
    from qgis.PyQt.QtCore import QSize
    from qgis.PyQt.QtGui import QColor, QImage, QPainter

    ms = QgsMapSettings()
    ms.setLayers(layers)
    ms.setDestinationCrs(crs)
    ms.setExtent(extent)
    h = int(width * extent.height() / max(extent.width(), 1e-9))
    ms.setOutputSize(QSize(width, h))
    ms.setBackgroundColor(QColor("white"))
    img = QImage(QSize(width, h), QImage.Format.Format_ARGB32)
    img.fill(QColor("white"))
    p = QPainter(img)
    job = QgsMapRendererCustomPainterJob(ms, p)
    job.start()
    job.waitForFinished()
    p.end()
    return img


def _render(png, s2_path, grid_path, truth_path, width, title, style="landslide_grid.qml"):
    from qgis.core import QgsRasterLayer, QgsVectorLayer
    from qgis.PyQt.QtGui import QColor, QFont, QPainter

    s2 = s2_true_colour(QgsRasterLayer(s2_path, "Sentinel-2 true colour"))
    grid = QgsVectorLayer(grid_path, "grid", "ogr")
    grid.loadNamedStyle(str(RES / style))
    layers = [grid]
    if truth_path:
        truth = QgsVectorLayer(truth_path, "truth", "ogr")
        from qgis.core import QgsFillSymbol, QgsSingleSymbolRenderer
        truth.setRenderer(QgsSingleSymbolRenderer(QgsFillSymbol.createSimple(
            {"color": "0,0,0,0", "outline_color": "#00e5ff", "outline_width": "0.5", "outline_style": "dash"})))
        layers = [truth, grid]
    layers.append(s2)
    img = render_layers(layers, grid.extent(), grid.crs(), width)
    if title:
        p = QPainter(img)
        p.setPen(QColor("white"))
        f = QFont()
        f.setPointSize(14)
        p.setFont(f)
        p.fillRect(0, 0, width, 34, QColor(0, 0, 0, 150))
        p.drawText(10, 24, title)
        p.end()
    img.save(png)
    return png
