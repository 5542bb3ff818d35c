"""training/compare_packages.py on two hand-made manifests: the tolerance rule, the refusal to
compare different training runs, and the exit status."""
from __future__ import annotations

import json

import pytest


def _package(folder, f1: float, auc: float, flops: int, seed: int = 42):
    folder.mkdir()
    ens = {"s2+desc+asc": {"members": ["lgbm_x", "nn_a"], "at_threshold": {"f1": f1, "auc": auc},
                           "at_0.5": {"f1": f1 - 0.01}},
           "desc": {"members": ["lgbm_desc"], "at_threshold": {"f1": 0.7, "auc": 0.9}, "at_0.5": {"f1": 0.7}}}
    nn = {"provenance": {"source_sha256": "abc", "folds": 3, "seed": seed, "n": 100, "epochs": 6},
          "members": {"nn_a": {"oof_f1": 0.6, "oof_auc": 0.9, "flops_per_patch": flops}},
          "ensembles": ens, "total_flops_per_patch": {"s2+desc+asc": flops}}
    (folder / "manifest.json").write_text(json.dumps({"metrics": {"nn_proxy": nn}}))
    return folder


def test_holds_within_the_tolerance_and_not_beyond(tmp_path):
    from sentinel_landslide.training.compare_packages import compare, main, markdown

    base = _package(tmp_path / "w2", 0.8714, 0.9804, 415_000_000)
    close = _package(tmp_path / "w1", 0.8690, 0.9800, 128_000_000)
    far = _package(tmp_path / "bad", 0.8600, 0.9804, 128_000_000)
    r = compare(base, close)
    assert r["holds"] and [m["mode"] for m in r["modes"]] == ["s2+desc+asc"]  # modes without networks left out
    assert r["modes"][0]["mflop"] == pytest.approx([415.0, 128.0])
    assert not compare(base, far)["holds"]
    assert compare(base, far, tol=0.02)["holds"]
    assert "| s2+desc+asc | 415.0 -> 128.0 | 0.8714 -> 0.8690 |" in "\n".join(markdown(r, "w2", "w1"))
    assert main([str(base), str(close)]) == 0 and main([str(base), str(far)]) == 1


def test_different_training_runs_are_not_compared(tmp_path, capsys):
    from sentinel_landslide.training.compare_packages import compare, main

    base = _package(tmp_path / "a", 0.87, 0.98, 1)
    other = _package(tmp_path / "b", 0.87, 0.98, 1, seed=7)
    r = compare(base, other)
    assert r["mismatch"] == ["seed"] and not r["holds"]
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "manifest.json").write_text("{}")
    assert main([str(base), str(tmp_path / "empty")]) == 2
    assert "no network metrics" in capsys.readouterr().err
