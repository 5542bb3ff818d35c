"""Which of the plugin's packages are installed, missing or at a wrong version, and where each
was found.  Reads distribution metadata only (nothing is imported), so it is cheap."""
from __future__ import annotations

import importlib.metadata as md
import re
from dataclasses import dataclass
from pathlib import Path

from ..core.deps import FEATURES, Requirement, gpu_available_here, requirements

INSTALLED, MISSING, WRONG, UNAVAILABLE = "installed", "missing", "wrong version", "not for this platform"


@dataclass
class Line:
    req: Requirement
    state: str
    version: str | None = None
    folder: str | None = None

    @property
    def feature(self) -> str:
        return FEATURES[self.req.feature]


def _release(v: str) -> tuple:
    return tuple(int(x) for x in re.findall(r"\d+", v.split("+")[0])[:4]) or (0,)


def satisfies(version: str, spec: str) -> bool:
    """``version`` within ``spec`` (">=1.17,<2"; numeric releases, enough for our ranges)."""
    v = _release(version)
    for part in filter(None, (p.strip() for p in spec.split(","))):
        op, want = re.match(r"(==|!=|>=|<=|>|<|~=)?\s*(.+)", part).groups()
        w = _release(want)
        n = max(len(v), len(w))
        a, b = v + (0,) * (n - len(v)), w + (0,) * (n - len(w))
        ok = {None: a == b, "==": a == b, "!=": a != b, ">=": a >= b, "<=": a <= b, ">": a > b, "<": a < b,
              "~=": a >= b and a[:len(w) - 1] == w[:-1]}[op]
        if not ok:
            return False
    return True


def find(names, path=None):
    """The first installed distribution among ``names`` on ``path`` (default sys.path)."""
    for name in names:
        for d in md.distributions(name=name, path=path) if path is not None else md.distributions(name=name):
            return d
    return None


def status(features=None, path=None, reqs=None) -> list[Line]:
    """One line per requirement of ``features`` (default: all; or the ``reqs`` given)."""
    out = []
    for r in (reqs if reqs is not None else requirements(*(features or ()))):
        if r.feature == "gpu" and not gpu_available_here():
            out.append(Line(r, UNAVAILABLE))
            continue
        d = find((r.pip,) if r.feature == "gpu" else (r.pip,) + r.also, path)
        if d is None:
            out.append(Line(r, MISSING))
            continue
        folder = str(Path(str(d.locate_file(""))).resolve())
        out.append(Line(r, INSTALLED if satisfies(d.version, r.spec) else WRONG, d.version, folder))
    return out


def missing_required(path=None) -> list[Line]:
    return [ln for ln in status(["required"], path) if ln.state != INSTALLED]
