"""Optional Python packages: the one list of what the plugin needs, by feature (the home of
those names and version ranges), the interpreter QGIS runs Python with, and the message an
analyst reads when one is missing.  Shared by the model runtime, the catalogue fetch, the
cluster paths and the installer (``sentinel_landslide.deps``)."""
from __future__ import annotations

import os
import platform
import sys
from dataclasses import dataclass

# feature -> what the analyst reads; "required" is what landslide:detect needs
FEATURES = {
    "required": "Detection (required)",
    "fetch": "Sentinel-1/2 fetch (optional)",
    "cluster": "Cluster runs (optional)",
    "gpu": "GPU inference (optional)",
}


@dataclass(frozen=True)
class Requirement:
    pip: str  # the distribution pip installs
    module: str  # the module the code imports
    spec: str  # version range, pip syntax
    feature: str  # a key of FEATURES
    also: tuple = ()  # other distributions providing the same module (e.g. the full xgboost)

    @property
    def line(self) -> str:
        return f"{self.pip}{self.spec}"


REQUIREMENTS = (
    Requirement("onnxruntime", "onnxruntime", ">=1.17,<2", "required", ("onnxruntime-gpu",)),
    Requirement("lightgbm", "lightgbm", ">=4.0,<5", "required"),
    # xgboost-cpu installs the same ``xgboost`` module, 5 MB instead of ~480
    Requirement("xgboost-cpu", "xgboost", ">=2.0,<4", "required", ("xgboost",)),
    Requirement("pystac-client", "pystac_client", ">=0.7,<1", "fetch"),
    Requirement("planetary-computer", "planetary_computer", ">=1.0,<2", "fetch"),
    Requirement("dask", "dask", ">=2024.1", "cluster"),
    Requirement("distributed", "distributed", ">=2024.1", "cluster"),
    # the CUDA build replaces the CPU one (same module): only where PyPI has wheels for it
    Requirement("onnxruntime-gpu", "onnxruntime", ">=1.17,<2", "gpu"),
)


def gpu_available_here(system: str | None = None, machine: str | None = None) -> bool:
    """onnxruntime-gpu has wheels for Linux x86_64 / aarch64 and Windows AMD64 only."""
    system = system or platform.system()
    machine = (machine or platform.machine()).lower()
    return (system == "Linux" and machine in ("x86_64", "amd64", "aarch64")) or \
        (system == "Windows" and machine in ("amd64", "x86_64"))


def requirements(*features: str) -> list[Requirement]:
    """The requirements of ``features`` (default: all), in REQUIREMENTS' order."""
    want = set(features) if features else set(FEATURES)
    return [r for r in REQUIREMENTS if r.feature in want]


def pip_names(modules) -> list[str]:
    """module names -> the pip names that install them (the non-GPU ones)."""
    by_module = {r.module: r.pip for r in REQUIREMENTS if r.feature != "gpu"}
    return [by_module.get(m, m) for m in modules]


def feature_of(modules) -> list[str]:
    """The optional features (CLI flags) whose packages include ``modules``."""
    mods = set(modules)
    return sorted({r.feature for r in REQUIREMENTS if r.module in mods and r.feature not in ("required", "gpu")})


def python_executable() -> str:
    """The interpreter QGIS runs Python with.  Inside QGIS ``sys.executable`` is often the
    QGIS binary itself (Windows, macOS), so look for python3/python next to it and in the
    running prefix."""
    exe = sys.executable or ""
    base = os.path.basename(exe).lower()
    if base.startswith("python") and not base.startswith("pythonw"):  # pythonw: no console for pip
        return exe
    names = ("python.exe", "python3.exe") if os.name == "nt" else ("python3", "python")
    dirs = [os.path.join(sys.exec_prefix, "bin"), sys.exec_prefix, os.path.dirname(exe)]
    for d in dirs:
        for n in names:
            p = os.path.join(d, n)
            if d and os.path.isfile(p):
                return p
    return "python" if os.name == "nt" else "python3"


def install_command(modules=()) -> str:
    """The terminal command that installs what ``modules`` need into the plugin's own
    dependency folder (the one it loads from), with QGIS's Python."""
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the plugin folder
    package = (__package__ or "sentinel_landslide").split(".")[0]
    py = python_executable()
    if " " in py:
        py = f'"{py}"'
    flags = "".join(f" --{f}" for f in feature_of(modules))
    cd = "cd /d" if os.name == "nt" else "cd"
    return f'{cd} "{os.path.dirname(here)}" && {py} -m {package}.deps install{flags}'


def install_message(purpose: str, pip_names, tail: str = "", modules=()) -> str:
    """``Missing Python package(s) for <purpose>: ...``, with where to click and the command."""
    return (f"Missing Python package(s) for {purpose}: {', '.join(pip_names)}. Install them from the "
            "QGIS menu Plugins > Sentinel Landslide > Install / repair dependencies (no restart needed), "
            f"or in a terminal with QGIS's Python:\n    {install_command(modules)}{tail}")
