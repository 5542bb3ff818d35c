"""'Install / repair dependencies': a thin dialog over sentinel_landslide.deps (the engine).

It lists each package by feature with its state, installs in a QgsTask (progress, log,
cancel; QGIS stays responsive) and says whether the algorithms work at once or, where a
package was already loaded by this session, that QGIS must restart and why."""
from __future__ import annotations

from qgis.core import QgsApplication, QgsSettings, QgsTask
from qgis.PyQt.QtCore import Qt, pyqtSignal
from qgis.PyQt.QtGui import QBrush, QColor
from qgis.PyQt.QtWidgets import (
    QAbstractItemView,
    QApplication,
    QCheckBox,
    QDialog,
    QFormLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
)

from ..core.deps import FEATURES, gpu_available_here
from ..deps.install import InstallError, InstallOptions, install
from ..deps.paths import dependency_dir
from ..deps.status import INSTALLED, MISSING, UNAVAILABLE, WRONG, status
from ..rendering.compat import INFO, WARNING

TITLE = "Sentinel Landslide"
INSTALL_ACTION_TEXT = "Install / repair dependencies"
DIAGNOSTICS_ACTION_TEXT = "Copy diagnostics"
STATE_COLOURS = {INSTALLED: "#a5d6a7", MISSING: "#ef9a9a", WRONG: "#ffcc80", UNAVAILABLE: "#e0e0e0"}
COLUMNS = ("Feature", "Package", "Needs", "Installed", "State", "Loaded from")
OPTIONAL = ("fetch", "cluster", "gpu")


def qgis_proxy() -> str | None:
    """QGIS's proxy (Settings > Options > Network) as a URL for pip, or None (pip's own)."""
    s = QgsSettings()
    if not s.value("proxy/proxyEnabled", False, type=bool):
        return None
    kind = str(s.value("proxy/proxyType", "HttpProxy"))
    host, port = str(s.value("proxy/proxyHost", "") or ""), str(s.value("proxy/proxyPort", "") or "")
    if not host or kind in ("DefaultProxy", "NoProxy"):
        return None  # the system's proxy: pip reads it from the environment
    user, password = str(s.value("proxy/proxyUser", "") or ""), str(s.value("proxy/proxyPassword", "") or "")
    auth = f"{user}:{password}@" if user else ""
    scheme = "socks5" if kind == "Socks5Proxy" else "http"
    return f"{scheme}://{auth}{host}" + (f":{port}" if port else "")


class InstallTask(QgsTask):
    """Runs the installer off the GUI thread; ``line`` carries pip's log to the dialog."""
    line = pyqtSignal(str)
    done = pyqtSignal(bool)

    def __init__(self, opts: InstallOptions):
        super().__init__("Sentinel Landslide: installing Python packages", QgsTask.Flag.CanCancel)
        self.opts, self.result, self.error = opts, None, None

    def run(self):
        try:
            self.result = install(self.opts, log=self.line.emit, progress=lambda f, what: self.setProgress(100 * f),
                                  cancelled=self.isCanceled)
            return True
        except InstallError as exc:
            self.error = exc
        except Exception as exc:  # noqa: BLE001 - shown in the dialog, never lost in a thread
            self.error = InstallError("other", f"{type(exc).__name__}: {exc}")
        return False

    def finished(self, ok):  # noqa: D401 - QgsTask API, runs on the GUI thread
        self.done.emit(bool(ok))


