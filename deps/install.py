"""Install the plugin's packages into its own folder with pip, run as a subprocess of QGIS's
Python, without ever touching QGIS's numpy (or its site-packages).

1. pip resolves the whole plan first (``--dry-run --report``) against what QGIS's Python
   already has, so whatever QGIS has at a fitting version stays out of our folder; numpy and
   QGIS's other compiled packages (PROTECTED) are pinned to the versions that run: a plan
   that needs another numpy is refused with a plain message, before any download.
2. The plan is installed as it stands, ``--no-deps --target``, into a staging folder beside
   the plugin's folder.
3. A fresh interpreter imports everything from the staging folder (and GDAL after it); only
   then does the staging folder replace the old one.  Nothing half-installed is ever loaded.

PEP 668 (Debian / Ubuntu mark the system Python "externally managed"): pip skips that check
for ``--dry-run --report`` (nothing is written) and for ``--target`` (nothing goes into the
interpreter's own site-packages).  Should a patched pip still refuse, it is retried with
``--break-system-packages``, which is safe here for the same reason: the plan writes nothing
and the install writes our folder and nothing else.

No QGIS import: the dialog's QgsTask, the CLI and the tests call ``install``.
"""
from __future__ import annotations

import json
import os
import queue
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..core.deps import Requirement, gpu_available_here, python_executable, requirements
from .paths import activate, dependency_dir

# QGIS's own compiled packages pip must not replace: pinned to the running versions
PROTECTED = ("numpy", "scipy", "gdal", "pyqt5", "pyqt6", "shapely", "pyproj", "pandas", "matplotlib")
MANIFEST = "sentinel_landslide-deps.json"
MIN_PIP = (22, 2)  # --dry-run --report

KINDS = {
    "pip": "pip is not available in QGIS's Python",
    "network": "no network connection to the package index",
    "proxy": "the proxy refused or failed the connection",
    "certificate": "a certificate error (TLS inspection or an outdated certificate store)",
    "no_wheel": "no package for this platform or Python version",
    "numpy": "a conflict with QGIS's numpy",
    "conflict": "packages with conflicting requirements",
    "python": "the Python found is not the one QGIS runs",
    "verify": "the installed packages do not import",
    "cancelled": "cancelled",
    "other": "pip failed",
}


class InstallError(Exception):
    """A failed install: ``kind`` (a key of KINDS), a message an analyst can act on, pip's log."""

    def __init__(self, kind: str, message: str, log: str = ""):
        super().__init__(message)
        self.kind, self.log = kind, log


@dataclass
class InstallOptions:
    features: tuple = ()  # optional features besides "required": fetch, cluster, gpu
    target: Path | None = None  # default: the folder the plugin loads from
    wheels: Path | None = None  # a folder of wheels: offline / air-gapped (--no-index --find-links)
    index_url: str | None = None
    proxy: str | None = None  # http://[user:password@]host:port
    python: str | None = None  # default: core.deps.python_executable()
    lines: tuple | None = None  # requirement lines instead of the features' (tests, experts)
    timeout: float = 1800.0


@dataclass
class InstallResult:
    target: Path
    installed: dict = field(default_factory=dict)  # distribution -> version, in the folder
    kept: dict = field(default_factory=dict)  # planned but already provided by QGIS's Python
    restart_needed: list = field(default_factory=list)  # modules loaded before, now replaced
    modules: dict = field(default_factory=dict)  # module -> (version, file) seen by the check

    def summary(self) -> str:
        s = f"Installed into {self.target}: " + (", ".join(f"{k} {v}" for k, v in self.installed.items()) or "nothing")
        if self.kept:
            s += "\nAlready in QGIS's Python (left alone): " + ", ".join(f"{k} {v}" for k, v in self.kept.items())
        if self.restart_needed:
            s += ("\nRestart QGIS to use the new versions of " + ", ".join(self.restart_needed)
                  + ": this session loaded the old ones already and Python cannot unload them.")
        else:
            s += "\nReady: the algorithms use them now, no restart needed."
        return s


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_lines(features=(), gpu_platform: bool | None = None) -> list[str]:
    """pip lines for required + ``features``; with "gpu" the CUDA build of onnxruntime
    replaces the CPU one (both install the same module)."""
    feats = set(features)
    out: list[Requirement] = []
    for r in requirements("required", *feats):
        if r.feature == "gpu":
            continue
        if r.pip == "onnxruntime" and "gpu" in feats:
            r = next(g for g in requirements("gpu") if g.module == "onnxruntime")
        out.append(r)
    return [r.line for r in out]


