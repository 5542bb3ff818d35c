"""The plugin's own Python packages, without QGIS: where they live (``paths``), which are
installed (``status``), the installer (``install``), the diagnostics report and the CLI
(``python -m sentinel_landslide.deps status|install``).  The dialog in gui/ is a thin shell.

Importing this package is cheap (``paths`` only): the plugin's ``__init__`` calls
``activate()`` before anything imports onnxruntime, lightgbm or xgboost."""
from __future__ import annotations

from .paths import activate, dependency_dir  # noqa: F401 (the plugin's start-up API)
