"""MkDocs hook (mkdocs.yml ``hooks:``): the site's tables that come from one source each,
filled in at build time so no figure is ever copied by hand.

- ``<!-- generated: combo-table -->``: the per-combination table of the bundled package,
  from its manifest (``training/combo_table.py``, the function ``./build.sh train`` used to
  write into the README);
- ``<!-- generated: gbm-table -->``: each combination's LightGBM, XGBoost and pair OOF figures;
- ``<!-- generated: nn-table -->``: the bundled neural members, their weights and proxy OOF
  figures, from the same manifest;
- ``<!-- include: PATH -->``: a Markdown file of the repository (e.g. ``bench/results.md``)
  with its headings moved one level down, so it sits under the page's own title.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PLUGINS = ROOT / ".build" / "plugins"  # the package's import name, as QGIS and the tests see it
if not (PLUGINS / "sentinel_landslide").exists():
    PLUGINS.mkdir(parents=True, exist_ok=True)
    (PLUGINS / "sentinel_landslide").symlink_to(ROOT)
if str(PLUGINS) not in sys.path:  # MkDocs restores sys.path after loading a hook: import the package now
    sys.path.insert(0, str(PLUGINS))
import sentinel_landslide  # noqa: E402, F401

COMBO = "<!-- generated: combo-table -->"
NN = "<!-- generated: nn-table -->"
GBM = "<!-- generated: gbm-table -->"
INCLUDE = re.compile(r"<!-- include: (\S+) -->")


def combo_table() -> str:
    from sentinel_landslide.models.package import load_package
    from sentinel_landslide.training.combo_table import markdown

    return markdown(load_package())


def nn_table() -> str:
    """The neural members of the bundled package: what they are, where they run, their proxy OOF."""
    from sentinel_landslide.models.package import load_package

    pkg = load_package()
    stats = pkg.manifest.get("metrics", {}).get("nn_proxy", {}).get("members", {})
    out = ["| member | what it is | combinations | weight | F1 | precision | recall | AUC | MFLOP/patch |",
           "|---|---|---|---|---|---|---|---|---|"]
    for m in pkg.manifest["members"]:
        if m["kind"] != "onnx":
            continue
        s = stats.get(m["name"], {})
        what = m.get("description", "").split(". Trained")[0]
        f = [s.get(k) for k in ("oof_f1", "oof_precision", "oof_recall", "oof_auc")]
        cells = ["-" if v is None else f"{v:.3f}" for v in f]
        flops = s.get("flops_per_patch") or m.get("flops_per_patch")
        out.append(f"| `{m['name']}` | {what} | {len(m.get('modes', []))} | {float(m['weight']):g} | "
                   + " | ".join(cells) + f" | {'-' if not flops else f'{flops / 1e6:.1f}'} |")
    return "\n".join(out) + "\n"


def gbm_table() -> str:
    """Each combination's LightGBM and XGBoost members and their pair, out-of-fold on the real
    features (``metrics.gbm_real_features`` of the bundled manifest)."""
    from sentinel_landslide.models.package import load_package

    g = load_package().manifest.get("metrics", {}).get("gbm_real_features", {})
    members, pairs = g.get("members", {}), g.get("ensembles", {})

    def f(v):
        return "-" if v is None else f"{v:.3f}"

    out = ["| combination | LightGBM F1 | XGBoost F1 | pair F1 | pair precision | pair recall | pair AUC | pair threshold |",
           "|---|---|---|---|---|---|---|---|"]
    for name, e in pairs.items():
        lgb, xgb = members.get(f"lgbm_{name}", {}), members.get(f"xgb_{name}", {})
        out.append(f"| `{name}` | {f(lgb.get('oof_f1'))} | {f(xgb.get('oof_f1'))} | {f(e.get('oof_f1'))} | "
                   f"{f(e.get('oof_precision'))} | {f(e.get('oof_recall'))} | {f(e.get('oof_auc'))} | "
                   f"{f(e.get('threshold'))} |")
    return "\n".join(out) + "\n"


def shifted(path: Path) -> str:
    """The file's text with every ATX heading one level deeper (fenced code untouched)."""
    out, fence = [], False
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.lstrip().startswith(("```", "~~~")):
            fence = not fence
        if not fence and re.match(r"#{1,5} ", line):
            line = "#" + line
        out.append(line)
    return "\n".join(out) + "\n"


def expand(markdown: str) -> str:
    if COMBO in markdown:
        markdown = markdown.replace(COMBO, combo_table())
    if NN in markdown:
        markdown = markdown.replace(NN, nn_table())
    if GBM in markdown:
        markdown = markdown.replace(GBM, gbm_table())

    def include(m):
        path = ROOT / m.group(1)
        if not path.is_file():
            raise FileNotFoundError(f"docs include: {m.group(1)} does not exist")
        return shifted(path)

    return INCLUDE.sub(include, markdown)


def on_page_markdown(markdown, page=None, config=None, files=None, **_):  # MkDocs event
    return expand(markdown)
