"""Model package format: validation, checksums, no pickles, clear errors."""
from __future__ import annotations

import json

import numpy as np
import pytest


def _edit(folder, fn):
    p = folder / "manifest.json"
    man = json.loads(p.read_text())
    fn(man)
    p.write_text(json.dumps(man))


def test_bundled_package_loads_and_declares_what_it_was_trained_on(package):
    man = package.manifest
    from sentinel_landslide.core.channels import COMBINATIONS

    assert man["schema_version"] == 2
    assert man["patch_size"] == 64 and man["pixel_size_m"] == 10
    assert man["s2_convention"]["offset"] == 1000 and man["sar_units"] == "dB"
    assert package.available_modes() == [c.name for c in COMBINATIONS]  # all 17 input combinations
    for mode in package.available_modes():
        assert 0 < package.threshold(mode) < 1
    assert any("Zindi" in a for a in man["attribution"])
    for m in man["members"]:
        assert len(m["sha256"]) == 64
        assert not m["file"].endswith((".pkl", ".pickle", ".joblib"))


def test_tampered_member_file_fails_its_checksum(package_copy):
    from sentinel_landslide.models.package import PackageError, load_package

    man = json.loads((package_copy / "manifest.json").read_text())
    f = package_copy / man["members"][0]["file"]
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 0x01
    f.write_bytes(bytes(data))
    with pytest.raises(PackageError, match="fails its checksum"):
        load_package(package_copy)


def test_missing_member_file(package_copy):
    from sentinel_landslide.models.package import PackageError, load_package

    man = json.loads((package_copy / "manifest.json").read_text())
    (package_copy / man["members"][-1]["file"]).unlink()
    with pytest.raises(PackageError, match="is missing"):
        load_package(package_copy)


@pytest.mark.parametrize("edit, message", [
    (lambda m: m.update(schema_version=99), "schema version 99 is not supported"),
    (lambda m: m["channels"].reverse(), "expects channels"),
    (lambda m: m["members"][0].update(file="model.pkl"), "pickle"),
    (lambda m: m["members"][0].update(file="../evil.txt"), "plain file name"),
    (lambda m: m["members"][0].update(kind="sklearn"), "unknown kind"),
    (lambda m: m["modes"]["s2+desc+asc"].update(threshold=1.5), "must lie in"),
    (lambda m: m["modes"].update(winter={"threshold": 0.5}), "unknown mode 'winter'"),
    (lambda m: m.pop("metrics"), "'metrics'"),
    (lambda m: m["members"][0].update(modes=["winter"]), "does not define"),
])
def test_malformed_manifests_are_refused_with_a_reason(package_copy, edit, message):
    from sentinel_landslide.models.package import PackageError, load_package

    _edit(package_copy, edit)
    with pytest.raises(PackageError, match=message):
        load_package(package_copy)


def test_not_json_and_not_a_package(tmp_path, package_copy):
    from sentinel_landslide.models.package import PackageError, load_package

    with pytest.raises(PackageError, match="no manifest.json"):
        load_package(tmp_path)
    (package_copy / "manifest.json").write_text("{ not json")
    with pytest.raises(PackageError, match="not valid JSON"):
        load_package(package_copy)


def test_member_weights_average(package):
    """The ensemble probability is the weighted mean of the members' probabilities."""
    from sentinel_landslide.core.features import patch_features
    from sentinel_landslide.models.ensemble import Ensemble

    rng = np.random.default_rng(5)
    x = np.concatenate([rng.normal(1600, 150, (4, 4, 64, 64)), rng.normal(-12, 3, (4, 8, 64, 64))], axis=1).astype(np.float32)
    valid = np.ones((4, 64, 64), bool)
    ens = Ensemble(package, "combined")
    out = ens.predict(x, valid, patch_features(x, valid))
    stack = np.stack([out[m] for m in ens.member_names])
    assert np.allclose(out["prob"], (ens.weights[:, None] * stack).sum(0) / ens.weights.sum())
    assert ((out["prob"] >= 0) & (out["prob"] <= 1)).all()


