"""Recount the FLOPs per patch that a model package states for its neural members.

``python -m sentinel_landslide.training.recount_flops [package folder]``

Packages exported before attention was counted (``nets.counting_flops``) state too few
FLOPs for members with attention.  The count comes from the architecture alone (the
member's name in ``nets``), so the weights are not needed; the member files, and so their
checksums, are unchanged.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..models.package import BUNDLED, write_manifest


def recount(folder: Path, log=print) -> dict:
    from . import nets

    folder = Path(folder)
    man = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    per = {}
    for m in man["members"]:
        if m["kind"] != "onnx":
            continue
        with nets.widened(float(m.get("width", 1.0))):  # members trained with train_nn --width
            new = nets.count_flops(nets.build_member(m["name"]))
        log(f"{m['name']}: {m.get('flops_per_patch', 0) / 1e6:.2f} -> {new / 1e6:.2f} MFLOP/patch")
        m["flops_per_patch"] = per[m["name"]] = new
    proxy = man.get("metrics", {}).get("nn_proxy", {})
    for name, rec in proxy.get("members", {}).items():
        if name in per:
            rec["flops_per_patch"] = per[name]
    if "total_flops_per_patch" in proxy:
        proxy["total_flops_per_patch"] = {
            mode: int(sum(per[m["name"]] for m in man["members"] if m["name"] in per and mode in m["modes"]))
            for mode in proxy["total_flops_per_patch"]}
    write_manifest(folder, man)
    return per


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("package", nargs="?", default=str(BUNDLED), help="model package folder (default: bundled)")
    a = ap.parse_args(argv)
    recount(Path(a.package))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
