"""No arrow points up: each package imports only the layers below it (engine and models
are siblings that never import each other).  Read from the source, no import needed."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# package -> the packages of ours it may import (besides itself)
ALLOWED = {
    "core": set(),
    "engine": {"core"},
    "models": {"core"},
    "training": {"core", "engine", "models"},
    "pipeline": {"core", "engine", "models"},
    "cluster": {"core", "engine", "models", "pipeline"},
    "fetch": {"core", "engine"},
    "rendering": {"core", "engine", "models"},
    "deps": {"core", "models"},
    "algorithms": {"core", "engine", "models", "training", "pipeline", "rendering", "cluster", "fetch"},
    "gui": {"core", "engine", "models", "training", "pipeline", "rendering", "algorithms", "deps"},
}
TOP = set(ALLOWED) | {"cli", "plugin", "bench", "scripts", "tests"}


def _imports(path: Path) -> set[str]:
    """Our top-level packages a module imports (relative or absolute)."""
    rel = path.relative_to(ROOT).with_suffix("").parts
    pkg = rel[:-1] if rel[-1] != "__init__" else rel[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = list(pkg[:len(pkg) - (node.level - 1)]) if node.level > 1 else list(pkg)
                parts = base + (node.module.split(".") if node.module else [])
                if parts:
                    found.add(parts[0])
                elif node.module is None:  # "from .. import x" at the root
                    found.update(a.name.split(".")[0] for a in node.names)
            elif node.module and node.module.startswith("sentinel_landslide."):
                found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("sentinel_landslide."):
                    found.add(a.name.split(".")[1])
    return found & TOP


def test_no_arrow_points_up():
    bad = []
    for layer, allowed in ALLOWED.items():
        files = [ROOT / f"{layer}.py"] if (ROOT / f"{layer}.py").exists() else sorted((ROOT / layer).rglob("*.py"))
        for f in files:
            for dep in _imports(f) - allowed - {layer}:
                bad.append(f"{f.relative_to(ROOT)} imports {dep}")
    assert not bad, "upward or sideways imports:\n" + "\n".join(bad)


def test_engine_models_core_do_not_import_qgis():
    bad = []
    for layer in ("core", "engine", "models", "training", "pipeline.py"):
        for f in ([ROOT / layer] if layer.endswith(".py") else sorted((ROOT / layer).rglob("*.py"))):
            for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
                names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                         else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
                bad += [f"{f.relative_to(ROOT)}: {n}" for n in names if n.split(".")[0] == "qgis"]
    assert not bad, bad


def test_the_checker_sees_an_upward_import(tmp_path, monkeypatch):
    """The rule would catch a violation (guards against a checker that finds nothing)."""
    f = ROOT / "engine" / "detect.py"
    assert "core" in _imports(f)
    assert "models" not in _imports(f)


def test_the_benchmark_modules_import_one_way():
    """bench/: no module imports one that imports it back, even inside a function (run ->
    results -> common; results renders the other modules' sections through callables)."""
    graph: dict = {}
    for f in sorted((ROOT / "bench").glob("*.py")):
        deps = set()
        for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                deps.update([node.module.split(".")[0]] if node.module else [a.name for a in node.names])
        graph[f.stem] = deps & {p.stem for p in (ROOT / "bench").glob("*.py")}
    assert graph["results"] <= {"common"}, graph["results"]

    def cycle_from(node, path):
        if node in path:
            return path[path.index(node):] + [node]
        for d in graph.get(node, ()):
            c = cycle_from(d, path + [node])
            if c:
                return c
        return None

    cycles = [c for n in graph if (c := cycle_from(n, []))]
    assert not cycles, "import cycles in bench/: " + "; ".join(" -> ".join(c) for c in cycles)
