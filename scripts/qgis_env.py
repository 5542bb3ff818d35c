"""Run QGIS's own command-line tool (qgis_process.bin) with this plugin enabled.

Debian's /usr/bin/qgis_process wrapper fails (--noversioncheck), so the .bin is called
directly, headless, with a throwaway profile, and with the project venv's site-packages
on PYTHONPATH so the embedded Python finds onnxruntime, lightgbm and xgboost.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PLUGINS = ROOT / ".build" / "plugins"
QGIS_PROCESS = "/usr/bin/qgis_process.bin"


def ensure_plugin_link() -> Path:
    PLUGINS.mkdir(parents=True, exist_ok=True)
    link = PLUGINS / "sentinel_landslide"
    if not link.exists():
        link.symlink_to(ROOT)
    return PLUGINS


def qgis_env(profile: str | None = None) -> dict:
    env = dict(os.environ)
    site = sysconfig.get_paths()["purelib"]  # the running (venv) interpreter's packages
    env.update({
        "QT_QPA_PLATFORM": "offscreen",
        "QGIS_PLUGINPATH": str(ensure_plugin_link()),
        "QGIS_CUSTOM_CONFIG_PATH": profile or tempfile.mkdtemp(prefix="qgis_profile_"),
        "PYTHONPATH": os.pathsep.join([site, str(PLUGINS)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])),
        "XDG_RUNTIME_DIR": env.get("XDG_RUNTIME_DIR") or tempfile.mkdtemp(prefix="xdg_"),
    })
    return env


def run_algorithm(alg: str, params: dict, timeout: float = 1800) -> tuple[int, dict | None, str]:
    """Enable the plugin in a fresh profile and run ``alg``; returns (rc, json result, log)."""
    env = qgis_env()
    subprocess.run([QGIS_PROCESS, "plugins", "enable", "sentinel_landslide"], env=env,
                   capture_output=True, text=True, timeout=300, check=False)
    args = [QGIS_PROCESS, "--json", "run", alg, "--"] + [f"{k}={v}" for k, v in params.items()]
    p = subprocess.run(args, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    try:
        start = p.stdout.index("{")
        res = json.loads(p.stdout[start:])
    except ValueError:
        res = None
    return p.returncode, res, p.stdout + p.stderr


if __name__ == "__main__":  # python -m sentinel_landslide.scripts.qgis_env landslide:detect S2=... OUTPUT=...
    rc, res, out = run_algorithm(sys.argv[1], dict(a.split("=", 1) for a in sys.argv[2:]))
    print(json.dumps(res, indent=1) if res else out)
    sys.exit(rc)