def redact(text: str) -> str:
    """Passwords in URLs (proxy, index) are never logged."""
    return re.sub(r"(\w+://)[^/@\s:]+:[^/@\s]+@", r"\1***:***@", text)


def source_args(opts: InstallOptions) -> list[str]:
    args = []
    if opts.wheels:
        args += ["--find-links", str(opts.wheels)]
        if not opts.index_url:
            args.append("--no-index")
    if opts.index_url:
        args += ["--index-url", opts.index_url]
    if opts.proxy:
        args += ["--proxy", opts.proxy]
    return args


def classify(log: str, opts: InstallOptions | None = None, numpy: str | None = None) -> InstallError:
    """pip's output -> the cause an analyst can act on."""
    low = log.lower()
    tail = "\n".join(log.strip().splitlines()[-15:])
    where = f" ({opts.index_url})" if opts and opts.index_url else ""
    if "no module named pip" in low:
        return InstallError("pip", "pip is not installed in QGIS's Python. On Debian/Ubuntu: sudo apt install "
                            "python3-pip; on Windows and macOS it comes with QGIS (reinstall QGIS).", log)
    if any(k in low for k in ("proxyerror", "tunnel connection failed", "407 proxy", "proxy authentication")):
        return InstallError("proxy", "The proxy refused or failed the connection. Check the proxy in QGIS "
                            "(Settings > Options > Network), its user and password, or ask IT; "
                            "or install offline from a folder of wheels.", log)
    if any(k in low for k in ("certificate_verify_failed", "certificate verify failed", "sslerror",
                              "ssl: wrong_version", "self signed certificate", "self-signed certificate")):
        return InstallError("certificate", "A certificate error reaching the package index: a network that "
                            "inspects TLS needs its certificate added to pip (PIP_CERT or pip.conf 'cert'), "
                            "or install offline from a folder of wheels.", log)
    if any(k in low for k in ("failed to establish a new connection", "temporary failure in name resolution",
                              "name or service not known", "network is unreachable", "connection refused",
                              "read timed out", "connecttimeout", "max retries exceeded", "nodename nor servname",
                              "getaddrinfo failed")):
        return InstallError("network", f"No connection to the package index{where}. Check the network or "
                            "QGIS's proxy settings, or install offline from a folder of wheels "
                            "(docs/install.md).", log)
    conflict = "conflicting dependencies" in low or "resolutionimpossible" in low
    who = [ln.strip() for ln in log.splitlines() if re.search(r"(depends on|user requested) numpy", ln, re.I)]
    if conflict and who:
        return InstallError("numpy", "Refused: the plan needs another numpy than the one QGIS runs "
                            f"({numpy or 'installed'}), and replacing it would break QGIS's GDAL. "
                            + ("; ".join(who) + ". " if who else "")
                            + "Choose versions that support this numpy, or a QGIS built with a newer numpy.", log)
    if conflict:
        return InstallError("conflict", "pip found no set of versions that fit together:\n" + tail, log)
    if any(k in low for k in ("no matching distribution found", "could not find a version that satisfies",
                              "is not a supported wheel on this platform")):
        return InstallError("no_wheel", f"No package for this platform and Python ({sys.platform}, "
                            f"Python {sys.version_info[0]}.{sys.version_info[1]}) was found"
                            + (" in the wheels folder" if opts and opts.wheels else "")
                            + ":\n" + tail, log)
    if "externally-managed-environment" in low:
        return InstallError("other", "pip refused to write into a system-managed Python.", log)
    return InstallError("other", "pip failed:\n" + tail, log)


