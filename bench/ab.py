"""A/B: the detection child of two git revisions, run alternately on the same cached
1/16-tile scene, so a slowdown can be told from the machine (the VM varies 15-40 % between
runs and more between CPU models).

    python -m sentinel_landslide.bench.ab OLD_REV [NEW_REV] [--repeats 2]

Each revision is checked out into a temporary worktree and scored with its own bundled
package; prints one line per run (wall, CPU per patch, reader and feature CPU)."""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from ..core.channels import INPUT_ROLES
from .common import ROOT, ensure_scene


def _worktree(rev: str, where: Path) -> Path:
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-f", str(where), rev],
                   check=True, capture_output=True)
    (where / ".build" / "plugins").mkdir(parents=True, exist_ok=True)
    (where / ".build" / "plugins" / "sentinel_landslide").symlink_to(where)
    return where


def child(root: Path, scene: dict) -> dict:
    env = dict(os.environ, PYTHONPATH=str(root / ".build" / "plugins"))
    p = subprocess.run([sys.executable, "-m", "sentinel_landslide.bench.run", "--child", "detect",
                        "--scene", json.dumps(scene), "--package", str(root / "models" / "bundled")],
                       capture_output=True, text=True, env=env)
    if p.returncode:
        raise RuntimeError(p.stderr[-2000:])
    return json.loads(p.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m sentinel_landslide.bench.ab", description=__doc__.split("\n\n")[0])
    ap.add_argument("old")
    ap.add_argument("new", nargs="?", default=None, help="default: this checkout as it is")
    ap.add_argument("--repeats", type=int, default=2)
    a = ap.parse_args(argv)
    scene = {k: str(v) for k, v in ensure_scene(2745).items() if k in INPUT_ROLES}
    with tempfile.TemporaryDirectory() as tmp:
        trees = {"old": _worktree(a.old, Path(tmp) / "old"),
                 "new": _worktree(a.new, Path(tmp) / "new") if a.new else ROOT}
        try:
            for _ in range(a.repeats):
                for name, root in trees.items():
                    r = child(root, scene)
                    n = r["scored"]
                    print(f"{name}: wall {r['wall_seconds']:.1f} s, CPU {1000 * r['cpu_seconds'] / n:.2f} ms/patch, "
                          f"reader CPU {1000 * r.get('read_cpu_seconds', 0) / n:.2f} ms/patch, "
                          f"features CPU {1000 * r.get('features_cpu_seconds', 0) / n:.2f} ms/patch", flush=True)
        finally:
            for root in trees.values():
                if root != ROOT:
                    subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(root)],
                                   capture_output=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
