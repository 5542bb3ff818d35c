"""Regenerate the bundled .qml styles with QGIS itself (so they are valid for 3.22+).

    .venv/bin/python -m sentinel_landslide.scripts.make_styles
"""
from __future__ import annotations

from pathlib import Path

from qgis.core import (
    QgsApplication,
    QgsClassificationRange,
    QgsColorRampShader,
    QgsFillSymbol,
    QgsGraduatedSymbolRenderer,
    QgsProperty,
    QgsRasterLayer,
    QgsRasterShader,
    QgsRendererRange,
    QgsSingleBandPseudoColorRenderer,
    QgsSymbolLayer,
    QgsVectorLayer,
)
from qgis.PyQt.QtGui import QColor

RES = Path(__file__).resolve().parents[1] / "resources"
CLASSES = [(0.0, 0.2, "#1a9850", "0.0 - 0.2"), (0.2, 0.4, "#91cf60", "0.2 - 0.4"),
           (0.4, 0.49, "#fee08b", "0.4 - 0.49"), (0.49, 0.7, "#fc8d59", "0.49 - 0.7"),
           (0.7, 1.0001, "#d73027", "0.7 - 1.0")]


def grid_style(path: Path) -> None:
    layer = QgsVectorLayer("Polygon?crs=EPSG:32646&field=prob:double&field=flagged:boolean&field=status:string",
                           "grid", "memory")
    ranges = []
    for lo, hi, color, label in CLASSES:
        sym = QgsFillSymbol.createSimple({"color": color, "outline_color": "#00000000", "outline_width": "0.1"})
        sym.setOpacity(0.55)
        sl = sym.symbolLayer(0)
        # flagged tiles: a thick dark-red outline drawn on top of the fill
        sl.setDataDefinedProperty(QgsSymbolLayer.Property.PropertyStrokeColor,
                                  QgsProperty.fromExpression("if(\"flagged\", '#b2000c', '#40ffffff')"))
        sl.setDataDefinedProperty(QgsSymbolLayer.Property.PropertyStrokeWidth,
                                  QgsProperty.fromExpression("if(\"flagged\", 0.8, 0.1)"))
        ranges.append(QgsRendererRange(QgsClassificationRange(label, lo, hi), sym))
    r = QgsGraduatedSymbolRenderer("prob", ranges)
    layer.setRenderer(r)
    layer.setLabelsEnabled(False)
    msg, ok = layer.saveNamedStyle(str(path))
    assert ok, msg


UNCERTAINTY_CLASSES = [(0.0, 0.4, "#f7fcf5", "0.0 - 0.4 (confident)"), (0.4, 0.6, "#fdd0a2", "0.4 - 0.6"),
                       (0.6, 0.75, "#fd8d3c", "0.6 - 0.75"), (0.75, 1.0001, "#a63603", "0.75 - 1.0 (most uncertain)")]


def uncertainty_style(path: Path) -> None:
    """Second grid style: tiles graduated by 'uncertainty' (engine/uncertainty.py), flagged outlined."""
    layer = QgsVectorLayer("Polygon?crs=EPSG:32646&field=uncertainty:double&field=flagged:boolean", "grid", "memory")
    ranges = []
    for lo, hi, color, label in UNCERTAINTY_CLASSES:
        sym = QgsFillSymbol.createSimple({"color": color, "outline_color": "#00000000", "outline_width": "0.1"})
        sym.setOpacity(0.6)
        sl = sym.symbolLayer(0)
        sl.setDataDefinedProperty(QgsSymbolLayer.Property.PropertyStrokeColor,
                                  QgsProperty.fromExpression("if(\"flagged\", '#b2000c', '#40ffffff')"))
        sl.setDataDefinedProperty(QgsSymbolLayer.Property.PropertyStrokeWidth,
                                  QgsProperty.fromExpression("if(\"flagged\", 0.8, 0.1)"))
        ranges.append(QgsRendererRange(QgsClassificationRange(label, lo, hi), sym))
    layer.setRenderer(QgsGraduatedSymbolRenderer("uncertainty", ranges))
    msg, ok = layer.saveNamedStyle(str(path))
    assert ok, msg


def raster_style(path: Path) -> None:
    from osgeo import gdal
    tmp = "/vsimem/p.tif"
    ds = gdal.GetDriverByName("GTiff").Create(tmp, 2, 2, 1, gdal.GDT_Float32)
    ds.SetGeoTransform((0, 1, 0, 0, 0, -1))
    ds = None
    layer = QgsRasterLayer(tmp, "p", "gdal")
    shader_fn = QgsColorRampShader(0.0, 1.0)
    shader_fn.setColorRampType(QgsColorRampShader.Type.Interpolated)
    shader_fn.setColorRampItemList([QgsColorRampShader.ColorRampItem(lo, QColor(c), lab)
                                    for lo, _, c, lab in CLASSES]
                                   + [QgsColorRampShader.ColorRampItem(1.0, QColor("#a50026"), "1.0")])
    shader = QgsRasterShader()
    shader.setRasterShaderFunction(shader_fn)
    layer.setRenderer(QgsSingleBandPseudoColorRenderer(layer.dataProvider(), 1, shader))
    layer.renderer().setOpacity(0.7)
    msg, ok = layer.saveNamedStyle(str(path))
    assert ok, msg


if __name__ == "__main__":
    app = QgsApplication([], False)
    app.initQgis()
    grid_style(RES / "landslide_grid.qml")
    raster_style(RES / "probability_raster.qml")
    uncertainty_style(RES / "landslide_grid_uncertainty.qml")
    print("wrote", RES / "landslide_grid.qml", RES / "probability_raster.qml", RES / "landslide_grid_uncertainty.qml")
    app.exitQgis()
