"""Static int8 quantisation (issue 22): a patch's int8 score does not depend on the other
patches of its batch, unlike dynamic quantisation's; the fp16 -> fp32 weight unfolding is
exact.  On the smallest bundled network with synthetic patches through the runtime's
preprocessing (a few seconds)."""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / ".build" / "plugins"))

import numpy as np  # noqa: E402
import pytest  # noqa: E402

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

NET = "nn_vit2_z"
Q50 = np.array([1511, 1656, 1560, 2975, -10.2, -16.6, -0.28, -0.08, -11.5, -17.8, 0.39, -0.06], np.float32)
SCALE = np.array([300, 300, 300, 500, 3, 3, 2, 2, 3, 3, 2, 2], np.float32)


def _data(n, seed=0):
    from sentinel_landslide.training.nn_data import PatchData

    rng = np.random.default_rng(seed)
    p = Q50[None, :, None, None] + rng.normal(size=(n, 12, 64, 64)).astype(np.float32) * SCALE[None, :, None, None]
    p[: n // 4] *= 3.0  # a few patches far brighter than the rest: what moves a batch's dynamic scales
    return PatchData([f"ID_{i}" for i in range(n)], np.arange(n) % 2, p.astype(np.float32), {}, "synthetic")


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    from sentinel_landslide.models.package import BUNDLED, load_package
    from sentinel_landslide.training import quantize as q

    pkg = load_package(BUNDLED)
    member = next(m for m in pkg.manifest["members"] if m["name"] == NET)
    tmp = tmp_path_factory.mktemp("int8")
    data = _data(48)
    calib = q.member_batches(member, pkg.manifest, data, np.arange(16))
    static = q.quantize_static_qdq(pkg.path(member), tmp / "static.onnx", calib)
    # dynamic quantisation needs the weights as float32 initializers, as in a fold checkpoint
    dynamic = q.quantize(q.to_fp32_weights(pkg.path(member), tmp / "fp32_for_dynamic.onnx"), tmp / "dynamic.onnx")
    batches = q.member_batches(member, pkg.manifest, data, np.arange(16, 48), batch=8)
    return {"pkg": pkg, "member": member, "static": static, "dynamic": dynamic, "batches": batches, "tmp": tmp}


def test_a_static_int8_score_does_not_depend_on_the_batch(net):
    from sentinel_landslide.training.quantize import batch_dependence

    assert batch_dependence(net["static"], net["batches"]) == 0.0
    # the reason dynamic quantisation was rejected, on the same patches: the check can fail
    assert batch_dependence(net["dynamic"], net["batches"]) > 1e-4


def test_static_int8_is_a_qdq_graph_close_to_the_shipped_scores(net):
    import onnx

    from sentinel_landslide.training.quantize import _logits, _session

    ops = {n.op_type for n in onnx.load(str(net["static"])).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    s0, s1 = _session(net["pkg"].path(net["member"])), _session(net["static"])
    l0 = np.concatenate([_logits(s0, b) for b in net["batches"]])
    l1 = np.concatenate([_logits(s1, b) for b in net["batches"]])
    assert not np.array_equal(l0, l1)  # it is quantised
    assert np.corrcoef(l0, l1)[0, 1] > 0.9  # and still the same network


def test_fp32_unfolding_of_fp16_weights_is_exact(net):
    import onnx

    from sentinel_landslide.training.quantize import _logits, _session, to_fp32_weights

    src = net["pkg"].path(net["member"])
    fp32 = to_fp32_weights(src, net["tmp"] / "fp32.onnx")
    g = onnx.load(str(fp32)).graph
    assert all(i.data_type == onnx.TensorProto.FLOAT for i in g.initializer if len(i.dims) > 1)
    b = net["batches"][0]
    assert np.array_equal(_logits(_session(src), b), _logits(_session(fp32), b))
