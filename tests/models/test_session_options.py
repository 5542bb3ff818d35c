"""The networks' onnxruntime session options (issue 22, chosen from bench/ort_options.py):
every bundled network scores a synthetic batch as it did with the options before the
change (one intra-op thread, all graph optimisations, no memory arena), within float noise."""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / ".build" / "plugins"))

import numpy as np  # noqa: E402
import pytest  # noqa: E402

ort = pytest.importorskip("onnxruntime")

Q50 = np.array([1511, 1656, 1560, 2975, -10.2, -16.6, -0.28, -0.08, -11.5, -17.8, 0.39, -0.06], np.float32)
SCALE = np.array([300, 300, 300, 500, 3, 3, 2, 2, 3, 3, 2, 2], np.float32)


def _previous_options():
    o = ort.SessionOptions()
    o.intra_op_num_threads = 1
    o.inter_op_num_threads = 1
    o.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    o.enable_cpu_mem_arena = False
    return o


def test_default_session_options_keep_every_networks_scores():
    from sentinel_landslide.models.ensemble import _OnnxMember, _sigmoid
    from sentinel_landslide.models.package import BUNDLED, load_package

    pkg = load_package(BUNDLED)
    nets = [m for m in pkg.manifest["members"] if m["kind"] == "onnx"]
    if not nets:
        pytest.skip("the bundled package has no networks")
    rng = np.random.default_rng(5)
    n = 40  # detect's CPU sub-batch
    patches = (Q50[None, :, None, None] + rng.normal(size=(n, 12, 64, 64)) * SCALE[None, :, None, None]).astype(
        np.float32)
    valid = np.ones((n, 64, 64), dtype=bool)
    for spec in nets:
        member = _OnnxMember(pkg, spec, 1, False, "cpu")
        got = member.predict(patches, valid, {})
        ref_sess = ort.InferenceSession(str(pkg.path(spec)), _previous_options(), providers=["CPUExecutionProvider"])
        ref = _sigmoid(np.asarray(ref_sess.run(None, member.feeds(patches))[0], dtype=np.float64).reshape(n))
        assert np.max(np.abs(got - ref)) <= 1e-6, spec["name"]
        assert np.std(got) > 0  # real scores, not a constant
