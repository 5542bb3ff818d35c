"""Find Qt5-only spellings in the QGIS-facing code, so the plugin keeps loading in QGIS 4
(Qt6: scoped enums only, no exec_, QAction in QtGui, no QRegExp, QgsField takes QMetaType).

``python -m sentinel_landslide.scripts.qt5_scan`` prints each finding (exit 1 if any); the test suite runs
``scan_tree`` over plugin.py, algorithms/, gui/, rendering/ and scripts/.  rendering/compat.py
is the one place that may spell the Qt5 forms, as fallbacks for older QGIS."""
from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHELL = ("plugin.py", "algorithms", "gui", "rendering", "scripts")
ALLOWED_FILES = {"rendering/compat.py", "scripts/qt5_scan.py"}

# an enum value reached straight from its class (Qt.AlignLeft, QgsWkbTypes.PolygonGeometry,
# QImage.Format_ARGB32): a CamelCase member that is neither called, nor an attribute
# holder (Qt.AlignmentFlag.AlignLeft), nor a constant (QgsProcessing.TEMPORARY_OUTPUT)
UNSCOPED = re.compile(r"\b(Qt|Qgs[A-Za-z0-9]*|Q[A-Z][A-Za-z0-9]*)\.([A-Z][A-Za-z0-9]*_?[A-Za-z0-9_]*)\b(?![.(\w])")
PATTERNS = {
    "unscoped enum": UNSCOPED,
    "exec_()": re.compile(r"\.exec_\("),
    "QRegExp": re.compile(r"\bQRegExp\b"),
    "QVariant type enum": re.compile(r"\bQVariant\.[A-Z]\w*"),
    "PyQt5 import": re.compile(r"^\s*(from|import)\s+PyQt5\b", re.M),
}
MOVED_TO_QTGUI = {"QAction", "QActionGroup", "QShortcut"}


def _unfallbacked_qtwidgets_imports(text: str) -> list[tuple[int, str]]:
    """QAction & co. imported from QtWidgets outside a try/except that falls back to QtGui."""
    try:
        tree = ast.parse(text)
    except SyntaxError:
        return []
    guarded: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Try):
            for sub in [*node.body, *(h for hd in node.handlers for h in hd.body)]:
                for n in ast.walk(sub):
                    guarded.add(id(n))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").endswith("QtWidgets") and id(node) not in guarded:
            for a in node.names:
                if a.name in MOVED_TO_QTGUI:
                    out.append((node.lineno, f"{a.name} from QtWidgets"))
    return out


def scan_text(text: str) -> list[tuple[int, str, str]]:
    """(line number, rule, snippet) for each Qt5-only spelling in a module's source."""
    found = []
    for lineno, line in enumerate(text.splitlines(), 1):
        code = line.split("#", 1)[0]  # comments may name the old spellings
        for rule, rx in PATTERNS.items():
            for m in rx.finditer(code):
                if rule == "unscoped enum" and (m.group(2).isupper() or m.group(1) == "QVariant"):  # own rule
                    continue
                found.append((lineno, rule, m.group(0).strip()))
    for lineno, what in _unfallbacked_qtwidgets_imports(text):
        found.append((lineno, "QAction from QtWidgets without a QtGui fallback", what))
    return found


def shell_files(root: Path = ROOT) -> list[Path]:
    files = []
    for name in SHELL:
        p = root / name
        files += [p] if p.is_file() else sorted(p.rglob("*.py"))
    return [f for f in files if f.relative_to(root).as_posix() not in ALLOWED_FILES]


def scan_tree(root: Path = ROOT) -> list[str]:
    return [f"{p.relative_to(root)}:{n}: {rule}: {snippet}"
            for p in shell_files(root) for n, rule, snippet in scan_text(p.read_text(encoding="utf-8"))]


if __name__ == "__main__":
    hits = scan_tree()
    print("\n".join(hits) or "no Qt5-only spellings")
    sys.exit(1 if hits else 0)
