"""A real install from the package index, then a fresh qgis_process.bin that does NOT see the
development .venv runs landslide:detect with what was installed; and the offline path from a
folder of wheels downloaded first.  Skipped with the reason where the index is unreachable.
About 60 MB from the index (pip's cache makes the second run quicker); each step bounded."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from sentinel_landslide.core.deps import requirements

ROOT = Path(__file__).resolve().parents[2]
PLUGINS = ROOT / ".build" / "plugins"
QGIS_PROCESS = "/usr/bin/qgis_process.bin"
pytestmark = [pytest.mark.network, pytest.mark.slow]


@pytest.fixture(scope="module")
def pip_cache(tmp_path_factory):
    """pip's cache for these tests only (shared by the two, so the second downloads little),
    removed afterwards with everything they installed: nothing is left on the machine."""
    d = tmp_path_factory.mktemp("pipcache")
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def big_tmp(tmp_path):
    """tmp_path, emptied after the test (the installs weigh ~150 MB; pytest keeps old tmp dirs)."""
    yield tmp_path
    shutil.rmtree(tmp_path, ignore_errors=True)


def clean_env(profile: Path, cache: Path) -> dict:
    """Nothing of the development environment: the plugins folder is the only Python path."""
    keep = {k: os.environ[k] for k in ("HOME", "LANG", "XDG_RUNTIME_DIR") if k in os.environ}
    (profile.parent / "tmp").mkdir(parents=True, exist_ok=True)  # the last-error record stays in the test's folder
    return dict(keep, TMPDIR=str(profile.parent / "tmp"), PATH="/usr/local/bin:/usr/bin:/bin",
                PYTHONPATH=str(PLUGINS), QT_QPA_PLATFORM="offscreen",
                QGIS_PLUGINPATH=str(PLUGINS), QGIS_CUSTOM_CONFIG_PATH=str(profile), PYTHONNOUSERSITE="1",
                PIP_CACHE_DIR=str(cache))


def detect(env: dict, scene: dict, out: Path) -> subprocess.CompletedProcess:
    subprocess.run([QGIS_PROCESS, "plugins", "enable", "sentinel_landslide"], env=env, capture_output=True,
                   timeout=300, check=False)
    return subprocess.run([QGIS_PROCESS, "--json", "run", "landslide:detect", "--", f"S2={scene['S2']}",
                           f"OUTPUT={out}"], env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    from sentinel_landslide.engine.synthetic import make_scene

    return make_scene(tmp_path_factory.mktemp("scene"), width=256, height=204, seed=7)


def test_install_from_the_index_then_qgis_process_detects(network, qgis_python, scene, big_tmp, pip_cache):
    tmp_path = big_tmp
    if not os.path.exists(QGIS_PROCESS):
        pytest.skip("no qgis_process.bin on this machine")
    env = clean_env(tmp_path / "profile", pip_cache)
    # the control: QGIS's own Python lacks the packages, so detect fails and names them
    p = detect(env, scene, tmp_path / "before.gpkg")
    if p.returncode == 0:
        pytest.skip("QGIS's own Python already has the packages: nothing to prove here")
    assert "Missing Python package" in p.stdout + p.stderr and "sentinel_landslide.deps install" in p.stdout + p.stderr

    # the CLI with QGIS's Python and no --target: the folder the plugin loads for this profile
    p = subprocess.run([qgis_python, "-m", "sentinel_landslide.deps", "install"], env=env, capture_output=True,
                       text=True, timeout=900)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    folder = tmp_path / "profile" / "profiles" / "default" / "python" / "dependencies" / "sentinel_landslide" / \
        f"py{sys.version_info[0]}{sys.version_info[1]}"
    names = {q.name.lower() for q in folder.iterdir()}
    assert {"onnxruntime", "lightgbm", "xgboost"} <= names
    assert not [n for n in names if n.startswith("numpy") or n.startswith("scipy")]  # QGIS's stay in charge
    assert "no restart needed" in p.stdout

    p = detect(env, scene, tmp_path / "after.gpkg")
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    res = json.loads(p.stdout[p.stdout.index("{"):])["results"]
    assert res["TILES"] > 0 and (tmp_path / "after.gpkg").is_file()

    # status (same Python, same profile) shows them installed, loaded from that folder
    p = subprocess.run([qgis_python, "-m", "sentinel_landslide.deps", "status"], env=env, capture_output=True,
                       text=True, timeout=300)
    assert p.returncode == 0, p.stdout
    for r in requirements("required"):
        line = next(ln for ln in p.stdout.splitlines() if f"] {r.pip}{r.spec}: " in ln)
        assert ": installed " in line and str(folder) in line


def test_offline_install_from_a_folder_of_wheels(network, qgis_python, big_tmp, pip_cache):
    tmp_path = big_tmp
    wheels, target = tmp_path / "wheels", tmp_path / "target"
    lines = [r.line for r in requirements("required")]
    # what docs/install.md tells IT to run: the requirements with QGIS's numpy and scipy pinned
    pins = subprocess.run([qgis_python, "-c", "import numpy, scipy; print(f'numpy=={numpy.__version__} "
                           "scipy=={scipy.__version__}')"], capture_output=True, text=True, check=True).stdout.split()
    p = subprocess.run([qgis_python, "-m", "pip", "download", "--disable-pip-version-check", "--only-binary", ":all:",
                        "-d", str(wheels), *pins, *lines], capture_output=True, text=True, timeout=900,
                       env=dict(os.environ, PIP_CACHE_DIR=str(pip_cache)))
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    env = dict(clean_env(tmp_path / "profile", pip_cache), PIP_FIND_LINKS="", PIP_EXTRA_INDEX_URL="")
    p = subprocess.run([qgis_python, "-m", "sentinel_landslide.deps", "install", "--wheels", str(wheels),
                        "--target", str(target)], env=env, capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert "--no-index" in p.stdout  # nothing from the network
    assert {"onnxruntime", "lightgbm", "xgboost"} <= {q.name.lower() for q in target.iterdir()}
    assert not any(q.name.lower().startswith("numpy") for q in target.iterdir())


IN_SESSION = r"""
import sys
from qgis.core import QgsApplication
app = QgsApplication([], False)
app.initQgis()
import sentinel_landslide  # noqa: F401 - as QGIS loads the plugin: its folder goes on sys.path
from sentinel_landslide.deps.paths import dependency_dir
from sentinel_landslide.models import deps
from sentinel_landslide.models.package import load_package
from sentinel_landslide.models.ensemble import Ensemble, MissingDependency
from sentinel_landslide.deps.install import InstallOptions, install
pkg = load_package()
try:
    Ensemble(pkg, "s2+desc+asc")
    sys.exit("the packages were already there")
except MissingDependency:
    pass
print("before:", deps.missing(), dependency_dir())
r = install(InstallOptions(), log=lambda s: None)
print("restart:", r.restart_needed)
e = Ensemble(pkg, "s2+desc+asc")  # the same session: no restart
import onnxruntime
print("after:", deps.missing(), sorted(e.members), onnxruntime.__file__)
"""


def test_install_now_works_in_the_running_session_without_restart(network, qgis_python, big_tmp, pip_cache):
    """In one QGIS Python session: the plugin loads with nothing installed, the installer runs
    (what "Install now" does), and the models load right after, from the plugin's folder."""
    env = dict(clean_env(big_tmp / "profile", pip_cache), HOME=str(big_tmp / "home"))
    p = subprocess.run([qgis_python, "-c", IN_SESSION], env=env, capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    out = p.stdout
    assert "before: ['onnxruntime', 'lightgbm', 'xgboost']" in out and "restart: []" in out
    after = next(ln for ln in out.splitlines() if ln.startswith("after:"))
    assert after.startswith("after: [] [") and str(big_tmp / "profile" / "profiles" / "default") in after
