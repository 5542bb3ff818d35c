"""QGIS-free engine: channel spec, alignment, tiling, features, detection pipeline.

Nothing in this package imports qgis, so it runs in tests, on the command line and
on a cluster.
"""
