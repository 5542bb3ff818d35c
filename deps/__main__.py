"""python -m sentinel_landslide.deps status|install [--fetch] [--cluster] [--gpu]
[--target DIR] [--wheels DIR] [--index-url URL] [--proxy URL]

Run it with QGIS's Python.  Without --target it installs into the folder the plugin loads
from for the active QGIS profile (QGIS_CUSTOM_CONFIG_PATH honoured), so QGIS and
qgis_process find the packages with nothing else to set up."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m sentinel_landslide.deps", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("status", help="diagnostics: versions, CPU, each package's state and folder")
    ins = sub.add_parser("install", help="install / repair the packages (required + the features named)")
    for flag, what in (("fetch", "Sentinel-1/2 fetch: pystac-client, planetary-computer"),
                       ("cluster", "cluster runs: dask, distributed"),
                       ("gpu", "GPU inference: the CUDA build of onnxruntime")):
        ins.add_argument(f"--{flag}", action="store_true", help=what)
    ins.add_argument("--target", type=Path, help="folder to install into (default: the plugin's folder "
                     "for the active QGIS profile)")
    ins.add_argument("--wheels", type=Path, help="a folder of wheels: install offline from it (--no-index)")
    ins.add_argument("--index-url", help="package index (default: pip's, i.e. PyPI or pip.conf)")
    ins.add_argument("--proxy", help="http://[user:password@]host:port (default: pip's environment)")
    ins.add_argument("--python", help="the interpreter to install for (default: this one)")
    a = ap.parse_args(argv)

    from . import activate

    activate()
    if a.cmd == "status":
        from .diagnostics import report

        sys.stdout.write(report(qgis=True))
        from .status import missing_required

        return 1 if missing_required() else 0

    from .install import InstallError, InstallOptions, install

    feats = tuple(f for f in ("fetch", "cluster", "gpu") if getattr(a, f))
    opts = InstallOptions(features=feats, target=a.target, wheels=a.wheels, index_url=a.index_url,
                          proxy=a.proxy, python=a.python or sys.executable)
    try:
        result = install(opts, log=lambda s: print(s, flush=True),
                         progress=lambda f, what: print(f"[{100 * f:3.0f}%] {what}", flush=True))
    except InstallError as exc:
        print(f"\nInstall failed ({exc.kind}): {exc}", file=sys.stderr)
        return 2
    print("\n" + result.summary())
    return 0


if __name__ == "__main__":
    sys.exit(main())
