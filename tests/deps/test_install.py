"""The installer on local wheels (no network): the folder per profile and Python, staging and
swap, the import check, the numpy guard and failures read as their cause."""
from __future__ import annotations

import json
import socket
import sys
from pathlib import Path

import pytest

from sentinel_landslide.core import deps as core_deps
from sentinel_landslide.deps import install as inst
from sentinel_landslide.deps import paths
from sentinel_landslide.deps.status import INSTALLED, MISSING, WRONG, satisfies, status

from .wheels import make_wheel

ROOT = Path(__file__).resolve().parents[2]


def test_folder_per_profile_and_python_minor(tmp_path, monkeypatch):
    monkeypatch.delenv(paths.ENV_DIR, raising=False)
    monkeypatch.setenv("QGIS_CUSTOM_CONFIG_PATH", str(tmp_path))
    tag = f"py{sys.version_info[0]}{sys.version_info[1]}"
    assert paths.dependency_dir() == tmp_path / "profiles" / "default" / "python" / "dependencies" / \
        "sentinel_landslide" / tag
    (tmp_path / "profiles").mkdir()
    (tmp_path / "profiles" / "profiles.ini").write_text("[core]\ndefaultProfile=field\n")
    assert paths.dependency_dir().parts[-5] == "field"  # QGIS's default profile, not a guess
    monkeypatch.delenv("QGIS_CUSTOM_CONFIG_PATH")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    if sys.platform.startswith("linux"):
        assert str(paths.dependency_dir()).startswith(str(tmp_path / "home" / ".local/share/QGIS/QGIS3/profiles/default"))


def test_activate_puts_the_folder_first_once_and_sees_new_packages(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "path", list(sys.path))
    d = tmp_path / "py"
    paths.activate(d)  # not there yet: Python caches "nothing here"
    paths.activate(d)
    assert sys.path[0] == str(d) and sys.path.count(str(d)) == 1
    d.mkdir()
    (d / "sl_fresh_mod.py").write_text("X = 42\n")
    paths.activate(d)
    import sl_fresh_mod  # noqa: PLC0415

    assert sl_fresh_mod.X == 42
    monkeypatch.delitem(sys.modules, "sl_fresh_mod")


def test_the_requirement_list_has_one_home():
    """requirements-runtime.txt (the dev venv) says what core/deps.py REQUIREMENTS says."""
    txt = [ln.strip() for ln in (ROOT / "requirements-runtime.txt").read_text().splitlines()
           if ln.strip() and not ln.startswith("#") and not ln.startswith("numpy")]
    assert txt == [r.line for r in core_deps.requirements("required")]
    assert inst.requirement_lines(["gpu"])[0].startswith("onnxruntime-gpu")  # the CUDA build replaces the CPU one
    assert "onnxruntime>=1.17,<2" not in inst.requirement_lines(["gpu"])
    assert inst.module_names(inst.requirement_lines(["fetch"]))[-2:] == ["pystac_client", "planetary_computer"]


def test_versions_are_checked_against_the_range():
    assert satisfies("1.17.3", ">=1.17,<2") and not satisfies("2.0.0", ">=1.17,<2")
    assert not satisfies("1.16.9", ">=1.17,<2") and satisfies("2024.12.1", ">=2024.1")


def test_status_reads_installed_missing_and_wrong_version(tmp_path, qgis_python):
    wheels = tmp_path / "w"
    make_wheel(wheels, "sltiny", "1.0")
    make_wheel(wheels, "slold", "1.0")
    target = tmp_path / "t"
    inst.install(inst.InstallOptions(target=target, wheels=wheels, lines=("sltiny", "slold"), python=qgis_python),
                 log=lambda s: None)
    reqs = [core_deps.Requirement("sltiny", "sltiny", ">=1.0", "required"),
            core_deps.Requirement("slold", "slold", ">=2", "fetch"),
            core_deps.Requirement("slabsent", "slabsent", ">=1", "cluster")]
    got = {ln.req.pip: (ln.state, ln.version, ln.folder) for ln in status(path=[str(target)], reqs=reqs)}
    assert got["sltiny"] == (INSTALLED, "1.0", str(target.resolve()))
    assert got["slold"][:2] == (WRONG, "1.0") and got["slabsent"] == (MISSING, None, None)


