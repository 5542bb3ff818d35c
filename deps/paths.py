"""Where the plugin's own Python packages live: one folder per Python minor version under the
QGIS profile, ``<profile>/python/dependencies/sentinel_landslide/py311``, put on ``sys.path``
when the plugin package is imported (QGIS, qgis_process and the CLI alike).  QGIS's own
site-packages are never written to.

No QGIS import: the profile comes from QgsApplication only when QGIS is already loaded,
otherwise from ``QGIS_CUSTOM_CONFIG_PATH`` or the platform's default profile folder."""
from __future__ import annotations

import configparser
import importlib
import os
import sys
from pathlib import Path

PLUGIN = "sentinel_landslide"
ENV_DIR = "SENTINEL_LANDSLIDE_DEPS_DIR"  # overrides the folder (servers with no QGIS profile)


def tag(version=None) -> str:
    """``py311`` for Python 3.11: wheels with compiled code are built per minor version."""
    v = version or sys.version_info
    return f"py{v[0]}{v[1]}"


def _qgis_profile() -> Path | None:
    """The active profile folder of a running QGIS (qgis_process included), if QGIS is loaded."""
    core = sys.modules.get("qgis.core")
    if core is None:
        return None
    try:
        d = core.QgsApplication.qgisSettingsDirPath()
    except Exception:  # noqa: BLE001 - QGIS imported but no application initialised
        return None
    return Path(d) if d else None


def profiles_root() -> Path:
    """The folder that holds the profiles: ``QGIS_CUSTOM_CONFIG_PATH``/profiles, else the
    platform's default (what QGIS 3 itself uses)."""
    custom = os.environ.get("QGIS_CUSTOM_CONFIG_PATH")
    if custom:
        return Path(custom) / "profiles"
    if sys.platform.startswith("win"):
        base = Path(os.environ.get("APPDATA") or Path.home() / "AppData" / "Roaming")
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Application Support"
    else:
        base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return base / "QGIS" / "QGIS3" / "profiles"


def default_profile(root: Path | None = None) -> Path:
    """The profile QGIS opens by default (profiles.ini's defaultProfile, else 'default')."""
    root = root or profiles_root()
    name = "default"
    ini = root / "profiles.ini"
    if ini.is_file():
        cp = configparser.ConfigParser()
        try:
            cp.read(ini, encoding="utf-8")
            name = cp.get("core", "defaultProfile", fallback=name) or name
        except configparser.Error:
            pass
    return root / name


def profile_dir() -> Path:
    return _qgis_profile() or default_profile()


def dependency_dir() -> Path:
    """The folder the plugin loads its packages from (it need not exist yet)."""
    override = os.environ.get(ENV_DIR)
    if override:
        return Path(override)
    return profile_dir() / "python" / "dependencies" / PLUGIN / tag()


def activate(folder: Path | None = None) -> Path:
    """Put the dependency folder first on ``sys.path`` (once) and forget any cached 'not
    there' for it, so packages installed into it import at once."""
    d = str(folder or dependency_dir())
    waiting = Path(d).parent / f".{Path(d).name}.pending"  # an install that waited for a restart
    if waiting.is_dir() and d not in sys.path:
        from .install import swap_in

        swap_in(waiting, Path(d))
    if d not in sys.path:
        sys.path.insert(0, d)
    sys.path_importer_cache.pop(d, None)  # a folder created after start-up is looked at again
    importlib.invalidate_caches()
    return Path(d)
