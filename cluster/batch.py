"""Many scenes on a Dask cluster: ``python -m sentinel_landslide.cli batch --scenes SCENES.csv
--out DIR [--scheduler ADDRESS | --workers N]``.

SCENES.csv has one row per scene: ``id`` and detect's inputs (``s2``, ``s2_mask``,
``s1_desc_post``, ``s1_desc_pre``, ``s1_asc_post``, ``s1_asc_pre``: paths, relative to the
CSV's folder, or GDAL URLs such as /vsicurl/ or /vsis3/), optionally ``s2_bands``,
``s1_bands`` ("1,2"), ``threshold``, ``min_valid``, ``extent`` ("xmin,ymin,xmax,ymax"),
``extent_epsg``, ``s2_scale``, ``s2_offset``, ``sar_units``, ``tta``.

Every scene is planned on the cluster, cut into bands of tile rows (tasks), and the client
writes ``DIR/<id>.gpkg`` (the fields of landslide:detect) once all its bands are in, then a
done-marker ``DIR/<id>.done.json`` holding a hash of the inputs, options and package.  A
rerun skips scenes whose marker matches.  ``DIR/index.csv`` and ``DIR/index.json`` list
every scene with its status (done, skipped, failed), counts and, for a failure, the message.
"""
from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import os
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..core.channels import S1_ROLES
from ..core.errors import InputError
from ..engine.align import InputLayer
from ..engine.detect import DetectOptions
from . import require_dask, tasks
from .client import default_band_rows, slots, task_options

S1_COLUMNS = {role.lower(): role for role in S1_ROLES}  # s1_desc_post -> S1_DESC_POST
INPUT_COLUMNS = ("s2", "s2_mask") + tuple(S1_COLUMNS)
OPTION_COLUMNS = ("s2_bands", "s1_bands", "threshold", "min_valid", "extent", "extent_epsg", "s2_scale", "s2_offset",
                  "sar_units", "tta")
INDEX_FIELDS = ("id", "status", "mode", "tiles", "scored", "flagged", "threshold", "bands", "seconds", "output",
                "message")
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
MARKER_VERSION = 1


@dataclass
class SceneSpec:
    id: str
    opts: DetectOptions | None
    error: str | None = None  # why the row cannot run (reported in the index)
    inputs: dict = field(default_factory=dict)  # column -> path as given (resolved)


def _path(value: str, base: Path) -> str:
    if value.startswith("/vsi") or "://" in value or os.path.isabs(value):
        return value
    return str((base / value).resolve())


def _ints(text: str, what: str) -> list[int]:
    try:
        return [int(v) for v in text.replace(";", ",").split(",") if v.strip()]
    except ValueError:
        raise InputError(f"{what} must be band numbers such as 1,2 (got '{text}')") from None


def scene_options(row: dict, base: Path) -> tuple[DetectOptions, dict]:
    """One CSV row -> (DetectOptions, inputs); InputError says what is wrong with the row."""
    from ..engine.units import S2_OFFSET_CHOICES, S2_SCALE_CHOICES, SAR_UNIT_CHOICES

    o = DetectOptions()
    inputs = {c: _path(row[c].strip(), base) for c in INPUT_COLUMNS if (row.get(c) or "").strip()}
    if "s2" in inputs:
        bands = _ints(row["s2_bands"], "s2_bands") if (row.get("s2_bands") or "").strip() else None
        o.s2 = InputLayer("S2", inputs["s2"], bands)
    s1_bands = _ints(row["s1_bands"], "s1_bands") if (row.get("s1_bands") or "").strip() else [1, 2]
    for col, role in S1_COLUMNS.items():
        if col in inputs:
            o.s1[role] = InputLayer(role, inputs[col], s1_bands)
    if "s2_mask" in inputs:
        if not hasattr(o, "s2_mask"):
            raise InputError("this version of the plugin has no cloud-mask input: leave s2_mask empty")
        o.s2_mask = InputLayer("S2_MASK", inputs["s2_mask"], None)
    get = {k: (row.get(k) or "").strip() for k in OPTION_COLUMNS}
    try:
        if get["threshold"]:
            o.threshold = float(get["threshold"])
        if get["min_valid"]:
            o.min_valid_fraction = float(get["min_valid"])
        if get["extent"]:
            vals = [float(v) for v in get["extent"].replace(";", ",").split(",")]
            if len(vals) != 4:
                raise ValueError
            wkt = ""
            if get["extent_epsg"]:
                from osgeo import osr

                s = osr.SpatialReference()
                s.ImportFromEPSG(int(get["extent_epsg"]))
                wkt = s.ExportToWkt()
            o.extent = tuple(vals) + (wkt,)
    except ValueError:
        raise InputError("threshold and min_valid must be numbers, extent four numbers xmin,ymin,xmax,ymax") from None
    for key, choices in (("s2_scale", S2_SCALE_CHOICES), ("s2_offset", S2_OFFSET_CHOICES),
                         ("sar_units", SAR_UNIT_CHOICES)):
        if get[key]:
            if get[key] not in choices:
                raise InputError(f"{key} must be one of {', '.join(choices)} (got '{get[key]}')")
            setattr(o, key, get[key])
    o.tta = get["tta"].lower() in ("1", "true", "yes")
    return o, inputs


