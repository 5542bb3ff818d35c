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
    calib = q.member_batches(member, pkg.manifest, data, np.arange(12, 28))  # ordinary patches, as calibration uses
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
    print("int8 vs shipped logit correlation", np.corrcoef(l0, l1)[0, 1])
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


def test_static_oof_rule_on_fold_checkpoints(tmp_path):
    """The OOF path of ``quantize --static``: a training run's fold checkpoints (here the
    bundled network standing in for each fold and the final model, with its own logits as
    the stored OOF) are quantised, calibrated on their training folds, and scored on their
    validation folds; the row carries OOF before/after, batch independence and the rule."""
    pytest.importorskip("torch")
    pytest.importorskip("sklearn")
    import json
    import shutil

    from sentinel_landslide.models.package import BUNDLED
    from sentinel_landslide.training import quantize as q
    from sentinel_landslide.training.metrics import binary_metrics, sigmoid
    from sentinel_landslide.training.nn_loop import folds_for

    pkg_dir = tmp_path / "pkg"
    shutil.copytree(BUNDLED, pkg_dir)
    man = json.loads((pkg_dir / "manifest.json").read_text())
    prov = man["metrics"]["nn_proxy"]["provenance"]
    n, k = 24, 2
    prov.update(n=n, folds=k)
    (pkg_dir / "manifest.json").write_text(json.dumps(man))
    member = next(m for m in man["members"] if m["name"] == NET)
    data = _data(n, seed=3)
    shipped = pkg_dir / member["file"]
    sess = q._session(shipped)
    logits = np.concatenate([q._logits(sess, b) for b in q.member_batches(member, man, data, np.arange(n))])
    run_dir = tmp_path / "ckpt" / f"{NET}_run"
    run_dir.mkdir(parents=True)
    (run_dir / "config.json").write_text(json.dumps({
        "recipe": {"width": member.get("width", 1.0), "folds": k, "epochs": prov["epochs"], "seed": prov["seed"]},
        "data": {"n": n}}))
    for f, (_tr, va) in enumerate(folds_for(data.labels, k, prov["seed"])):
        shutil.copyfile(shipped, run_dir / f"fold{f}.onnx")
        np.savez(run_dir / f"fold{f}_oof.npz", onnx16=logits[va], onnx32=logits[va])
    shutil.copyfile(shipped, run_dir / "final.onnx")

    rows = q.run(pkg_dir, data, tmp_path / "ckpt", static=True, calib=8, batch=4, seconds=0.0, only=[NET],
                 log=None)
    assert len(rows) == 1
    r = rows[0]
    want = binary_metrics(sigmoid(logits), data.labels)
    assert r["oof_shipped"]["auc"] == pytest.approx(want["auc"], abs=1e-4)
    assert r["batch_max_abs_diff_int8"] == 0.0
    assert 0 < r["oof_max_abs_logit_diff"] < 5.0  # quantised, and still the same network
    assert r["adopt"] == (r["d_f1"] >= -q.STATIC_TOL["f1"] and r["d_auc"] >= -q.STATIC_TOL["auc"]
                          and r["speedup"] >= 1.1)
