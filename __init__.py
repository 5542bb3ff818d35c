"""Sentinel Landslide: a QGIS Processing plugin that finds landslides in Sentinel-1/2."""


def classFactory(iface):  # noqa: N802 (QGIS API name)
    from .plugin import SentinelLandslidePlugin

    return SentinelLandslidePlugin(iface)
