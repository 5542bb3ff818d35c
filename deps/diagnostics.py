"""The diagnostics report: everything a problem report needs, as plain text, with no secrets.

"Copy diagnostics" in the plugin menu and ``python -m sentinel_landslide.deps status`` print
the same.  QGIS and Qt versions are read only where QGIS is already loaded (``qgis=None``) or
asked for (``qgis=True``, the CLI); this module never imports QGIS by itself otherwise."""
from __future__ import annotations

import importlib
import os
import platform
import re
import shutil
import subprocess
import sys
from pathlib import Path

from ..core import lasterror
from ..core.deps import FEATURES, python_executable, requirements
from .paths import dependency_dir
from .status import status

PLUGIN_DIR = Path(__file__).resolve().parents[1]
SECRET_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSW|CREDENTIAL|AUTH|SIGNATURE|SAS|COOKIE|SESSION", re.I)
FIELDS = ("Plugin", "QGIS", "Qt", "Python", "GDAL", "PROJ", "OS", "CPU", "CPU features", "Dependency folder",
          "numpy", "onnxruntime providers", "GPU devices", "Model package", "Last algorithm error")


def redact(text: str, environ=None) -> str:
    """No environment secret, token, password or signed URL query string survives."""
    env = os.environ if environ is None else environ
    for name, value in env.items():
        if value and len(value) >= 4 and SECRET_NAME.search(name):
            text = text.replace(value, "[redacted]")
    text = re.sub(r"(\w+://)[^/@\s:]+:[^/@\s]+@", r"\1[redacted]@", text)  # user:password@host
    text = re.sub(r"((?:https?|s3|gs|az)://[^\s?#\"']+)\?[^\s\"']*", r"\1?[query redacted]", text)
    text = re.sub(r"(?i)\b([\w-]*(?:token|secret|passw\w*|api[_-]?key|subscription[_-]?key|signature|sig|"
                  r"credential|authorization)[\w-]*)(\s*[=:]\s*)(?:bearer\s+)?[^\s&,;\"']+",
                  r"\1\2[redacted]", text)
    return text


