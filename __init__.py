"""Sentinel Landslide: a QGIS Processing plugin that finds landslides in Sentinel-1/2."""
if __package__:  # (pytest imports this file on its own while collecting: nothing to set up then)
    from .deps.paths import activate as _activate

    # the plugin's own packages (onnxruntime, lightgbm, xgboost...) go first on sys.path before
    # anything imports them: in QGIS, in qgis_process and in the CLI (sentinel_landslide.deps)
    _activate()


def classFactory(iface):  # noqa: N802 (QGIS API name)
    from .plugin import SentinelLandslidePlugin

    return SentinelLandslidePlugin(iface)