def read_scenes(path: str | Path) -> list[SceneSpec]:
    """The rows of SCENES.csv; a row that cannot run carries its error (the others still run)."""
    path = Path(path)
    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        if not reader.fieldnames or "id" not in reader.fieldnames:
            raise InputError(f"{path} needs a header row with an 'id' column and input columns "
                             f"({', '.join(INPUT_COLUMNS)})")
        rows = list(reader)
    out, seen = [], set()
    for i, row in enumerate(rows, start=2):
        sid = (row.get("id") or "").strip()
        if not _ID.match(sid) or sid in seen:
            why = "is used twice" if sid in seen else "must be letters, digits, '_', '-' or '.' (it names the output)"
            out.append(SceneSpec(sid or f"line{i}", None, f"line {i}: the scene id '{sid}' {why}"))
            continue
        seen.add(sid)
        try:
            opts, inputs = scene_options(row, path.parent)
            out.append(SceneSpec(sid, opts, None, inputs))
        except InputError as exc:
            out.append(SceneSpec(sid, None, str(exc)))
    return out


def _stat(p: str):
    try:
        st = os.stat(p)
        return [st.st_size, st.st_mtime_ns]
    except OSError:  # a GDAL URL, or missing (then the run reports it)
        return None


def scene_key(spec: SceneSpec, digest: str) -> str:
    """Hash of what the scene's output depends on: inputs (path, size, modification time),
    options and the package (manifest checksum)."""
    o = spec.opts
    opts = {k: v for k, v in asdict(o).items() if k not in ("threads", "rows_per_batch", "tile_rows", "conventions")}
    blob = json.dumps({"v": MARKER_VERSION, "package": digest, "options": opts,
                       "files": {c: [p, _stat(p)] for c, p in sorted(spec.inputs.items())}},
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def is_done(out: Path, sid: str, key: str) -> dict | None:
    marker, grid = out / f"{sid}.done.json", out / f"{sid}.gpkg"
    try:
        m = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return m if m.get("key") == key and grid.is_file() else None


def _write_scene(out: Path, sid: str, key: str, result, model_name: str, opts=None, model_folder=None) -> dict:
    """The scene's grid, its run record (``<grid>.detect.json``: the review panel's "Adapt and
    re-score" reads the layers from it) and its done marker, in that order."""
    from ..engine.outputs import write_grid, write_run_record

    grid, tmp = out / f"{sid}.gpkg", out / f".{sid}.partial.gpkg"
    (out / f"{sid}.done.json").unlink(missing_ok=True)  # no stale marker while the grid is replaced
    write_grid(str(tmp), result, model_name)
    os.replace(tmp, grid)
    if opts is not None:
        write_run_record(str(grid), opts, model_folder)
    row = {"id": sid, "status": "done", "mode": result.mode, "tiles": len(result.records),
           "scored": sum(1 for r in result.records if r.status == "ok"), "flagged": result.flagged,
           "threshold": round(result.threshold, 4), "bands": result.timings.get("bands"),
           "seconds": round(result.timings["total"], 2), "output": grid.name, "message": ""}
    (out / f"{sid}.done.json").write_text(json.dumps(dict(row, key=key), indent=1), encoding="utf-8")
    return row


def write_index(out: Path, rows: list[dict]) -> None:
    with open(out / "index.csv", "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=INDEX_FIELDS, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in INDEX_FIELDS})
    (out / "index.json").write_text(json.dumps(rows, indent=1), encoding="utf-8")


def run_batch(scenes: list[SceneSpec], out_dir: str | Path, pkg, client, band_rows: int | None = None,
              task_threads: int | None = 1, log=None, on_progress=None, adapt=None) -> list[dict]:
    """Run every scene on ``client``'s cluster; returns (and writes) the index rows in the
    CSV's order.  ``on_progress(n_done_bands, n_submitted_bands)`` after each band.
    ``adapt(opts, pkg)``: ADAPT_TO_SCENE, a context manager yielding (package, log lines)
    (``training.scene_adapt.scene_adapted``, passed in by the command line: cluster does not
    import training); each scene is scored with its own adapted package, in a temporary
    folder the workers must see, removed when the run ends."""
    with contextlib.ExitStack() as packages:
        return _run_batch(scenes, out_dir, pkg, client, band_rows, task_threads, log, on_progress, adapt, packages)


def _run_batch(scenes, out_dir, pkg, client, band_rows, task_threads, log, on_progress, adapt, packages) -> list[dict]:
    distributed = require_dask()
    say = log or (lambda msg: None)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    folder = str(pkg.folder)
    digest = tasks.manifest_digest(folder)
    n_slots = slots(client)
    index: dict[int, dict] = {}  # CSV order -> index row (ids may be bad or repeated)
    state: dict[str, dict] = {}  # scene id -> key, plan, started, pending bands, results
    ac = distributed.as_completed(loop=client.loop)
    owner = {}  # future key -> (scene id, kind)
    for order, s in enumerate(scenes):
        if s.error:
            index[order] = {"id": s.id, "status": "failed", "message": s.error}
            say(f"{s.id}: failed: {s.error}")
            continue
        key = scene_key(s, digest + ("+scene" if adapt else ""))
        done = is_done(out, s.id, key)
        if done:
            index[order] = dict({k: done.get(k) for k in INDEX_FIELDS}, status="skipped",
                               message="outputs complete for the same inputs and package")
            say(f"{s.id}: skipped (done before)")
            continue
        topts = task_options(s.opts, task_threads)
        s_folder, s_digest, s_model = folder, digest, pkg.name
        if adapt is not None:  # ADAPT_TO_SCENE: this scene's own package
            try:
                spkg, lines = packages.enter_context(adapt(s.opts, pkg))
            except Exception as exc:  # noqa: BLE001 - a scene that cannot be read fails alone
                index[order] = {"id": s.id, "status": "failed", "message": str(exc) or type(exc).__name__}
                say(f"{s.id}: failed: {index[order]['message']}")
                continue
            for line in lines:
                say(f"{s.id}: {line}")
            s_folder, s_model = str(spkg.folder), spkg.name
            s_digest = tasks.manifest_digest(s_folder)
        state[s.id] = {"key": key, "opts": topts, "order": order, "t0": time.perf_counter(), "pending": set(),
                       "results": [], "futures": [], "folder": s_folder, "digest": s_digest, "model": s_model,
                       "scene_opts": s.opts}
        f = client.submit(tasks.plan_scene, topts, s_folder, s_digest, pure=False, priority=1000 - order)
        state[s.id]["futures"].append(f)
        owner[f.key] = (s.id, "plan")
        ac.add(f)
    n_bands = n_done = 0

    def fail(sid: str, exc: BaseException) -> None:
        st = state.pop(sid, None)
        if st is None:
            return
        client.cancel(st["futures"])
        msg = str(exc) or type(exc).__name__
        index[st["order"]] = {"id": sid, "status": "failed", "message": msg,
                      "seconds": round(time.perf_counter() - st["t0"], 2)}
        say(f"{sid}: failed: {msg}")

    for f in ac:
        sid, kind = owner.pop(f.key)
        st = state.get(sid)
        if st is None:  # the scene failed already; its other tasks were cancelled
            continue
        try:
            value = f.result()
        except Exception as exc:  # noqa: BLE001 - any task error fails this scene only
            fail(sid, exc)
            continue
        if kind == "plan":
            st["plan"] = value
            rows = band_rows or default_band_rows(value.n_rows, n_slots)
            for r0, r1 in tasks.bands_of(value.n_rows, rows):
                bf = client.submit(tasks.score_band, st["opts"], st["folder"], st["digest"], value.conventions, r0,
                                   r1, pure=False, priority=-st["order"])
                st["futures"].append(bf)
                st["pending"].add(bf.key)
                owner[bf.key] = (sid, "band")
                ac.add(bf)
                n_bands += 1
            continue
        st["pending"].discard(f.key)
        st["results"].append(value)
        n_done += 1
        if on_progress:
            on_progress(n_done, n_bands)
        if st["pending"]:
            continue
        try:
            result = tasks.assemble(st["plan"], st["results"], time.perf_counter() - st["t0"],
                                    st["opts"].min_valid_fraction)
            # the run record names the base package: a scene-adapted one lives in a temporary folder
            row = index[st["order"]] = _write_scene(out, sid, st["key"], result, st["model"], st["scene_opts"], folder)
            state.pop(sid)
            say(f"{sid}: done: {row['tiles']} tiles, {row['flagged']} flagged, {row['seconds']} s")
        except Exception as exc:  # noqa: BLE001 - e.g. no valid tile, or the output cannot be written
            fail(sid, exc)
    rows = [index[i] for i in sorted(index)]
    write_index(out, rows)
    return rows