@pytest.mark.slow  # pip runs several times (about 10-20 s)
def test_install_swaps_in_only_what_imports(tmp_path, qgis_python):
    wheels, target = tmp_path / "w", tmp_path / "deps" / "py3x"
    make_wheel(wheels, "sltiny", "1.0")
    make_wheel(wheels, "sltiny", "2.0")
    make_wheel(wheels, "slbroken", "1.0", body="raise ImportError('built for another Python')\n")
    logged = []
    r = inst.install(inst.InstallOptions(target=target, wheels=wheels, lines=("sltiny==1.0",), python=qgis_python),
                     log=logged.append)
    assert r.installed == {"sltiny": "1.0"} and (target / "sltiny" / "__init__.py").is_file()
    assert any("--no-index" in ln for ln in logged)  # offline: the wheels folder only
    assert json.loads((target / inst.MANIFEST).read_text())["installed"] == {"sltiny": "1.0"}
    assert r.modules["sltiny"][0] == "1.0" and "numpy" in r.modules  # checked beside QGIS's numpy

    # a package that does not import: the install fails and the old folder stays as it was
    with pytest.raises(inst.InstallError) as err:
        inst.install(inst.InstallOptions(target=target, wheels=wheels, lines=("sltiny==2.0", "slbroken"),
                                         python=qgis_python), log=lambda s: None)
    assert err.value.kind == "verify" and "slbroken" in str(err.value) and "Nothing was changed" in str(err.value)
    assert '"1.0"' in (target / "sltiny" / "__init__.py").read_text()
    assert sorted(p.name for p in target.parent.iterdir()) == ["py3x"]  # no staging folder left behind

    r = inst.install(inst.InstallOptions(target=target, wheels=wheels, lines=("sltiny==2.0",), python=qgis_python),
                     log=lambda s: None)
    assert '"2.0"' in (target / "sltiny" / "__init__.py").read_text()
    assert sorted(p.name for p in target.parent.iterdir()) == ["py3x"]


def test_numpy_guard_refuses_a_plan_that_needs_numpy_2(tmp_path, qgis_python):
    wheels, target = tmp_path / "w", tmp_path / "deps" / "py3x"
    make_wheel(wheels, "slneedsnumpy2", "1.0", requires=["numpy>=2"])
    with pytest.raises(inst.InstallError) as err:
        inst.install(inst.InstallOptions(target=target, wheels=wheels, lines=("slneedsnumpy2",), python=qgis_python),
                     log=lambda s: None)
    assert err.value.kind == "numpy"
    assert "numpy" in str(err.value) and "slneedsnumpy2 1.0 depends on numpy>=2" in str(err.value)
    assert "GDAL" in str(err.value)
    assert not target.exists() and list(target.parent.iterdir()) == []  # nothing installed, nothing staged
    # numpy itself asked for at another version: refused the same way
    with pytest.raises(inst.InstallError) as err:
        inst.install(inst.InstallOptions(target=target, wheels=wheels, lines=("numpy>=2",), python=qgis_python),
                     log=lambda s: None)
    assert err.value.kind == "numpy" and not target.exists()


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


@pytest.mark.slow  # pip runs several times (about 10-20 s)
@pytest.mark.parametrize("how", ["index", "proxy"])
def test_an_unreachable_index_or_proxy_reads_as_its_cause(tmp_path, qgis_python, how):
    """A port on 127.0.0.1 that nobody listens on: pip's retries end in a plain message."""
    url = f"http://127.0.0.1:{_closed_port()}"
    opts = inst.InstallOptions(target=tmp_path / "t", lines=("slnowhere-such-package",), python=qgis_python,
                               timeout=300, **({"index_url": url + "/simple"} if how == "index" else
                                               {"proxy": "http://user:pw@" + url[7:], "index_url": "https://pypi.invalid/simple"}))
    logged = []
    with pytest.raises(inst.InstallError) as err:
        inst.install(opts, log=logged.append)
    assert err.value.kind == ("network" if how == "index" else "proxy"), err.value.log[-1500:]
    assert not (tmp_path / "t").exists()
    assert not any("user:pw" in ln for ln in logged)  # the proxy's password never reaches the log


