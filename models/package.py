"""The model package: a folder with ``manifest.json`` plus ONNX / LightGBM text /
XGBoost JSON member files.  Never pickle.

``load_package`` validates the manifest against the schema below and verifies every
member file's SHA-256, raising ``PackageError`` with a message an analyst can act on.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from ..core.channels import CHANNEL_NAMES, COMBINATION_BY_NAME, MODE_SOURCES

SCHEMA_VERSION = 1
MEMBER_KINDS = ("lightgbm", "xgboost", "onnx")
# the three modes of earlier versions, then every input combination by name
MODES = tuple(MODE_SOURCES) + tuple(COMBINATION_BY_NAME)
BUNDLED = Path(__file__).resolve().parent / "bundled"


class PackageError(Exception):
    """The model package is missing, malformed, tampered with or incompatible."""


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass
class ModelPackage:
    folder: Path
    manifest: dict

    @property
    def name(self) -> str:
        return f"{self.manifest['name']} {self.manifest['version']}"

    @property
    def patch_size(self) -> int:
        return int(self.manifest["patch_size"])

    @property
    def s2_offset(self) -> float:
        return float(self.manifest["s2_convention"]["offset"])

    @property
    def s2_scale(self) -> float:
        return float(self.manifest["s2_convention"]["scale"])

    def threshold(self, mode: str) -> float:
        return float(self.manifest["modes"][mode]["threshold"])

    def members_for(self, mode: str) -> list[dict]:
        return [m for m in self.manifest["members"] if mode in m["modes"]]

    def available_modes(self) -> list[str]:
        return [m for m in MODES if m in self.manifest["modes"] and self.members_for(m)]

    def path(self, member: dict) -> Path:
        return self.folder / member["file"]


def _req(d: dict, key: str, where: str, typ=None):
    if key not in d:
        raise PackageError(f"manifest.json: {where} lacks the required field '{key}'")
    if typ is not None and not isinstance(d[key], typ):
        raise PackageError(f"manifest.json: {where}.{key} has the wrong type")
    return d[key]


def validate_manifest(man: dict) -> None:
    """Raise PackageError describing the first problem found."""
    if not isinstance(man, dict):
        raise PackageError("manifest.json is not a JSON object")
    ver = _req(man, "schema_version", "manifest", int)
    if ver != SCHEMA_VERSION:
        raise PackageError(
            f"model package schema version {ver} is not supported by this plugin "
            f"(supports {SCHEMA_VERSION}); update the plugin or use a matching package"
        )
    for key, typ in (("name", str), ("version", str), ("patch_size", int), ("pixel_size_m", (int, float)),
                     ("channels", list), ("s2_convention", dict), ("sar_units", str),
                     ("normalisation", dict), ("modes", dict), ("members", list), ("metrics", dict)):
        _req(man, key, "manifest", typ)
    names = [c.get("name") for c in man["channels"]]
    if tuple(names) != CHANNEL_NAMES:
        raise PackageError(
            "the package expects channels " + ", ".join(map(str, names)) +
            " but this plugin provides " + ", ".join(CHANNEL_NAMES)
        )
    if man["sar_units"] != "dB":
        raise PackageError("the package must declare SAR in dB")
    for k in ("scale", "offset"):
        _req(man["s2_convention"], k, "s2_convention", (int, float))
    for mode, spec in man["modes"].items():
        if mode not in MODES:
            raise PackageError(f"manifest.json: unknown mode '{mode}' (known: {', '.join(MODES)})")
        t = _req(spec, "threshold", f"modes.{mode}", (int, float))
        if not 0.0 < t < 1.0:
            raise PackageError(f"manifest.json: modes.{mode}.threshold must lie in (0, 1)")
    if not man["members"]:
        raise PackageError("manifest.json: the package has no members")
    seen = set()
    for i, m in enumerate(man["members"]):
        where = f"members[{i}]"
        name = _req(m, "name", where, str)
        if name in seen:
            raise PackageError(f"manifest.json: member name '{name}' is used twice")
        seen.add(name)
        where = f"member '{name}'"
        kind = _req(m, "kind", where, str)
        if kind not in MEMBER_KINDS:
            raise PackageError(f"manifest.json: {where} has unknown kind '{kind}'")
        f = _req(m, "file", where, str)
        if "/" in f or "\\" in f or f.startswith("."):
            raise PackageError(f"manifest.json: {where} file must be a plain file name in the package folder")
        if f.endswith((".pkl", ".pickle", ".joblib")):
            raise PackageError(f"manifest.json: {where} is a pickle; packages never contain pickles")
        _req(m, "sha256", where, str)
        modes = _req(m, "modes", where, list)
        for mode in modes:
            if mode not in man["modes"]:
                raise PackageError(f"manifest.json: {where} runs in mode '{mode}' which the package does not define")
        w = _req(m, "weight", where, (int, float))
        if w < 0:
            raise PackageError(f"manifest.json: {where} weight must be >= 0")
        inputs = _req(m, "inputs", where, (dict, list))
        if kind in ("lightgbm", "xgboost"):
            feats = _req(inputs, "features", f"{where}.inputs", list)
            if not feats:
                raise PackageError(f"manifest.json: {where} declares no features")
        else:
            if not isinstance(inputs, list) or not inputs:
                raise PackageError(f"manifest.json: {where}.inputs must list the network's input tensors")
            for t in inputs:
                _req(t, "name", f"{where}.inputs", str)
                if "channels" in t:
                    bad = [c for c in t["channels"] if c not in CHANNEL_NAMES]
                    if bad:
                        raise PackageError(f"manifest.json: {where} uses unknown channels {bad}")
                    if t.get("norm", "none") not in ("zscore", "robust", "none"):
                        raise PackageError(f"manifest.json: {where} has unknown normalisation {t.get('norm')}")
                elif "indices" not in t:
                    raise PackageError(f"manifest.json: {where} input '{t['name']}' has neither channels nor indices")


def load_package(folder: str | Path | None = None, verify: bool = True) -> ModelPackage:
    """Load (and by default checksum-verify) the package in ``folder`` (default: bundled)."""
    folder = Path(folder) if folder else BUNDLED
    mpath = folder / "manifest.json"
    if not folder.is_dir():
        raise PackageError(f"model package folder '{folder}' does not exist")
    if not mpath.is_file():
        raise PackageError(f"'{folder}' is not a model package: it has no manifest.json")
    try:
        man = json.loads(mpath.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise PackageError(f"manifest.json in '{folder}' is not valid JSON ({exc})") from None
    validate_manifest(man)
    pkg = ModelPackage(folder, man)
    if verify:
        for m in man["members"]:
            p = pkg.path(m)
            if not p.is_file():
                raise PackageError(f"model package member file '{m['file']}' is missing from '{folder}'")
            digest = sha256_file(p)
            if digest != m["sha256"]:
                raise PackageError(
                    f"model package member file '{m['file']}' fails its checksum: the package is "
                    "corrupt or was modified after it was built; reinstall or rebuild it"
                )
    return pkg


def write_manifest(folder: str | Path, manifest: dict) -> Path:
    """Fill in member checksums, validate, and write ``manifest.json``."""
    folder = Path(folder)
    for m in manifest["members"]:
        m["sha256"] = sha256_file(folder / m["file"])
    validate_manifest(manifest)
    path = folder / "manifest.json"
    path.write_text(json.dumps(manifest, indent=1, sort_keys=False) + "\n", encoding="utf-8")
    return path


# Per-channel statistics of the competition set (../shared/data/README.md), the
# normalisation a package declares; training copies them from here into the manifest.
COMPETITION_NORMALISATION = {
    "robust": {
        "q05": [1054, 1141, 1108, 1432, -23.8, -43.1, -7.9, -11.2, -20.9, -40.7, -3.8, -7.6],
        "q50": [1511, 1656, 1560, 2975, -10.2, -16.6, -0.28, -0.08, -11.5, -17.8, 0.39, -0.06],
        "q95": [4000, 3942, 3864, 5508, 2.5, -5.0, 3.7, 5.1, -0.03, -7.1, 5.8, 6.0],
    },
    "zscore": {
        "mean": [1832.4, 1918.6, 1858.4, 3151.3, -10.41, -18.56, -0.881, -0.712, -11.26, -19.87, 0.521, -0.268],
        "std": [1331.4, 1260.7, 1266.0, 1453.3, 8.132, 10.410, 4.175, 4.953, 6.353, 9.743, 2.910, 4.425],
    },
}

ZINDI_ATTRIBUTION = (
    "Contains data from the Zindi/ITU Classification for Landslide Detection challenge (CC-BY-SA 4.0)"
)


def new_manifest(name: str, version: str, description: str) -> dict:
    """A manifest skeleton with the competition layout; members, modes, metrics to add."""
    from ..core.channels import CHANNELS, PATCH_SIZE, PIXEL_SIZE_M

    return {
        "schema_version": SCHEMA_VERSION,
        "name": name,
        "version": version,
        "description": description,
        "attribution": [ZINDI_ATTRIBUTION],
        "licence": "CC-BY-SA-4.0 (weights derived from CC-BY-SA data)",
        "patch_size": PATCH_SIZE,
        "pixel_size_m": PIXEL_SIZE_M,
        "channels": [{"index": c.index, "name": c.name, "source": c.source, "units": c.units} for c in CHANNELS],
        "s2_convention": {"scale": 10000, "offset": 1000,
                          "note": "reflectance x 10000 with the +1000 L2A offset of processing baseline >= 04.00"},
        "sar_units": "dB",
        "normalisation": json.loads(json.dumps(COMPETITION_NORMALISATION)),
        "modes": {},
        "members": [],
        "metrics": {},
    }