def run_logged(cmd: list[str], log, cancelled, timeout: float, env=None) -> tuple[int, str]:
    """Run ``cmd``, passing each output line to ``log``; kill it when ``cancelled()``."""
    log("$ " + redact(" ".join(cmd)))
    flags = {"creationflags": 0x08000000} if os.name == "nt" else {}  # CREATE_NO_WINDOW
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            text=True, encoding="utf-8", errors="replace", env=env, **flags)
    lines: queue.Queue = queue.Queue()
    reader = threading.Thread(target=lambda: [lines.put(ln) for ln in proc.stdout] and None, daemon=True)
    reader.start()
    out, t0 = [], time.monotonic()
    while True:
        try:
            ln = lines.get(timeout=0.2)
            out.append(ln)
            log(redact(ln.rstrip()))
            continue
        except queue.Empty:
            pass
        if proc.poll() is not None and not reader.is_alive() and lines.empty():
            proc.stdout.close()
            break
        if (cancelled and cancelled()) or time.monotonic() - t0 > timeout:
            proc.kill()
            proc.wait()
            proc.stdout.close()
            if cancelled and cancelled():
                raise InstallError("cancelled", "Cancelled: nothing was changed.", "".join(out))
            raise InstallError("network", f"pip did not finish within {timeout:.0f} s (a stalled download?).",
                               "".join(out))
    return proc.returncode, "".join(out)


PROBE = r"""
import json, sys
drop = set(json.loads(sys.argv[1]))
sys.path[:] = [p for p in sys.path if p not in drop]
import importlib.metadata as md
dists = {}
for d in md.distributions():
    try:
        dists.setdefault(d.metadata["Name"], d.version)
    except Exception:
        pass
try:
    import pip
    pipv = pip.__version__
except Exception:
    pipv = None
print(json.dumps({"python": list(sys.version_info[:3]), "dists": dists, "pip": pipv, "platform": sys.platform}))
"""

CHECK = r"""
import importlib, json, os, sys
folder = sys.argv[1]
sys.path.insert(0, folder)
out, err = {}, {}
for m in json.loads(sys.argv[2]):
    try:
        mod = importlib.import_module(m)
        out[m] = [str(getattr(mod, "__version__", "")), os.path.abspath(getattr(mod, "__file__", "") or "")]
    except BaseException as exc:
        err[m] = f"{type(exc).__name__}: {exc}"
try:
    import numpy
    out["numpy"] = [numpy.__version__, os.path.abspath(numpy.__file__)]
    from osgeo import gdal  # GDAL's bindings must still import beside our packages
    out["osgeo.gdal"] = [gdal.__version__, os.path.abspath(gdal.__file__)]
except ImportError as exc:
    if "osgeo" not in str(exc):
        err["numpy/gdal"] = str(exc)
print("CHECK:" + json.dumps({"ok": out, "failed": err}))
"""


def probe(python: str, exclude=()) -> dict:
    """What ``python`` already has (outside our folders): its version, distributions, pip."""
    p = subprocess.run([python, "-c", PROBE, json.dumps([str(x) for x in exclude])], capture_output=True,
                       text=True, timeout=120, check=False)
    if p.returncode != 0:
        raise InstallError("python", f"Could not run QGIS's Python ({python}):\n{p.stderr[-2000:]}", p.stderr)
    return json.loads(p.stdout.strip().splitlines()[-1])


def constraints(dists: dict) -> list[str]:
    by = {norm(k): (k, v) for k, v in dists.items()}
    return [f"{by[n][0]}=={by[n][1]}" for n in PROTECTED if n in by]


