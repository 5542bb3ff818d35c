"""The per-combination table of a model package: out-of-fold F1, precision, recall, AUC,
threshold and members for every input combination, from its manifest alone.

    python -m sentinel_landslide.training.combo_table                 # bundled package, to stdout
    python -m sentinel_landslide.training.combo_table --readme FILE.md     # refresh the table between FILE's markers

The documentation site renders it at each build (scripts/docs_hooks.py, docs/accuracy.md).

Which OOF record a row shows:
- "whole ensemble": ``metrics.nn_proxy.ensembles[combination]`` when it covers exactly the
  members that run there (networks' OOF on synthetic proxy patches, GBMs' on the real
  features; weights as in the manifest);
- "GBM pair": ``metrics.gbm_real_features.ensembles[combination]`` (real features, 5-fold
  stratified OOF).  Where networks also run in that combination but their OOF was not
  available when the GBMs were trained, the row says so: the figure is the GBM pair's.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..core.channels import COMBINATION_BY_NAME
from ..models.package import load_package
from .doc_blocks import replace_between

START = "<!-- combo-table:start (python -m sentinel_landslide.training.combo_table --readme README.md) -->"
END = "<!-- combo-table:end -->"


def _sources(name: str) -> str:
    c = COMBINATION_BY_NAME[name]
    parts = ["S2"] if c.s2 else []
    for orbit, state in (("desc", c.desc), ("asc", c.asc)):
        if state != "none":
            parts.append(f"{orbit} {'post+pre' if state == 'full' else 'post'}")
    return ", ".join(parts)


def combination_rows(pkg) -> list[dict]:
    """One dict per combination the package scores, in the order of COMBINATIONS."""
    metrics = pkg.manifest.get("metrics", {})
    gbm = metrics.get("gbm_real_features", {}).get("ensembles", {})
    proxy = metrics.get("nn_proxy", {}).get("ensembles", {})
    rows = []
    for name in pkg.available_modes():
        members = pkg.members_for(name)
        names = {m["name"] for m in members}
        nets = [m for m in members if m["kind"] == "onnx"]
        n_gbm = len(members) - len(nets)
        whole = proxy.get(name)
        if whole and not whole.get("missing_oof") and set(whole.get("members", [])) == names:
            a = whole["at_threshold"]
            rec = {"f1": a["f1"], "precision": a["precision"], "recall": a["recall"], "auc": a["auc"],
                   "threshold": a["threshold"], "n": whole.get("n")}
            basis = "whole ensemble"
        elif name in gbm:
            e = gbm[name]
            rec = {"f1": e["oof_f1"], "precision": e["oof_precision"], "recall": e["oof_recall"],
                   "auc": e["oof_auc"], "threshold": e["threshold"], "n": None}
            basis = "GBM pair" if not nets else "GBM pair (networks' OOF not available)"
        else:
            rec = {k: None for k in ("f1", "precision", "recall", "auc", "threshold", "n")}
            basis = "no OOF record"
        share = sum(float(m["weight"]) for m in nets) / max(sum(float(m["weight"]) for m in members), 1e-12)
        rows.append({"combination": name, "sources": _sources(name), **rec, "package_threshold": pkg.threshold(name),
                     "gbm": n_gbm, "nets": [m["name"] for m in nets], "net_share": share, "basis": basis})
    return rows


def _f(v, nd=3) -> str:
    return "-" if v is None else f"{v:.{nd}f}"


def markdown(pkg) -> str:
    rows = combination_rows(pkg)
    ref = next((r["f1"] for r in rows if r["combination"] == "s2+desc+asc"), None)
    out = ["| combination | sources | OOF F1 | dF1 vs all | precision | recall | AUC | threshold | members | OOF of |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        d = "-" if ref is None or r["f1"] is None else f"{r['f1'] - ref:+.3f}"
        members = f"{r['gbm']} GBM" + (f" + {len(r['nets'])} net{'s' if len(r['nets']) > 1 else ''}"
                                       f" ({r['net_share']:.0%} of the vote)" if r["nets"] else "")
        out.append(f"| `{r['combination']}` | {r['sources']} | {_f(r['f1'])} | {d} | {_f(r['precision'])} | "
                   f"{_f(r['recall'])} | {_f(r['auc'])} | {_f(r['package_threshold'], 3)} | {members} | {r['basis']} |")
    return "\n".join(out) + "\n"


def refresh_readme(path: Path, table: str) -> None:
    replace_between(path, START, END, table, "combo-table")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="combo_table", description=__doc__.split("\n\n")[0])
    ap.add_argument("--package", default=None, help="model package folder (default: the bundled one)")
    ap.add_argument("--readme", default=None, help="replace the table between the combo-table markers of this file")
    a = ap.parse_args(argv)
    table = markdown(load_package(a.package))
    if a.readme:
        refresh_readme(Path(a.readme), table)
    else:
        sys.stdout.write(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
