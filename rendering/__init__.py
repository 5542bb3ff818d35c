"""QGIS-side helpers that are not widgets: version-safe enum spellings (``compat``),
image chips (``chips``) and headless map rendering (``render``).  Used by the Processing
algorithms and the review panel alike."""
from pathlib import Path

RESOURCES = Path(__file__).resolve().parents[1] / "resources"  # styles, icons, report templates
