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

from ..core.channels import CHANNEL_NAMES, COMBINATION_BY_NAME, LEGACY_MODE_NAMES, OPTICAL, combination_name
from ..core.features import FEATURE_CHANNELS

# 2: a package's modes are combination names ("s2", "s2+desc", "desc_post", ...; see
# core/channels.py COMBINATIONS).  1: the three legacy modes "combined", "optical", "sar",
# read transparently (``migrate_manifest``).
SCHEMA_VERSION = 2
SUPPORTED_SCHEMAS = (1, 2)
MEMBER_KINDS = ("lightgbm", "xgboost", "onnx")
MODES = tuple(COMBINATION_BY_NAME)
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

    def has_mode(self, mode: str) -> bool:
        """Whether the package defines this combination (a legacy mode name counts as its combination)."""
        return combination_name(mode) in self.manifest["modes"]

    def threshold(self, mode: str) -> float:
        return float(self.manifest["modes"][combination_name(mode)]["threshold"])

    def members_for(self, mode: str) -> list[dict]:
        name = combination_name(mode)
        return [m for m in self.manifest["members"] if name in m["modes"]]

    def available_modes(self) -> list[str]:
        """The combinations the package scores, in the order of COMBINATIONS."""
        return [m for m in MODES if m in self.manifest["modes"] and self.members_for(m)]

    def path(self, member: dict) -> Path:
        return self.folder / member["file"]


def member_channels(member: dict) -> set:
    """The channels of the 12-channel layout a (validated) member reads: its GBM features'
    channels (core/features.py FEATURE_CHANNELS), or its network inputs' channels (the
    optical indices: the four optical bands)."""
    inputs = member["inputs"]
    if member["kind"] in ("lightgbm", "xgboost"):
        return set().union(*(FEATURE_CHANNELS[f] for f in inputs["features"]))
    used = {CHANNEL_NAMES.index(c) for t in inputs for c in t.get("channels", [])}
    return used | (set(OPTICAL) if any("indices" in t for t in inputs) else set())


def _req(d: dict, key: str, where: str, typ=None):
    if key not in d:
        raise PackageError(f"manifest.json: {where} lacks the required field '{key}'")
    if typ is not None and not isinstance(d[key], typ):
        raise PackageError(f"manifest.json: {where}.{key} has the wrong type")
    return d[key]


def _rename_keys(d: dict) -> dict:
    return {LEGACY_MODE_NAMES.get(k, k): v for k, v in d.items()}


def migrate_manifest(man: dict) -> dict:
    """A schema-1 manifest (modes "combined", "optical", "sar") as schema 2: the mode names
    become combination names in ``modes``, every member's ``modes`` and the per-mode
    records of ``metrics`` (``*.ensembles``, ``*.total_flops_per_patch``).  A legacy name
    in a schema-2 manifest is mapped the same way (they are unambiguous).  Returns the
    manifest itself when there is nothing to map, else a migrated copy."""
    if not isinstance(man, dict) or man.get("schema_version") not in SUPPORTED_SCHEMAS:
        return man
    if man.get("schema_version") == SCHEMA_VERSION and not _has_legacy_names(man):
        return man
    was = man.get("schema_version")
    man = json.loads(json.dumps(man))
    if isinstance(man.get("modes"), dict):
        man["modes"] = _rename_keys(man["modes"])
    for m in man.get("members", []) if isinstance(man.get("members"), list) else []:
        if isinstance(m, dict) and isinstance(m.get("modes"), list):
            m["modes"] = [LEGACY_MODE_NAMES.get(x, x) for x in m["modes"]]
    for rec in (man.get("metrics") or {}).values() if isinstance(man.get("metrics"), dict) else []:
        if not isinstance(rec, dict):
            continue
        for key in ("ensembles", "total_flops_per_patch"):
            if isinstance(rec.get(key), dict):
                rec[key] = _rename_keys(rec[key])
        for e in (rec.get("ensembles") or {}).values():
            if isinstance(e, dict) and isinstance(e.get("mode"), str):
                e["mode"] = LEGACY_MODE_NAMES.get(e["mode"], e["mode"])
    man["schema_version"] = SCHEMA_VERSION
    if was == 1:
        man["migrated_from_schema"] = 1
    return man


def _has_legacy_names(man: dict) -> bool:
    text = json.dumps([man.get("modes"), [m.get("modes") for m in man.get("members", []) if isinstance(m, dict)],
                       man.get("metrics")])
    return any(f'"{old}"' in text for old in LEGACY_MODE_NAMES)


def validate_manifest(man: dict) -> None:
    """Raise PackageError describing the first problem found (a schema-1 manifest is
    validated as its schema-2 migration)."""
    if not isinstance(man, dict):
        raise PackageError("manifest.json is not a JSON object")
    ver = _req(man, "schema_version", "manifest", int)
    if ver not in SUPPORTED_SCHEMAS:
        raise PackageError(
            f"model package schema version {ver} is not supported by this plugin "
            f"(supports {', '.join(map(str, SUPPORTED_SCHEMAS))}); update the plugin or use a matching package"
        )
    man = migrate_manifest(man)
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
            raise PackageError(f"manifest.json: unknown mode '{mode}' (known: the combinations "
                               f"{', '.join(MODES)})")
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
            unknown = [f for f in feats if f not in FEATURE_CHANNELS]
            if unknown:
                raise PackageError(f"manifest.json: {where} uses features this plugin does not compute: {unknown[:5]}")
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
    man = migrate_manifest(man)
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
    """Fill in member checksums, validate, and write ``manifest.json`` (always the current
    schema: a schema-1 manifest is migrated in place)."""
    folder = Path(folder)
    migrated = migrate_manifest(manifest)
    if migrated is not manifest:
        manifest.clear()
        manifest.update(migrated)
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
