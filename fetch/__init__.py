"""Finding and fetching Sentinel-1/2 for an event from a STAC API (QGIS-free).

catalog.py talks to the STAC API (pystac-client, imported only here), select.py holds the
selection rules, read.py reads the area's windows of the COGs through GDAL's /vsicurl/,
run.py puts them together (run_fetch) with the cache and the all-or-nothing output folder."""