def test_classify_certificate_and_no_wheel():
    cert = ("WARNING: Retrying ... SSLError(SSLCertVerificationError(1, '[SSL: CERTIFICATE_VERIFY_FAILED] "
            "certificate verify failed: self-signed certificate in certificate chain')))")
    assert inst.classify(cert).kind == "certificate"
    nowheel = "ERROR: Could not find a version that satisfies the requirement onnxruntime (from versions: none)\n" \
              "ERROR: No matching distribution found for onnxruntime"
    assert inst.classify(nowheel).kind == "no_wheel"
    assert inst.classify("/usr/bin/python3: No module named pip").kind == "pip"


def test_the_missing_package_message_points_at_the_button_and_the_cli():
    from sentinel_landslide.models import deps

    text = deps.message(["onnxruntime"])
    assert "Install / repair dependencies" in text and "-m sentinel_landslide.deps install" in text
    from sentinel_landslide.fetch.deps import message

    assert "--fetch" in message(["pystac_client"])


@pytest.mark.slow  # pip runs several times (about 10-20 s)
def test_a_module_this_session_loaded_needs_a_restart_and_says_why(tmp_path, qgis_python, monkeypatch):
    wheels, target = tmp_path / "w", tmp_path / "deps" / "py3x"
    make_wheel(wheels, "slloaded", "1.0")
    make_wheel(wheels, "slloaded", "2.0")
    monkeypatch.setattr(sys, "path", list(sys.path))
    paths.activate(target)
    r = inst.install(inst.InstallOptions(target=target, wheels=wheels, lines=("slloaded==1.0",), python=qgis_python),
                     log=lambda s: None)
    assert r.restart_needed == [] and "no restart needed" in r.summary()
    import slloaded  # noqa: PLC0415 - importable at once: the folder was on sys.path before it existed

    monkeypatch.setitem(sys.modules, "slloaded", slloaded)
    assert slloaded.__version__ == "1.0"
    r = inst.install(inst.InstallOptions(target=target, wheels=wheels, lines=("slloaded==2.0",), python=qgis_python),
                     log=lambda s: None)
    assert r.restart_needed == ["slloaded"] and "Restart QGIS to use the new versions of slloaded" in r.summary()


def test_cancel_stops_pip_and_changes_nothing(tmp_path, qgis_python):
    wheels, target = tmp_path / "w", tmp_path / "deps" / "py3x"
    make_wheel(wheels, "sltiny", "1.0")
    inst.install(inst.InstallOptions(target=target, wheels=wheels, lines=("sltiny",), python=qgis_python),
                 log=lambda s: None)
    before = sorted(p.name for p in target.iterdir())
    seen = []
    opts = inst.InstallOptions(target=target, index_url=f"http://127.0.0.1:{_closed_port()}/simple",
                               lines=("slnowhere-such-package",), python=qgis_python)
    with pytest.raises(inst.InstallError) as err:
        inst.install(opts, log=seen.append, cancelled=lambda: any(s.startswith("$ ") for s in seen))
    assert err.value.kind == "cancelled"
    assert sorted(p.name for p in target.iterdir()) == before and sorted(p.name for p in target.parent.iterdir()) == ["py3x"]


