"""Plugin GUI: the 'Review flagged tiles' dock and its toolbar/menu action.

Qt and qgis.gui are imported inside the functions, so importing the package stays cheap.
"""
from __future__ import annotations

from ..rendering import RESOURCES

MENU = "Sentinel Landslide"
REVIEW_ACTION_TEXT = "Review flagged tiles"
ICON = RESOURCES / "review.svg"


def install_gui(plugin) -> list:
    """Add the review action to the Plugins toolbar and the 'Sentinel Landslide' menu;
    returns the actions (plugin.unload removes them)."""
    from qgis.PyQt.QtGui import QIcon

    try:
        from qgis.PyQt.QtWidgets import QAction
    except ImportError:  # Qt6 without QGIS's re-export
        from qgis.PyQt.QtGui import QAction

    iface = plugin.iface
    action = QAction(QIcon(str(ICON)), REVIEW_ACTION_TEXT, iface.mainWindow())
    action.setObjectName("SentinelLandslideReviewAction")
    action.setToolTip("Sentinel Landslide: review flagged tiles (confirm / reject / unsure)")
    action.setCheckable(True)
    action.toggled.connect(lambda on: toggle_review_dock(plugin, on))
    iface.addToolBarIcon(action)
    iface.addPluginToMenu(MENU, action)
    plugin.review_action = action
    plugin.review_dock = None
    from .deps_dialog import install_actions

    return [action] + install_actions(plugin, QAction, MENU)  # Install / repair, Copy diagnostics


def get_review_dock(plugin, create: bool = True):
    """The plugin's review dock (created on first use)."""
    dock = getattr(plugin, "review_dock", None)
    if dock is None and create:
        from qgis.PyQt.QtCore import Qt

        from .review_dock import ReviewDock

        dock = ReviewDock(plugin.iface, plugin.iface.mainWindow())
        plugin.iface.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, dock)
        action = getattr(plugin, "review_action", None)
        if action is not None:
            dock.visibilityChanged.connect(action.setChecked)
        plugin.review_dock = dock
    return dock


def toggle_review_dock(plugin, show: bool) -> None:
    dock = get_review_dock(plugin, create=show)
    if dock is None:
        return
    dock.setVisible(show)
    if show:
        dock.raise_()
        dock.refresh_layers()


def uninstall_gui(plugin) -> None:
    dock = getattr(plugin, "review_dock", None)
    if dock is not None:
        dock.cleanup()
        try:
            plugin.iface.removeDockWidget(dock)
        except (AttributeError, RuntimeError):
            pass
        dock.hide()
        dock.setParent(None)  # out of the main window now, whenever the deferred delete runs
        dock.deleteLater()
    plugin.review_dock = None
    plugin.review_action = None