class DepsDialog(QDialog):
    """``reqs``/``path``/``target``/``wheels`` let the tests point it at a tiny package."""

    def __init__(self, parent=None, reqs=None, path=None, target=None, wheels=None, python=None):
        super().__init__(parent)
        self.setWindowTitle(f"{TITLE}: Python packages")
        self.reqs, self.path, self.python = reqs, path, python
        self.target = target or dependency_dir()
        self.task = None
        lay = QVBoxLayout(self)
        lay.addWidget(QLabel(f"Packages are installed into the plugin's own folder:\n{self.target}\n"
                             "QGIS's own Python and its numpy are never changed."))
        self.table = QTableWidget(0, len(COLUMNS), self)
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.NoSelection)
        self.table.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.table.verticalHeader().setVisible(False)
        self.table.setWordWrap(False)
        self.table.setTextElideMode(Qt.TextElideMode.ElideLeft)  # a folder's end says the most
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.table.horizontalHeader().setStretchLastSection(True)
        lay.addWidget(self.table)
        row = QHBoxLayout()
        row.addWidget(QLabel("Also install:"))
        self.boxes = {}
        for f in OPTIONAL:
            box = QCheckBox(FEATURES[f].replace(" (optional)", ""), self)
            box.setEnabled(f != "gpu" or gpu_available_here())
            self.boxes[f] = box
            row.addWidget(box)
        row.addStretch(1)
        lay.addLayout(row)
        form = QFormLayout()
        self.index = QLineEdit(self)
        self.index.setPlaceholderText("default: pip's (PyPI, or your pip.conf)")
        self.wheels = QLineEdit(str(wheels or ""), self)
        self.wheels.setPlaceholderText("offline: a folder of .whl files (python -m pip download ...)")
        form.addRow("Package index URL", self.index)
        form.addRow("Folder of wheels", self.wheels)
        lay.addLayout(form)
        self.progress = QProgressBar(self)
        self.progress.setRange(0, 100)
        self.progress.setValue(0)
        lay.addWidget(self.progress)
        self.message = QLabel("", self)
        self.message.setWordWrap(True)
        self.message.setMinimumHeight(4 * self.message.fontMetrics().lineSpacing())
        lay.addWidget(self.message)
        self.log = QPlainTextEdit(self)
        self.log.setReadOnly(True)
        self.log.setMaximumBlockCount(5000)
        lay.addWidget(self.log)
        buttons = QHBoxLayout()
        self.install_button = QPushButton("Install", self)
        self.install_button.setMinimumWidth(self.install_button.fontMetrics().horizontalAdvance("Repair / reinstall") + 32)
        self.cancel_button = QPushButton("Cancel install", self)
        self.cancel_button.setEnabled(False)
        self.copy_button = QPushButton(DIAGNOSTICS_ACTION_TEXT, self)
        close = QPushButton("Close", self)
        for b in (self.install_button, self.cancel_button, self.copy_button):
            buttons.addWidget(b)
        buttons.addStretch(1)
        buttons.addWidget(close)
        lay.addLayout(buttons)
        self.install_button.clicked.connect(self.start_install)
        self.cancel_button.clicked.connect(self.cancel_install)
        self.copy_button.clicked.connect(lambda: copy_diagnostics(None))
        close.clicked.connect(self.close)
        self.resize(900, 620)
        self.refresh()

    # the table -----------------------------------------------------------------------
    def lines(self):
        return status(path=self.path, reqs=self.reqs)

    def refresh(self):
        lines = self.lines()
        self.table.setRowCount(len(lines))
        for i, ln in enumerate(lines):
            texts = (FEATURES[ln.req.feature], ln.req.pip, ln.req.spec, ln.version or "", ln.state, ln.folder or "")
            for j, text in enumerate(texts):
                item = QTableWidgetItem(text)
                item.setToolTip(text)
                if j == 4:
                    item.setBackground(QBrush(QColor(STATE_COLOURS[ln.state])))
                self.table.setItem(i, j, item)
        self.table.setMinimumHeight(self.table.horizontalHeader().height() + 4 * self.table.frameWidth()
                                    + sum(self.table.rowHeight(i) for i in range(len(lines))))
        self.install_button.setText("Repair / reinstall" if all(
            ln.state == INSTALLED for ln in lines if ln.req.feature == "required") else "Install")
        return lines

    def states(self) -> dict:
        """package -> state, as the table shows it (read back from the table's items)."""
        return {self.table.item(i, 1).text(): self.table.item(i, 4).text() for i in range(self.table.rowCount())}

    # the install -----------------------------------------------------------------------
    def options(self) -> InstallOptions:
        feats = tuple(f for f, b in self.boxes.items() if b.isChecked() and b.isEnabled())
        lines = None
        if self.reqs is not None:  # a custom list (tests): what it names for those features
            lines = tuple(r.line for r in self.reqs if r.feature == "required" or r.feature in feats)
        return InstallOptions(features=feats, target=self.target, wheels=self.wheels.text().strip() or None,
                              index_url=self.index.text().strip() or None, proxy=qgis_proxy(), python=self.python,
                              lines=lines)

    def start_install(self):
        if self.task is not None:
            return
        self.log.clear()
        self.message.setText("Installing... QGIS stays usable meanwhile.")
        self.progress.setValue(0)
        self.task = InstallTask(self.options())
        self.task.line.connect(self.log.appendPlainText)
        self.task.progressChanged.connect(lambda v: self.progress.setValue(int(v)))
        self.task.done.connect(self.finish)
        self.install_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        QgsApplication.taskManager().addTask(self.task)

    def cancel_install(self):
        if self.task is not None:
            self.task.cancel()

    def finish(self, ok: bool):
        task, self.task = self.task, None
        self.install_button.setEnabled(True)
        self.cancel_button.setEnabled(False)
        if ok and task.result is not None:
            self.progress.setValue(100)
            self.message.setText(task.result.summary())
            self.log.appendPlainText(task.result.summary())
        else:
            err = task.error or InstallError("cancelled", "Cancelled: nothing was changed.")
            self.message.setText(f"Install failed ({err.kind}): {err}")
        self.refresh()


def show_dialog(plugin, **kw) -> DepsDialog:
    dlg = DepsDialog(plugin.iface.mainWindow() if plugin is not None else None, **kw)
    dlg.show()
    if plugin is not None:
        plugin.deps_dialog = dlg
    return dlg


def copy_diagnostics(plugin) -> str:
    """The diagnostics report onto the clipboard (and returned)."""
    from ..deps.diagnostics import report

    text = report(qgis=True)
    QApplication.clipboard().setText(text)
    if plugin is not None:
        try:
            plugin.iface.messageBar().pushMessage(TITLE, "Diagnostics copied to the clipboard (no secrets in it).",
                                                  INFO, 5)
        except Exception:  # noqa: BLE001 - no message bar
            pass
    return text


def announce_missing(plugin, text: str):
    """The message bar line for missing packages, with 'Install now' and 'Copy diagnostics'."""
    bar = plugin.iface.messageBar()
    if not hasattr(bar, "createMessage"):  # a bar that takes text only (headless interfaces)
        bar.pushMessage(TITLE, text, WARNING, 0)
        return None
    widget = bar.createMessage(TITLE, text)
    for label, slot in (("Install now", lambda: show_dialog(plugin)),
                        (DIAGNOSTICS_ACTION_TEXT, lambda: copy_diagnostics(plugin))):
        b = QPushButton(label, widget)
        b.clicked.connect(slot)
        widget.layout().addWidget(b)
    bar.pushWidget(widget, WARNING, 0)
    return widget


def install_actions(plugin, action_cls, menu: str) -> list:
    """The two menu entries; returns them for plugin.unload."""
    out = []
    for text, slot in ((INSTALL_ACTION_TEXT, lambda: show_dialog(plugin)),
                       (DIAGNOSTICS_ACTION_TEXT, lambda: copy_diagnostics(plugin))):
        a = action_cls(text, plugin.iface.mainWindow())
        a.triggered.connect(slot)
        plugin.iface.addPluginToMenu(menu, a)
        out.append(a)
    return out