def test_a_pip_too_old_for_report_is_replaced_for_the_install_only(tmp_path, qgis_python, monkeypatch):
    """Ubuntu 22.04's pip 22.0 has no --report: a current pip is fetched into a temporary folder
    (here from the wheels folder: the pip wheel Debian ships) and QGIS's own pip is left alone."""
    pip_wheels = sorted(Path("/usr/share/python-wheels").glob("pip-*.whl"))
    if not pip_wheels:
        pytest.skip("no pip wheel on this machine (Debian's python3-pip-whl)")
    wheels, target = tmp_path / "w", tmp_path / "deps" / "py3x"
    make_wheel(wheels, "sltiny", "1.0")
    (wheels / pip_wheels[-1].name).write_bytes(pip_wheels[-1].read_bytes())
    real = inst.probe
    monkeypatch.setattr(inst, "probe", lambda *a, **k: dict(real(*a, **k), pip="22.0.2"))
    logged = []
    r = inst.install(inst.InstallOptions(target=target, wheels=wheels, lines=("sltiny",), python=qgis_python),
                     log=logged.append)
    assert r.installed == {"sltiny": "1.0"}
    assert any("predates --report" in ln for ln in logged) and any("Successfully installed pip-" in ln for ln in logged)
    assert not any(p.name.startswith("pip") for p in target.iterdir())  # the helper pip is not in the folder


def test_a_folder_in_use_is_replaced_at_the_next_start(tmp_path, qgis_python, monkeypatch):
    """Windows cannot move a folder whose DLLs are loaded: the new install waits beside it and
    takes its place when the plugin next starts (activate), before anything imports from it."""
    wheels, target = tmp_path / "w", tmp_path / "deps" / "py3x"
    make_wheel(wheels, "sltiny", "1.0")
    make_wheel(wheels, "sltiny", "2.0")
    inst.install(inst.InstallOptions(target=target, wheels=wheels, lines=("sltiny==1.0",), python=qgis_python),
                 log=lambda s: None)
    real_rename = Path.rename

    def locked(self, dest):
        if self == target:
            raise PermissionError(32, "The process cannot access the file because it is being used")
        return real_rename(self, dest)

    monkeypatch.setattr(Path, "rename", locked)
    r = inst.install(inst.InstallOptions(target=target, wheels=wheels, lines=("sltiny==2.0",), python=qgis_python),
                     log=lambda s: None)
    assert r.restart_needed and "Restart QGIS" in r.summary()
    assert '"1.0"' in (target / "sltiny" / "__init__.py").read_text()  # untouched while in use
    monkeypatch.setattr(Path, "rename", real_rename)
    monkeypatch.setattr(sys, "path", list(sys.path))
    paths.activate(target)  # the next start
    assert '"2.0"' in (target / "sltiny" / "__init__.py").read_text()
    assert sorted(p.name for p in target.parent.iterdir()) == ["py3x"]


def test_what_qgis_has_stays_out_of_the_folder_unless_a_newer_one_is_needed(tmp_path, qgis_python):
    """What QGIS's Python has at a fitting version is not installed again (no shadowing), even
    offline; a package needing a newer one gets that newer copy, and the log says so."""
    have = inst.probe(qgis_python)["dists"]
    six = next((v for k, v in have.items() if inst.norm(k) == "six"), None)
    if six is None:
        pytest.skip("QGIS's Python has no 'six' to keep")
    wheels, target = tmp_path / "w", tmp_path / "t"
    make_wheel(wheels, "six", "99.0")  # a 'newer six' that only the second package asks for
    make_wheel(wheels, "slsixok", "1.0", requires=["six>=1.0"])
    make_wheel(wheels, "slsixnew", "1.0", requires=["six>=99"])
    logged = []
    r = inst.install(inst.InstallOptions(target=target, wheels=wheels, lines=("slsixok",), python=qgis_python),
                     log=logged.append)
    assert r.installed == {"slsixok": "1.0"}  # the wheels folder's six 99.0 was not needed
    assert not (target / "six.py").exists() and not (target / "six").exists()
    r = inst.install(inst.InstallOptions(target=target, wheels=wheels, lines=("slsixnew",), python=qgis_python),
                     log=logged.append)
    assert r.installed == {"slsixnew": "1.0", "six": "99.0"}
    assert any(f"Newer than QGIS's own, so they go into the plugin's folder: six {six} -> 99.0" in ln for ln in logged)