def installed_manifest(target: Path) -> dict:
    try:
        return json.loads((Path(target) / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def install(opts: InstallOptions, log=print, progress=None, cancelled=None) -> InstallResult:
    """Install ``opts``' packages; raise InstallError (nothing changed) on any failure."""
    progress = progress or (lambda frac, what: None)
    python = opts.python or python_executable()
    target = Path(opts.target) if opts.target else dependency_dir()
    previous = installed_manifest(target)
    features = tuple(sorted(set(opts.features) | set(previous.get("features", [])))) if opts.lines is None \
        else tuple(opts.features)
    lines = list(opts.lines) if opts.lines is not None else requirement_lines(features)
    if "gpu" in features and opts.lines is None and not gpu_available_here():
        raise InstallError("no_wheel", "GPU inference: onnxruntime-gpu has packages for Linux and Windows on "
                           "x86_64 only (aarch64 Linux too); on this platform onnxruntime uses the CPU "
                           "(or CoreML / DirectML where its CPU package has them). Nothing was changed.")
    if opts.wheels and not Path(opts.wheels).is_dir():
        raise InstallError("other", f"The wheels folder '{opts.wheels}' does not exist.")
    target.parent.mkdir(parents=True, exist_ok=True)
    for stale in target.parent.glob(f".{target.name}.*"):  # left by an interrupted or Windows-locked run
        shutil.rmtree(stale, ignore_errors=True)

    progress(0.02, "Checking QGIS's Python")
    have = probe(python, exclude=[target])
    if tuple(have["python"][:2]) != tuple(sys.version_info[:2]) and opts.target is None:
        raise InstallError("python", f"{python} is Python {have['python'][0]}.{have['python'][1]} but this "
                           f"runs {sys.version_info[0]}.{sys.version_info[1]}: run the installer with QGIS's Python.")
    if not have["pip"]:
        raise classify("No module named pip")
    pipv = tuple(int(x) for x in re.findall(r"\d+", have["pip"])[:2])
    numpy = next((v for k, v in have["dists"].items() if norm(k) == "numpy"), None)
    base = [python, "-m", "pip", "install", "--disable-pip-version-check", "--no-input", "--progress-bar", "off",
            "--only-binary", ":all:"]
    staging = target.parent / f".{target.name}.staging-{os.getpid()}"
    work = Path(tempfile.mkdtemp(prefix="sl-deps-"))
    env = None
    try:
        if pipv < MIN_PIP:  # e.g. Ubuntu 22.04's pip 22.0: a current pip for this install only
            log(f"pip {have['pip']} predates --report ({MIN_PIP[0]}.{MIN_PIP[1]}): fetching a current pip into a "
                "temporary folder (QGIS's own pip is not changed)")
            cmd = [python, "-m", "pip", "install", "--disable-pip-version-check", "--no-input", "--only-binary",
                   ":all:", "--target", str(work / "pip")] + source_args(opts) + [f"pip>={MIN_PIP[0]}.{MIN_PIP[1]}"]
            rc, out = run_logged(cmd, log, cancelled, opts.timeout)
            if rc != 0:
                raise classify(out, opts, numpy)
            env = dict(os.environ, PYTHONPATH=os.pathsep.join(
                [str(work / "pip")] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else [])))
        # 1. the plan; nothing downloaded but metadata.  pip resolves against what QGIS's Python
        # already has (no --target here), so a package QGIS has at a fitting version is not
        # planned at all (the plugin's folder, first on sys.path, shadows as little as possible);
        # numpy and QGIS's other compiled packages are pinned: a plan needing others is refused.
        # ``--dry-run --report`` is exempt from PEP 668's check: nothing is written.
        progress(0.05, "Resolving versions")
        log(f"Pinned to what QGIS runs, never replaced: {', '.join(constraints(have['dists'])) or 'nothing'}")
        report, cons = work / "plan.json", work / "constraints.txt"
        cons.write_text("\n".join(constraints(have["dists"])) + "\n", encoding="utf-8")
        plan_args = ["--dry-run", "--report", str(report), "-c", str(cons)] + source_args(opts) + lines
        rc, out = run_logged(base + plan_args, log, cancelled, opts.timeout, env)
        if rc != 0 and "externally-managed-environment" in out.lower():
            base.insert(4, "--break-system-packages")  # a patched pip: safe, see the module docstring
            rc, out = run_logged(base + plan_args, log, cancelled, opts.timeout, env)
        if rc != 0:
            raise classify(out, opts, numpy)
        plan = json.loads(report.read_text(encoding="utf-8"))["install"]
        planned = {item["metadata"]["name"]: item["metadata"]["version"] for item in plan}
        have_norm = {norm(k): v for k, v in have["dists"].items()}
        for name, ver in planned.items():
            if norm(name) == "numpy" and numpy and ver != numpy:
                raise InstallError("numpy", f"Refused: the plan would replace QGIS's numpy {numpy} with {ver}, "
                                   "which breaks QGIS's GDAL. Nothing was installed.", out)
        kept = {k: v for k, v in planned.items() if have_norm.get(norm(k)) == v}
        todo = {k: v for k, v in planned.items() if k not in kept}
        newer = [f"{k} {have_norm[norm(k)]} -> {v}" for k, v in todo.items() if norm(k) in have_norm]
        log("Plan: " + (", ".join(f"{k} {v}" for k, v in todo.items()) or "nothing new"))
        if newer:
            log("Newer than QGIS's own, so they go into the plugin's folder: " + ", ".join(newer))

        # 2. exactly that plan, no dependency resolution left to chance, into the staging folder
        progress(0.15, f"Downloading and installing {len(todo)} packages")
        staging.mkdir(parents=True)
        if todo:
            cmd = base + ["--no-deps", "--target", str(staging)] + source_args(opts) + \
                [f"{k}=={v}" for k, v in todo.items()]
            n = [0]

            def counted(line):
                if line.startswith(("Collecting", "Processing", "Downloading")):
                    n[0] += line.startswith(("Collecting", "Processing"))
                    progress(0.15 + 0.6 * min(1.0, n[0] / max(1, len(todo))), line.strip()[:80])
                log(line)

            rc, out = run_logged(cmd, counted, cancelled, opts.timeout, env)
            if rc != 0:
                raise classify(out, opts, numpy)
        shadow = [p.name for p in staging.iterdir() if norm(p.name).startswith("numpy")]
        if shadow:
            raise InstallError("numpy", f"Refused: numpy would land in the plugin's folder ({', '.join(shadow)}) "
                               "and shadow QGIS's own. Nothing was changed.")

        # 3. a fresh interpreter imports everything from the staging folder, then GDAL
        progress(0.8, "Checking the imports in a fresh Python")
        if cancelled and cancelled():
            raise InstallError("cancelled", "Cancelled: nothing was changed.")
        mods = module_names(lines)
        p = subprocess.run([python, "-c", CHECK, str(staging), json.dumps(mods)], capture_output=True, text=True,
                           timeout=300, check=False)
        got = next((json.loads(ln[6:]) for ln in p.stdout.splitlines() if ln.startswith("CHECK:")), None)
        if got is None or got["failed"]:
            why = got["failed"] if got else (p.stderr or p.stdout)[-2000:]
            raise InstallError("verify", f"The installed packages do not import in QGIS's Python: {why}. "
                               "Nothing was changed.", str(why))
        for name, (_, f) in got["ok"].items():
            if name in ("numpy", "osgeo.gdal") and f.startswith(str(staging)):
                raise InstallError("numpy", f"Refused: {name} would load from the plugin's folder.")
        log("Imports check out: " + ", ".join(f"{m} {v[0]}" for m, v in got["ok"].items()))

        # 4. swap: the old folder goes only now
        progress(0.95, "Replacing the old folder")
        (staging / MANIFEST).write_text(json.dumps(
            {"features": list(features), "lines": lines, "installed": todo, "python": have["python"],
             "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}, indent=1), encoding="utf-8")
        result = InstallResult(target, installed=todo, kept=kept,
                               modules={m: tuple(v) for m, v in got["ok"].items()})
        # a module this process imported already keeps its old code until QGIS restarts
        result.restart_needed = [m for m in mods if sys.modules.get(m) is not None]
        if not swap_in(staging, target):  # Windows: the old folder's DLLs are loaded, it cannot move
            staging.rename(pending(target))
            result.restart_needed = ["all of them (the old folder is in use by this QGIS session; "
                                     "the new one takes its place at the next start)"]
        if str(target) in sys.path:
            activate(target)  # the plugin loads from here: new packages import at once
        progress(1.0, "Done")
        return result
    finally:
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(staging, ignore_errors=True)


def pending(target: Path) -> Path:
    """An install that could not replace a folder in use waits here for the next start."""
    return target.parent / f".{target.name}.pending"


def swap_in(new: Path, target: Path) -> bool:
    """Replace ``target`` by ``new`` (same file system: two renames); False when the old
    folder cannot move (files in use on Windows): nothing changed then."""
    old = target.parent / f".{target.name}.old-{os.getpid()}"
    try:
        if target.exists():
            target.rename(old)
    except OSError:
        return False
    new.rename(target)
    shutil.rmtree(old, ignore_errors=True)  # a leftover is swept by the next install
    return True


def module_names(lines) -> list[str]:
    """The modules to import-check for requirement lines (ours by name, others by pip name)."""
    by_pip = {}
    for r in requirements():
        by_pip.setdefault(norm(r.pip), r.module)
    out = []
    for ln in lines:
        name = norm(re.split(r"[<>=!~\[; ]", ln.strip(), maxsplit=1)[0])
        m = by_pip.get(name, name.replace("-", "_"))
        if m not in out:
            out.append(m)
    return out
