"""Two model packages side by side: the networks' cost and every out-of-fold metric their
manifests record (issue 22: a cheaper network is kept only where the metrics hold).

``python -m sentinel_landslide.training.compare_packages BASE NEW [--tol 0.003] [--markdown]``

Per network: MFLOP per patch, OOF F1 and AUC (``metrics.nn_proxy.members``).  Per input
combination that has networks: the whole ensemble's OOF F1 at the package's threshold, F1 at
0.5 and AUC (``metrics.nn_proxy.ensembles``), and whether NEW holds within ``--tol`` of BASE
(F1 and AUC may drop by at most ``tol``).  Both packages must come from the same training data
and folds (the command checks the source checksum, folds and seed), else the comparison means
nothing.  Exit status 0 when every combination holds, 1 when one does not, 2 on bad input.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

SAME = ("source_sha256", "folds", "seed", "n", "epochs")


def _nn(folder) -> dict:
    man = json.loads((Path(folder) / "manifest.json").read_text())
    nn = (man.get("metrics") or {}).get("nn_proxy")
    if not nn:
        raise ValueError(f"{folder}: the manifest records no network metrics (metrics.nn_proxy)")
    return nn


def compare(base, new, tol: float = 0.003) -> dict:
    """{'members': [...], 'modes': [...], 'holds': bool, 'mismatch': [...]} of two packages."""
    a, b = _nn(base), _nn(new)
    pa, pb = a.get("provenance", {}), b.get("provenance", {})
    mismatch = [k for k in SAME if pa.get(k) != pb.get(k)]
    members = []
    for name in sorted(set(a["members"]) | set(b["members"])):
        ma, mb = a["members"].get(name, {}), b["members"].get(name, {})
        members.append({"member": name, "mflop": [(m.get("flops_per_patch") or 0) / 1e6 for m in (ma, mb)],
                        "f1": [m.get("oof_f1") for m in (ma, mb)], "auc": [m.get("oof_auc") for m in (ma, mb)]})
    modes = []
    for mode in sorted(set(a["ensembles"]) & set(b["ensembles"])):
        ea, eb = a["ensembles"][mode], b["ensembles"][mode]
        if not any(m.startswith("nn_") for m in ea["members"]):
            continue
        row = {"mode": mode, "f1": [e["at_threshold"]["f1"] for e in (ea, eb)],
               "f1_at_0.5": [e["at_0.5"]["f1"] for e in (ea, eb)], "auc": [e["at_threshold"]["auc"] for e in (ea, eb)],
               "mflop": [(x.get("total_flops_per_patch") or {}).get(mode, 0) / 1e6 for x in (a, b)]}
        row["holds"] = row["f1"][1] >= row["f1"][0] - tol and row["auc"][1] >= row["auc"][0] - tol
        modes.append(row)
    return {"members": members, "modes": modes, "holds": all(r["holds"] for r in modes) and not mismatch,
            "mismatch": mismatch, "tol": tol}


def markdown(res: dict, base_label: str, new_label: str) -> list[str]:
    def f(v, nd=4):
        return "-" if v is None else f"{v:.{nd}f}"

    L = [f"| network | MFLOP/patch {base_label} -> {new_label} | OOF F1 | OOF AUC |", "|---|---|---|---|"]
    for m in res["members"]:
        L.append(f"| {m['member']} | {f(m['mflop'][0], 1)} -> {f(m['mflop'][1], 1)} | {f(m['f1'][0])} -> "
                 f"{f(m['f1'][1])} | {f(m['auc'][0])} -> {f(m['auc'][1])} |")
    L += ["", f"| combination | networks' MFLOP/patch | ensemble OOF F1 (package threshold) | F1 at 0.5 | AUC | "
              f"holds within {res['tol']} |", "|---|---|---|---|---|---|"]
    for r in res["modes"]:
        L.append(f"| {r['mode']} | {f(r['mflop'][0], 1)} -> {f(r['mflop'][1], 1)} | {f(r['f1'][0])} -> {f(r['f1'][1])} | "
                 f"{f(r['f1_at_0.5'][0])} -> {f(r['f1_at_0.5'][1])} | {f(r['auc'][0])} -> {f(r['auc'][1])} | "
                 f"{'yes' if r['holds'] else '**no**'} |")
    if res["mismatch"]:
        L.append(f"\nNot comparable: the training runs differ in {', '.join(res['mismatch'])}.")
    return L


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("base")
    ap.add_argument("new")
    ap.add_argument("--tol", type=float, default=0.003)
    ap.add_argument("--markdown", action="store_true", help="tables instead of JSON")
    a = ap.parse_args(argv)
    try:
        res = compare(a.base, a.new, a.tol)
    except (OSError, ValueError, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if a.markdown:
        print("\n".join(markdown(res, "base", "new")))
    else:
        print(json.dumps(res))
    return 0 if res["holds"] else 1


if __name__ == "__main__":
    sys.exit(main())