def test_pipelined_batches_score_like_one_at_a_time(package):
    """Batches submitted back to back on the lane threads give exactly the one-at-a-time
    scores, in order; close() ends the lane threads."""
    import threading

    from sentinel_landslide.core.features import patch_features
    from sentinel_landslide.models.ensemble import Ensemble

    rng = np.random.default_rng(8)
    batches = []
    for n in (70, 33, 90):
        x = np.concatenate([rng.normal(1600, 150, (n, 4, 64, 64)), rng.normal(-12, 3, (n, 8, 64, 64))], axis=1)
        x = x.astype(np.float32)
        v = np.ones((n, 64, 64), bool)
        batches.append((x, v, patch_features(x, v)))
    serial = Ensemble(package, "combined", threads=1)
    want = [serial.predict(*b) for b in batches]
    ens = Ensemble(package, "combined", threads=2)
    assert ens.lanes == 2
    collects = [ens.submit(*b) for b in batches]  # all in flight before any is collected
    for got, w in zip([c() for c in collects], want):
        assert set(got) == set(w)
        assert np.array_equal(got["scored_by"], w["scored_by"])
        for k in set(w) - {"scored_by"}:
            assert np.allclose(got[k], w[k], rtol=0, atol=1e-6), k
    # the stream helper run_detection scores with: same scores, input order, {} for an
    # empty batch; closed early (a cancel) it still waits for the slices it queued
    stream = [(i, *b) for i, b in enumerate(batches)]
    stream.insert(1, ("empty", None, None, None))
    got = list(ens.score_stream(iter(stream), depth=2))
    assert [k for k, _ in got] == [0, "empty", 1, 2] and got[1][1] == {}
    for (_k, g), w in zip([x for x in got if x[0] != "empty"], want):
        assert np.allclose(g["prob"], w["prob"], rtol=0, atol=1e-6)
    collected = []
    submit = ens.submit

    def spying_submit(*args):
        collect = submit(*args)
        k = len(collected)
        collected.append(False)

        def spy():
            collected[k] = True
            return collect()
        return spy

    ens.submit = spying_submit
    gen = ens.score_stream(iter(stream), depth=3)
    assert next(gen)[0] == 0
    gen.close()  # batch 1 (33 patches) was queued behind batch 0 and must be waited for
    assert collected == [True, True]
    del ens.submit
    assert any(t.name.startswith("landslide-lane") for t in threading.enumerate())
    ens.close()
    assert not any(t.name.startswith("landslide-lane") for t in threading.enumerate())


def test_missing_dependency_message_names_the_package(monkeypatch):
    import sys

    from sentinel_landslide.models import ensemble

    monkeypatch.setitem(sys.modules, "xgboost", None)  # makes `import xgboost` fail
    with pytest.raises(ensemble.MissingDependency, match="Missing Python package.*: xgboost-cpu"):
        ensemble.require("xgboost")


def test_every_missing_package_is_named_at_once_with_one_command(monkeypatch, package, tmp_path):
    import sys

    from sentinel_landslide.models import deps, ensemble

    assert deps.missing() == []  # this environment has them all
    monkeypatch.setitem(sys.modules, "xgboost", None)
    monkeypatch.setitem(sys.modules, "lightgbm", None)
    assert deps.missing() == ["lightgbm", "xgboost"]
    with pytest.raises(ensemble.MissingDependency) as err:
        ensemble.Ensemble(package, "combined")
    text = str(err.value)
    assert "lightgbm, xgboost-cpu" in text
    cmd = [line.strip() for line in text.splitlines() if " -m sentinel_landslide.deps install" in line]
    assert len(cmd) == 1 and cmd[0].endswith("-m sentinel_landslide.deps install")  # required only: no flags
    assert "Install / repair dependencies" in text  # the button comes first

    # inside QGIS sys.executable can be the QGIS binary: the python beside the prefix is named
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "python3").write_text("")
    monkeypatch.setattr(sys, "executable", "/Applications/QGIS.app/Contents/MacOS/QGIS")
    monkeypatch.setattr(sys, "exec_prefix", str(tmp_path))
    assert deps.python_executable() == str(tmp_path / "bin" / "python3")
    monkeypatch.setattr(sys, "executable", "/usr/bin/python3.11")
    assert deps.python_executable() == "/usr/bin/python3.11"
