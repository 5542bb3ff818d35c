"""The QGIS plugin: registers the Processing provider; GUI entry points live here."""
from __future__ import annotations

from qgis.core import QgsApplication


class SentinelLandslidePlugin:
    def __init__(self, iface):
        self.iface = iface
        self.provider = None
        self.actions = []

    def initProcessing(self):  # noqa: N802 (QGIS API)
        from .algorithms.provider import LandslideProvider

        registry = QgsApplication.processingRegistry()
        if registry.providerById("landslide") is not None:
            return  # another copy (e.g. a dev checkout) already provides it: leave it alone
        self.provider = LandslideProvider()
        registry.addProvider(self.provider)

    def initGui(self):  # noqa: N802 (QGIS API)
        self.initProcessing()
        self.warn_missing_packages()
        try:
            from .gui import install_gui
        except ImportError:
            return
        self.actions = install_gui(self)

    def warn_missing_packages(self) -> list[str]:
        """Say at start-up, not at the end of a filled-in dialog, which inference packages
        are missing, with "Install now" (gui/deps_dialog.py) and the terminal command."""
        from qgis.core import QgsMessageLog

        from .models import deps
        from .rendering.compat import WARNING

        absent = deps.missing()
        if absent:
            text = deps.message(absent)
            QgsMessageLog.logMessage(text, "Sentinel Landslide", WARNING)
            try:
                from .gui.deps_dialog import announce_missing

                announce_missing(self, text)
            except Exception:  # noqa: BLE001 - no message bar (e.g. a headless interface)
                pass
        return absent

    def unload(self):
        if self.provider is not None:
            QgsApplication.processingRegistry().removeProvider(self.provider)
            self.provider = None
        for action in self.actions:
            try:
                self.iface.removeToolBarIcon(action)
                self.iface.removePluginMenu("Sentinel Landslide", action)
            except Exception:  # noqa: BLE001 - best effort during QGIS shutdown
                pass
        self.actions = []
        try:
            from .gui import uninstall_gui
        except ImportError:
            return
        uninstall_gui(self)
