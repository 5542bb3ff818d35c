"""Model packages: format, loading, ensemble runtime (no qgis, no torch), training."""
