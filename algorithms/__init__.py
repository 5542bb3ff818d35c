"""QGIS Processing shell: the provider and one module per algorithm (thin wrappers)."""
