"""'Install / repair dependencies' under the offscreen platform: the states listed, an install
end to end through the QgsTask (a tiny package from a local folder of wheels), the screenshot
read back by its contents, and the message bar's 'Install now'."""
from __future__ import annotations

import importlib
import os
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from qgis.core import QgsApplication
from qgis.gui import QgsMessageBar
from qgis.PyQt.QtCore import QPoint
from qgis.PyQt.QtGui import QColor
from qgis.PyQt.QtWidgets import QAction, QPushButton

from sentinel_landslide.core.deps import Requirement
from sentinel_landslide.deps import install as inst
from sentinel_landslide.deps import paths
from sentinel_landslide.gui import deps_dialog as dd

from ..deps.wheels import make_wheel

SHOTS = Path(os.environ.get("SENTINEL_LANDSLIDE_SHOTS", "/tmp"))


def wait_for(cond, seconds=180):
    end = time.monotonic() + seconds
    while not cond():
        assert time.monotonic() < end, "timed out"
        QgsApplication.processEvents()
        time.sleep(0.05)


def state_colours(dlg) -> dict:
    """package -> the colour painted in the middle-left of its state cell, on the screenshot."""
    shot = dlg.grab().toImage()
    out = {}
    for i in range(dlg.table.rowCount()):
        item = dlg.table.item(i, 4)
        r = dlg.table.visualItemRect(item)
        at = dlg.table.viewport().mapTo(dlg, QPoint(r.left() + 2, r.center().y()))
        out[dlg.table.item(i, 1).text()] = QColor(shot.pixel(at)).name()
    return out, shot


def close(c1: str, c2: str, tol=12) -> bool:
    a, b = QColor(c1), QColor(c2)
    return max(abs(a.red() - b.red()), abs(a.green() - b.green()), abs(a.blue() - b.blue())) <= tol


@pytest.fixture
def qgis_python():
    return "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else None


def test_dialog_lists_states_and_installs_end_to_end(qgis_app, tmp_path, qgis_python, monkeypatch):
    wheels, target, older = tmp_path / "wheels", tmp_path / "deps" / "py3x", tmp_path / "older"
    monkeypatch.setattr(sys, "path", list(sys.path))
    paths.activate(target)  # as the plugin does at start-up, before the folder exists
    make_wheel(wheels, "sltiny", "1.0")
    make_wheel(tmp_path / "w2", "slold", "1.0")
    inst.install(inst.InstallOptions(target=older, wheels=tmp_path / "w2", lines=("slold",), python=qgis_python),
                 log=lambda s: None)
    reqs = [Requirement("sltiny", "sltiny", ">=1.0", "required"),
            Requirement("slold", "slold", ">=2", "fetch"),
            Requirement("slabsent", "slabsent", ">=1", "cluster")]
    dlg = dd.DepsDialog(reqs=reqs, path=[str(target), str(older)], target=target, wheels=wheels, python=qgis_python)
    dlg.show()
    QgsApplication.processEvents()
    assert dlg.states() == {"sltiny": "missing", "slold": "wrong version", "slabsent": "missing"}
    colours, shot = state_colours(dlg)
    shot.save(str(SHOTS / "deps_dialog_before.png"))
    assert close(colours["sltiny"], dd.STATE_COLOURS["missing"]) and close(colours["slold"], dd.STATE_COLOURS["wrong version"])
    assert dlg.table.item(0, 0).text() == "Detection (required)" and dlg.table.item(1, 0).text().startswith("Sentinel-1/2 fetch")

    dlg.install_button.click()
    assert dlg.cancel_button.isEnabled() and not dlg.install_button.isEnabled()
    wait_for(lambda: dlg.task is None)
    assert "Ready: the algorithms use them now" in dlg.message.text(), dlg.message.text() + dlg.log.toPlainText()
    assert dlg.progress.value() == 100 and "Imports check out: sltiny 1.0" in dlg.log.toPlainText()
    assert dlg.states() == {"sltiny": "installed", "slold": "wrong version", "slabsent": "missing"}
    assert dlg.table.item(0, 5).text() == str(target.resolve())
    sltiny = importlib.import_module("sltiny")  # usable at once in this session: no restart
    monkeypatch.delitem(sys.modules, "sltiny")
    assert sltiny.__file__.startswith(str(target))
    colours, shot = state_colours(dlg)
    shot.save(str(SHOTS / "deps_dialog_after.png"))
    assert close(colours["sltiny"], dd.STATE_COLOURS["installed"]) and close(colours["slabsent"], dd.STATE_COLOURS["missing"])
    dlg.close()


