"""Enum and type spellings that differ between QGIS 3.22 (Qt5) and later QGIS / QGIS 4 (Qt6)."""
from __future__ import annotations

from qgis.core import Qgis, QgsFeatureRequest, QgsMapLayerProxyModel, QgsVectorDataProvider, QgsWkbTypes
from qgis.PyQt.QtCore import QVariant

if Qgis.versionInt() >= 33800:  # QgsField takes a QMetaType from 3.38 (the only choice with Qt6)
    from qgis.PyQt.QtCore import QMetaType

    STRING, DOUBLE, BOOL, INT = (QMetaType.Type.QString, QMetaType.Type.Double, QMetaType.Type.Bool,
                                 QMetaType.Type.Int)
else:
    STRING, DOUBLE, BOOL, INT = QVariant.String, QVariant.Double, QVariant.Bool, QVariant.Int

try:  # QGIS >= 3.30
    POLYGON_GEOMETRY = Qgis.GeometryType.Polygon
except AttributeError:
    POLYGON_GEOMETRY = QgsWkbTypes.PolygonGeometry
try:  # QGIS >= 3.34
    POLYGON_FILTER, RASTER_FILTER = Qgis.LayerFilter.PolygonLayer, Qgis.LayerFilter.RasterLayer
except AttributeError:
    POLYGON_FILTER = QgsMapLayerProxyModel.Filter.PolygonLayer
    RASTER_FILTER = QgsMapLayerProxyModel.Filter.RasterLayer
try:  # QGIS >= 3.36
    NO_GEOMETRY = Qgis.FeatureRequestFlag.NoGeometry
except AttributeError:
    NO_GEOMETRY = QgsFeatureRequest.NoGeometry
try:  # QGIS >= 3.40
    CAN_ADD_FIELDS = Qgis.VectorProviderCapability.AddAttributes
    CAN_CHANGE_VALUES = Qgis.VectorProviderCapability.ChangeAttributeValues
except AttributeError:
    CAN_ADD_FIELDS = QgsVectorDataProvider.AddAttributes
    CAN_CHANGE_VALUES = QgsVectorDataProvider.ChangeAttributeValues
try:  # QGIS >= 3.36
    NO_THREADING = Qgis.ProcessingAlgorithmFlag.NoThreading
except AttributeError:
    from qgis.core import QgsProcessingAlgorithm

    NO_THREADING = QgsProcessingAlgorithm.FlagNoThreading
INFO, WARNING, CRITICAL = Qgis.MessageLevel.Info, Qgis.MessageLevel.Warning, Qgis.MessageLevel.Critical
try:  # QGIS >= 3.36
    VECTOR_POLYGON = Qgis.ProcessingSourceType.VectorPolygon
    NUMBER_INTEGER = Qgis.ProcessingNumberParameterType.Integer
    NUMBER_DOUBLE = Qgis.ProcessingNumberParameterType.Double
    FLAG_ADVANCED = Qgis.ProcessingParameterFlag.Advanced
except AttributeError:
    from qgis.core import QgsProcessing, QgsProcessingParameterDefinition, QgsProcessingParameterNumber

    VECTOR_POLYGON = QgsProcessing.SourceType.TypeVectorPolygon
    NUMBER_INTEGER = QgsProcessingParameterNumber.Type.Integer
    NUMBER_DOUBLE = QgsProcessingParameterNumber.Type.Double
    FLAG_ADVANCED = QgsProcessingParameterDefinition.Flag.FlagAdvanced
try:  # QGIS >= 3.36
    DATETIME_TYPE = Qgis.ProcessingDateTimeParameterDataType.DateTime
except AttributeError:
    from qgis.core import QgsProcessingParameterDateTime

    DATETIME_TYPE = QgsProcessingParameterDateTime.Type.DateTime
try:  # QGIS >= 3.36
    FILE_FOLDER = Qgis.ProcessingFileParameterBehavior.Folder
except AttributeError:
    from qgis.core import QgsProcessingParameterFile

    FILE_FOLDER = QgsProcessingParameterFile.Behavior.Folder
try:  # QGIS >= 3.30
    WKB_POLYGON = Qgis.WkbType.Polygon
except AttributeError:
    WKB_POLYGON = QgsWkbTypes.Type.Polygon
try:  # QGIS >= 3.26
    LABEL_OVER_POINT = Qgis.LabelPlacement.OverPoint
except AttributeError:
    from qgis.core import QgsPalLayerSettings

    LABEL_OVER_POINT = QgsPalLayerSettings.Placement.OverPoint
try:  # QGIS >= 3.30
    RASTER_PICTURE = Qgis.PictureFormat.Raster
except AttributeError:
    from qgis.core import QgsLayoutItemPicture

    RASTER_PICTURE = QgsLayoutItemPicture.Format.FormatRaster


def is_null(value) -> bool:
    """None, an empty string or a QGIS NULL (a QVariant under Qt5, None under Qt6)."""
    return value is None or (hasattr(value, "isNull") and value.isNull()) or value == ""