def plugin_version() -> str:
    try:
        for line in (PLUGIN_DIR / "metadata.txt").read_text(encoding="utf-8").splitlines():
            if line.startswith("version="):
                return line.split("=", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def cpu() -> tuple[str, str]:
    """(model and cores, SIMD features that matter for onnxruntime / LightGBM)."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.startswith("model name") and ":" in line:
                    model = line.split(":", 1)[1].strip()
                elif line.startswith(("flags", "Features")) and ":" in line:
                    flags = set(line.split(":", 1)[1].split())
                if model and flags:
                    break
    except OSError:
        if sys.platform == "darwin":
            try:
                out = subprocess.run(["sysctl", "-n", "machdep.cpu.brand_string", "machdep.cpu.leaf7_features"],
                                     capture_output=True, text=True, timeout=5).stdout.split("\n")
                model = out[0].strip() or model
                flags = {f.lower() for f in " ".join(out[1:]).split()}
            except (OSError, subprocess.SubprocessError):
                pass
    cores = f"{os.cpu_count() or '?'} logical cores"
    if not flags:
        return f"{model}, {cores}", "unknown on this OS"
    feats = {"AVX2": "avx2" in flags, "AVX-512": "avx512f" in flags,
             "VNNI": bool(flags & {"avx512_vnni", "avx_vnni", "avx512vnni"}), "NEON": bool(flags & {"asimd", "neon"})}
    return f"{model}, {cores}", ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in feats.items())


def qgis_versions(load: bool | None) -> tuple[str, str]:
    if load is None:
        load = "qgis.core" in sys.modules
    if not load:
        return "not loaded (run inside QGIS, or 'python -m sentinel_landslide.deps status')", "not loaded"
    try:
        from qgis.core import Qgis
        from qgis.PyQt.QtCore import QT_VERSION_STR

        return f"{Qgis.QGIS_VERSION}", QT_VERSION_STR
    except Exception as exc:  # noqa: BLE001 - no QGIS for this Python
        return f"not available ({type(exc).__name__})", "not available"


def gdal_proj() -> tuple[str, str]:
    try:
        from osgeo import gdal, osr

        proj = ".".join(str(f()) for f in (osr.GetPROJVersionMajor, osr.GetPROJVersionMinor, osr.GetPROJVersionMicro))
        return gdal.__version__, proj
    except Exception as exc:  # noqa: BLE001
        return f"not available ({type(exc).__name__})", "not available"


def module_line(name: str) -> str:
    try:
        mod = __import__(name)
        return f"{getattr(mod, '__version__', '?')} from {os.path.dirname(os.path.abspath(mod.__file__))}"
    except Exception as exc:  # noqa: BLE001
        return f"not importable ({type(exc).__name__}: {exc})"


def onnxruntime_info() -> tuple[str, str]:
    try:
        import onnxruntime as ort

        providers = ", ".join(ort.get_available_providers()) + f" (device: {ort.get_device()})"
    except Exception as exc:  # noqa: BLE001
        providers = f"onnxruntime not importable ({type(exc).__name__})"
    gpus = "none found"
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=10).stdout.strip()
            gpus = "; ".join(out.splitlines()) or gpus
        except (OSError, subprocess.SubprocessError):
            pass
    return providers, gpus


def model_package() -> str:
    try:
        from ..models.package import BUNDLED, PackageError, load_package

        try:
            pkg = load_package(BUNDLED, verify=True)
            check = "checksums OK"
        except PackageError as exc:
            pkg = load_package(BUNDLED, verify=False)
            check = f"checksum FAILED ({exc})"
        return f"{pkg.name} (bundled, {pkg.folder}), {check}"
    except Exception as exc:  # noqa: BLE001
        return f"not readable ({type(exc).__name__}: {exc})"


def report(qgis: bool | None = None, environ=None) -> str:
    """The report, redacted."""
    qv, qt = qgis_versions(qgis)
    gdal_v, proj_v = gdal_proj()
    cpu_model, cpu_feats = cpu()
    providers, gpus = onnxruntime_info()
    folder = dependency_dir()
    lines = [
        "Sentinel Landslide diagnostics",
        f"Plugin: {plugin_version()} ({PLUGIN_DIR})",
        f"QGIS: {qv}",
        f"Qt: {qt}",
        f"Python: {platform.python_version()} ({sys.executable}; pip runs {python_executable()})",
        f"GDAL: {gdal_v}",
        f"PROJ: {proj_v}",
        f"OS: {platform.platform()}",
        f"CPU: {cpu_model}",
        f"CPU features: {cpu_feats}",
        f"Dependency folder: {folder} ({'exists' if folder.is_dir() else 'not created yet'}; "
        f"{'on' if str(folder) in sys.path else 'NOT on'} sys.path)",
        f"numpy: {module_line('numpy')}",
        "Dependencies:",
    ]
    failed = {}
    for r in requirements("required"):  # loaded, so the report says where from (and whether they import)
        try:
            importlib.import_module(r.module)
        except Exception as exc:  # noqa: BLE001 - a broken install is what the report is for
            failed[r.module] = f"{type(exc).__name__}: {exc}"
    for ln in status():
        if ln.req.module in failed and ln.folder:
            where = f" found in {ln.folder} but does not import ({failed[ln.req.module]})"
            lines.append(f"  [{FEATURES[ln.req.feature].split(' (')[0]}] {ln.req.pip}{ln.req.spec}: {ln.state}"
                         f" {ln.version}{where}")
            continue
        mod = sys.modules.get(ln.req.module)
        if mod is not None and getattr(mod, "__file__", None) and ln.folder:  # loaded: where from, really
            where = f" loaded from {os.path.dirname(os.path.dirname(os.path.abspath(mod.__file__)))}"
        else:
            where = f" found in {ln.folder}" if ln.folder else ""
        ver = f" {ln.version}" if ln.version else ""
        lines.append(f"  [{FEATURES[ln.req.feature].split(' (')[0]}] {ln.req.pip}{ln.req.spec}: {ln.state}{ver}{where}")
    lines += [
        f"onnxruntime providers: {providers}",
        f"GPU devices: {gpus}",
        f"Model package: {model_package()}",
    ]
    err = lasterror.last()
    if err:
        lines.append(f"Last algorithm error: {err.get('algorithm')} at {err.get('time')}: {err.get('message')}")
        lines += ["  log:"] + ["    " + s for s in (err.get("log") or "").splitlines()[-60:]]
    else:
        lines.append("Last algorithm error: none recorded")
    return redact("\n".join(lines), environ) + "\n"