def test_a_failed_install_is_shown_by_its_cause_and_changes_nothing(qgis_app, tmp_path, qgis_python):
    wheels, target = tmp_path / "wheels", tmp_path / "deps" / "py3x"
    make_wheel(wheels, "slneedsnumpy2", "1.0", requires=["numpy>=2"])
    dlg = dd.DepsDialog(reqs=[Requirement("slneedsnumpy2", "slneedsnumpy2", ">=1", "required")], path=[str(target)],
                        target=target, wheels=wheels, python=qgis_python)
    dlg.install_button.click()
    wait_for(lambda: dlg.task is None)
    assert dlg.message.text().startswith("Install failed (numpy): Refused")
    assert dlg.states() == {"slneedsnumpy2": "missing"} and not target.exists()
    dlg.close()


def test_install_now_in_the_message_bar_opens_the_dialog(qgis_app):
    bar = QgsMessageBar()
    plugin = SimpleNamespace(iface=SimpleNamespace(messageBar=lambda: bar, mainWindow=lambda: None))
    widget = dd.announce_missing(plugin, "Missing Python package(s) for the landslide models: onnxruntime.")
    buttons = {b.text(): b for b in widget.findChildren(QPushButton)}
    assert {"Install now", dd.DIAGNOSTICS_ACTION_TEXT} <= set(buttons)
    buttons["Install now"].click()
    dlg = plugin.deps_dialog
    assert isinstance(dlg, dd.DepsDialog) and dlg.isVisible()
    states = dlg.states()
    assert {"onnxruntime", "lightgbm", "xgboost-cpu", "pystac-client", "dask", "onnxruntime-gpu"} <= set(states)
    assert {states[p] for p in ("onnxruntime", "lightgbm", "xgboost-cpu")} == {"installed"}  # the test venv has them
    colours, shot = state_colours(dlg)
    shot.save(str(SHOTS / "deps_dialog_real.png"))
    assert all(close(colours[p], dd.STATE_COLOURS[states[p]]) for p in states)
    dlg.close()
    buttons[dd.DIAGNOSTICS_ACTION_TEXT].click()
    assert QgsApplication.clipboard().text().startswith("Sentinel Landslide diagnostics")


def test_the_menu_has_install_and_diagnostics(qgis_app, qgis_iface):
    plugin = SimpleNamespace(iface=qgis_iface)
    actions = dd.install_actions(plugin, QAction, "Sentinel Landslide")
    assert [a.text() for a in actions] == [dd.INSTALL_ACTION_TEXT, dd.DIAGNOSTICS_ACTION_TEXT]


def test_qgis_proxy_settings_reach_pip(qgis_app, tmp_path):
    from qgis.core import QgsSettings

    s = QgsSettings()
    keys = ("proxy/proxyEnabled", "proxy/proxyType", "proxy/proxyHost", "proxy/proxyPort", "proxy/proxyUser",
            "proxy/proxyPassword")
    saved = {k: s.value(k) for k in keys}
    try:
        s.setValue("proxy/proxyEnabled", False)
        assert dd.qgis_proxy() is None
        for k, v in zip(keys, (True, "HttpProxy", "proxy.agency.example", "3128", "ana", "pa55")):
            s.setValue(k, v)
        assert dd.qgis_proxy() == "http://ana:pa55@proxy.agency.example:3128"
        dlg = dd.DepsDialog(reqs=[Requirement("sltiny", "sltiny", ">=1", "required")], path=[str(tmp_path)],
                            target=tmp_path / "t")
        assert dlg.options().proxy == "http://ana:pa55@proxy.agency.example:3128"
        assert inst.source_args(dlg.options())[-2:] == ["--proxy", "http://ana:pa55@proxy.agency.example:3128"]
        assert "pa55" not in inst.redact(" ".join(inst.source_args(dlg.options())))
        dlg.close()
        s.setValue("proxy/proxyType", "DefaultProxy")  # the system's proxy: pip reads the environment
        assert dd.qgis_proxy() is None
    finally:
        for k, v in saved.items():
            if v is None:
                s.remove(k)
            else:
                s.setValue(k, v)


def test_cancel_stops_the_task_and_says_nothing_changed(qgis_app, tmp_path, qgis_python):
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nobody listens there: pip retries until cancelled
    target = tmp_path / "deps" / "py3x"
    dlg = dd.DepsDialog(reqs=[Requirement("slnowhere", "slnowhere", ">=1", "required")], path=[str(target)],
                        target=target, python=qgis_python)
    dlg.index.setText(f"http://127.0.0.1:{port}/simple")
    dlg.install_button.click()
    wait_for(lambda: "--index-url" in dlg.log.toPlainText())  # pip is running
    dlg.cancel_button.click()
    wait_for(lambda: dlg.task is None, 60)
    assert dlg.message.text() == "Install failed (cancelled): Cancelled: nothing was changed."
    assert not target.exists() and dlg.install_button.isEnabled()
    dlg.close()
