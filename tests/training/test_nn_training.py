"""Neural members: proxy data, patch folders, training, ONNX export, torch-free runtime."""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / ".build" / "plugins"))

import json  # noqa: E402
import os  # noqa: E402
import subprocess  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
SHARED_CSV = ROOT.parent / "shared" / "data" / "zindi" / "train_features_7147.csv.gz"
Q50 = np.array([1511, 1656, 1560, 2975, -10.2, -16.6, -0.28, -0.08, -11.5, -17.8, 0.39, -0.06], np.float32)
SCALE = np.array([300, 300, 300, 500, 3, 3, 2, 2, 3, 3, 2, 2], np.float32)
QUICK_MEMBERS = ("nn_vit2_z", "nn_opt_vit_convnext")
pytestmark = pytest.mark.slow  # torch training, ONNX export


def _synthetic(n=24, seed=0):
    rng = np.random.default_rng(seed)
    p = Q50[None, :, None, None] + rng.normal(size=(n, 12, 64, 64)).astype(np.float32) * SCALE[None, :, None, None]
    labels = np.array([0, 1] * (n // 2))
    p[labels == 1, 6:8] += 3.0  # a SAR change signal
    p[labels == 1, 3] -= 400.0  # and less NIR
    return [f"ID_{i:04d}" for i in range(n)], p.astype(np.float32), labels


# ----------------------------------------------------------------------------- proxy
def test_proxy_statistics_match_their_real_rows():
    if not SHARED_CSV.is_file():
        pytest.skip("../shared/data/zindi/train_features_7147.csv.gz is not available")
    from sentinel_landslide.core.features import BAND_NAMES, patch_features
    from sentinel_landslide.training import proxy
    from sentinel_landslide.training.feature_table import load_feature_table

    ids, labels, feats = load_feature_table(SHARED_CSV)
    rows = np.r_[0:24, len(ids) - 24:len(ids)]  # both ends of the table, both classes
    sub = {k: v[rows] for k, v in feats.items()}
    patches = proxy.generate_patches(sub, [ids[i] for i in rows], seed=42)
    assert patches.shape == (48, 12, 64, 64) and patches.dtype == np.float32
    got = patch_features(patches)
    for b in BAND_NAMES:
        sd = sub[f"{b}_std"].astype(np.float64)
        for s in ("mean", "std", "min", "max"):  # exact up to float32 rounding
            err = np.abs(got[f"{b}_{s}"] - sub[f"{b}_{s}"]) / sd
            assert err.max() < 1e-3, (b, s, err.max())
    # skew / kurtosis: the stated tolerance for >= 90 % of (row, channel) pairs here
    # (~95 % over all 7147 rows), and never wildly off
    for s, (ta, tr) in (("skew", proxy.SKEW_TOL), ("kurt", proxy.KURT_TOL)):
        t = np.stack([sub[f"{b}_{s}"] for b in BAND_NAMES]).astype(np.float64)
        g = np.stack([got[f"{b}_{s}"] for b in BAND_NAMES]).astype(np.float64)
        ratio = np.abs(g - t) / (ta + tr * np.abs(t))
        assert np.mean(ratio <= 1) >= 0.9, (s, np.mean(ratio <= 1))
        assert np.max(ratio) < 10, (s, np.max(ratio))
    # ndvi / ndwi through the R, G, NIR coupling: mean and std close to the row's
    for name in ("ndvi", "ndwi"):
        sd = sub[f"{name}_std"].astype(np.float64)
        assert np.median(np.abs(got[f"{name}_mean"] - sub[f"{name}_mean"]) / sd) < 0.05
        assert np.median(np.abs(got[f"{name}_std"] - sub[f"{name}_std"]) / sd) < 0.1
    # texture: one label-blind generator, seeded per ID (same ID -> same fields)
    a = proxy.latent_fields(["ID_X", "ID_Y"], seed=42)
    b = proxy.latent_fields(["ID_Y"], seed=42)
    np.testing.assert_array_equal(a[1], b[0])


# ----------------------------------------------------------------------------- patch folder
def test_patch_folder_round_trip(tmp_path):
    from sentinel_landslide.engine.patch_folder import (
        PatchFolderError,
        list_patch_folder,
        read_patch_folder,
        write_patch_folder,
    )

    ids, p, labels = _synthetic(6)
    write_patch_folder(tmp_path / "f", ids, p, labels)
    raw = np.load(tmp_path / "f" / f"{ids[0]}.npy")
    assert raw.shape == (64, 64, 12)  # the competition layout: channels last
    got_ids, got_labels, got = read_patch_folder(tmp_path / "f")
    assert got_ids == ids and got_labels.tolist() == labels.tolist()
    np.testing.assert_array_equal(got, p)
    # memory-mapped cache and a chosen subset/order
    sub_ids, _, mm = read_patch_folder(tmp_path / "f", ids=ids[::-2], cache=tmp_path / "c.npy")
    np.testing.assert_array_equal(mm, p[::-2])
    # a Test-style folder (no labels), a competition float64 file, and chunked appends
    write_patch_folder(tmp_path / "t", ids[:3], p[:3])
    write_patch_folder(tmp_path / "t", ids[3:], p[3:], append=True)
    np.save(tmp_path / "t" / f"{ids[0]}.npy", np.moveaxis(p[0], 0, -1).astype(np.float64))
    t_ids, t_labels, t = read_patch_folder(tmp_path / "t")
    assert t_ids == ids and t_labels is None and t.dtype == np.float32
    np.testing.assert_allclose(t, p)
    (tmp_path / "t" / f"{ids[2]}.npy").unlink()
    with pytest.raises(PatchFolderError, match="missing"):
        list_patch_folder(tmp_path / "t")


# ----------------------------------------------------------------------------- quick train
@pytest.fixture(scope="module")
def quick_package(tmp_path_factory):
    pytest.importorskip("torch")
    pytest.importorskip("timm")
    pytest.importorskip("onnxruntime")
    from sentinel_landslide.engine.patch_folder import write_patch_folder
    from sentinel_landslide.training import nn_data, nn_loop, train_nn  # noqa: F401

    tmp = tmp_path_factory.mktemp("nn")
    ids, p, labels = _synthetic(24)
    write_patch_folder(tmp / "patches", ids, p, labels)
    rc = train_nn.main(["--patches", str(tmp / "patches"), "--out", str(tmp / "pkg"), "--quick",
                        "--members", ",".join(QUICK_MEMBERS), "--ckpt", str(tmp / "ckpt"),
                        "--gbm-oof", str(tmp / "none.csv"), "--threads", "1"])
    assert rc == 0
    return tmp, p


def test_quick_training_writes_a_package_the_runtime_runs(quick_package):
    from sentinel_landslide.models.ensemble import Ensemble
    from sentinel_landslide.models.package import load_package

    tmp, p = quick_package
    pkg = load_package(tmp / "pkg")
    man = pkg.manifest
    names = [m["name"] for m in man["members"]]
    assert names == list(QUICK_MEMBERS)
    for m in man["members"]:
        assert m["kind"] == "onnx" and m["output"] == "logit" and m["flops_per_patch"] > 0
        assert m["encoders"] and all(isinstance(e, str) for e in m["encoders"])
    from sentinel_landslide.core.channels import COMBINATIONS

    # the optical network runs in every combination with Sentinel-2, the fused one only with all sources
    assert set(man["modes"]) == {c.name for c in COMBINATIONS if c.s2}
    nn = man["metrics"]["nn_proxy"]
    assert set(nn["members"]) == set(QUICK_MEMBERS) and "s2+desc+asc" in nn["ensembles"]
    assert nn["provenance"]["folds"] == 2 and nn["provenance"]["epochs"] == 1
    ens = Ensemble(pkg, "combined", threads=1, tta=True)
    out = ens.predict(p[:5], np.ones((5, 64, 64), bool), {})
    assert out["prob"].shape == (5,) and np.all((out["prob"] >= 0) & (out["prob"] <= 1))
    assert Ensemble(pkg, "optical", threads=1).member_names == ["nn_opt_vit_convnext"]


def test_merge_keeps_gbm_members_and_their_metrics(quick_package, tmp_path):
    """Retraining replaces only ONNX members (and metrics.nn_proxy) of an existing package."""
    import shutil

    from sentinel_landslide.models.package import load_package, write_manifest
    from sentinel_landslide.training import nn_data, nn_loop, train_nn  # noqa: F401

    tmp, p = quick_package
    pkg_dir = tmp_path / "pkg"
    shutil.copytree(tmp / "pkg", pkg_dir)
    man = json.loads((pkg_dir / "manifest.json").read_text())
    (pkg_dir / "gbm_fake.txt").write_text("not a real booster\n")
    man["members"].insert(0, {"name": "lgbm_fake", "kind": "lightgbm", "file": "gbm_fake.txt", "modes": ["combined"],
                              "weight": 1.0, "inputs": {"features": ["band1_mean"]}})
    man["metrics"]["gbm_real_features"] = {"marker": 1}
    write_manifest(pkg_dir, man)
    ids = [f"ID_{i:04d}" for i in range(24)]
    labels = np.array([0, 1] * 12)
    with open(tmp_path / "gbm_oof.csv", "w") as fh:
        fh.write("id,label,lgbm_fake\n" + "".join(f"{i},{y},{0.9 if y else 0.1}\n" for i, y in zip(ids, labels)))
    data = train_nn.load_folder_data(tmp / "patches")
    recipe = train_nn.default_recipe(epochs=1, folds=2, threads=1)
    train_nn.train_members(data, list(QUICK_MEMBERS), pkg_dir, recipe, ckpt_root=tmp / "ckpt",
                           gbm_oof=tmp_path / "gbm_oof.csv", log=None)  # resumes from the checkpoints
    man2 = load_package(pkg_dir).manifest
    assert [m["name"] for m in man2["members"]] == ["lgbm_fake"] + list(QUICK_MEMBERS)
    assert man2["metrics"]["gbm_real_features"] == {"marker": 1}
    ens = man2["metrics"]["nn_proxy"]["ensembles"]["s2+desc+asc"]
    assert "lgbm_fake" in ens["members"] and ens["n"] == 24
    assert man2["modes"]["s2+desc+asc"]["threshold"] == ens["at_threshold"]["threshold"]


def test_onnx_matches_torch_and_runtime_preprocessing(quick_package):
    import torch

    from sentinel_landslide.models.ensemble import _OnnxMember
    from sentinel_landslide.models.package import load_package
    from sentinel_landslide.training import nn_data, nn_loop, train_nn  # noqa: F401
    from sentinel_landslide.training.nets import MEMBER_BY_NAME, build_member

    tmp, p = quick_package
    pkg = load_package(tmp / "pkg")
    man = pkg.manifest
    for spec in man["members"]:
        cfg = MEMBER_BY_NAME[spec["name"]]
        # training preprocessing == runtime preprocessing, bit for bit
        rt = _OnnxMember(pkg, spec, threads=1, tta=False)
        mine = nn_data.member_feeds(p[:6], spec["inputs"], man["normalisation"], pkg.s2_offset)
        theirs = rt.feeds(p[:6])
        assert list(mine) == list(theirs)
        for k in mine:
            np.testing.assert_array_equal(mine[k], theirs[k])
        # the exported fp32 graph == torch on the same preprocessed input
        (ck,) = list((tmp / "ckpt").glob(f"{cfg.name}_*"))
        model = build_member(cfg)
        model.load_state_dict(torch.load(ck / "final.pt", map_location="cpu", weights_only=False)["model"])
        model.eval()
        with torch.no_grad():
            ref = model(*[torch.from_numpy(mine[t["name"]]) for t in spec["inputs"]]).numpy().reshape(-1)
        import onnxruntime as ort

        sess = ort.InferenceSession(str(ck / "final.onnx"), providers=["CPUExecutionProvider"])
        got = sess.run(None, mine)[0].reshape(-1)
        assert np.max(np.abs(got - ref)) < 1e-4
        # the shipped file (fp16 weights where accuracy held) stays close too
        shipped = rt.session.run(None, mine)[0].reshape(-1)
        assert np.max(np.abs(shipped - ref)) < (5e-2 if spec["precision"] == "fp16-weights" else 1e-4)
        assert (ck / "final.onnx").stat().st_size > 10_000  # weights are inside the file
        assert not list(pkg.folder.glob("*.data"))


def test_exported_members_run_in_onnxruntime_without_torch(quick_package):
    tmp, _ = quick_package
    code = f"""
import sys, importlib.abc
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('torch', 'timm', 'torchvision'):
            raise ImportError('blocked: ' + name)
        return None
sys.meta_path.insert(0, Block())
sys.path.insert(0, {str(ROOT / '.build' / 'plugins')!r})
import numpy as np
from sentinel_landslide.models.package import load_package
from sentinel_landslide.models.ensemble import Ensemble
pkg = load_package({str(tmp / 'pkg')!r})
ens = Ensemble(pkg, 'combined', threads=1)
p = np.load({str(tmp / 'patches' / 'ID_0001.npy')!r}).transpose(2, 0, 1)[None].astype(np.float32)
out = ens.predict(np.repeat(p, 3, 0), np.ones((3, 64, 64), bool), {{}})
assert out['prob'].shape == (3,)
assert 'torch' not in sys.modules and 'timm' not in sys.modules
print('OK', len(ens.members))
"""
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip() == f"OK {len(QUICK_MEMBERS)}"


def test_member_catalogue_meets_the_contract():
    pytest.importorskip("torch")
    pytest.importorskip("timm")
    from sentinel_landslide.training.nets import ENCODERS, MEMBERS, check_member

    assert len(MEMBERS) == 7
    assert len({ENCODERS[e].family for m in MEMBERS for _, e in m.encoders}) >= 3
    from sentinel_landslide.core.channels import COMBINATIONS

    with_s2 = {c.name for c in COMBINATIONS if c.s2}
    assert any(set(m.modes) == with_s2 for m in MEMBERS)  # optical: every combination with Sentinel-2
    assert any(set(m.modes) == {"desc+asc", "s2+desc+asc"} for m in MEMBERS)  # SAR: both orbits post and pre
    for m in MEMBERS:
        check_member(m)
        assert "s2+desc+asc" in m.modes


def test_flop_count_includes_attention_and_matches_the_bundled_manifest():
    torch = pytest.importorskip("torch")
    pytest.importorskip("timm")
    from torch.utils.flop_counter import FlopCounterMode

    from sentinel_landslide.models.package import load_package
    from sentinel_landslide.training.nets import build_member, count_flops, example_inputs, widened

    # a ViT member: the plain counter misses the attention (fused CPU SDPA counts 0)
    net = build_member("nn_vit2_z").eval()
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        net(*example_inputs(net.cfg, 1))
    plain, counted = fc.get_total_flops(), count_flops(net)
    # 2 encoders x 2 blocks x (q k^T + attn v): 2 x 64 tokens x 64 tokens x 48 dims x 2 FLOPs
    assert counted - plain == 2 * 2 * 2 * 64 * 64 * 48 * 2
    # a net without attention counts the same either way
    conv = build_member("nn_convnext2_r").eval()
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        conv(*example_inputs(conv.cfg, 1))
    assert fc.get_total_flops() == count_flops(conv)
    # the bundled package states the full count (the benchmark's efficiency figure uses it)
    for m in load_package().manifest["members"]:
        if m["kind"] == "onnx":
            with widened(m.get("width", 1)):
                assert m["flops_per_patch"] == count_flops(build_member(m["name"])), m["name"]


def test_training_resumes_from_its_checkpoint_bit_identically(quick_package, tmp_path):
    import torch

    from sentinel_landslide.models.package import new_manifest
    from sentinel_landslide.training import nn_data, nn_loop, train_nn  # noqa: F401
    from sentinel_landslide.training.nets import MemberConfig

    tmp, _ = quick_package
    data = train_nn.load_folder_data(tmp / "patches")
    cfg = MemberConfig("t_vit", (("optical", "vit_pico"),), "v3c", dim=16)
    recipe = train_nn.default_recipe(epochs=2, batch=8, threads=1)
    man = new_manifest("t", "0", "")
    idx = np.arange(len(data))
    ref = nn_loop.train_model(cfg, data, idx, recipe, tmp_path / "a.pt", man, nn_loop._Progress(1), "x", log=None)
    ck = tmp_path / "b.pt"
    stop = nn_loop._Progress(1, is_cancelled=lambda: ck.is_file())  # killed right after epoch 1
    with pytest.raises(nn_data.TrainingCancelled):
        nn_loop.train_model(cfg, data, idx, recipe, ck, man, stop, "x", log=None)
    assert torch.load(ck, weights_only=False)["epoch"] == 0
    again = nn_loop.train_model(cfg, data, idx, recipe, ck, man, nn_loop._Progress(1), "x", log=None)
    for (k, a), b in zip(ref.state_dict().items(), again.state_dict().values()):
        assert torch.equal(a, b), k


def test_widened_members_are_wider_and_the_catalogue_is_restored():
    pytest.importorskip("torch")
    pytest.importorskip("timm")
    from sentinel_landslide.training import nets

    before = dict(nets.ENCODERS)
    base = nets.count_flops(nets.build_member("nn_vit3"))
    with nets.widened(2):
        assert nets.ENCODERS["vit_pico"].size["embed_dim"] == 2 * before["vit_pico"].size["embed_dim"]
        assert nets.ENCODERS["convnext_pico"].size["dims"] == tuple(2 * d for d in before["convnext_pico"].size["dims"])
        assert nets.ENCODERS["vit_pico"].size["depth"] == before["vit_pico"].size["depth"]
        wide = nets.count_flops(nets.build_member("nn_vit3"))
    assert nets.ENCODERS == before
    assert 2.5 * base < wide < 4.5 * base  # linear layers x4, attention and patch embedding x2


def test_training_wider_members_records_the_width(quick_package, tmp_path):
    from sentinel_landslide.engine.patch_folder import write_patch_folder
    from sentinel_landslide.models.ensemble import Ensemble
    from sentinel_landslide.models.package import load_package
    from sentinel_landslide.training import nn_data, nn_loop, train_nn  # noqa: F401

    base = {m["name"]: m for m in load_package(quick_package[0] / "pkg").manifest["members"]}
    ids, p, labels = _synthetic(24)
    write_patch_folder(tmp_path / "patches", ids, p, labels)
    rc = train_nn.main(["--patches", str(tmp_path / "patches"), "--out", str(tmp_path / "pkg"), "--quick",
                        "--members", "nn_vit2_z", "--width", "1.5", "--ckpt", str(tmp_path / "ckpt"),
                        "--gbm-oof", str(tmp_path / "none.csv"), "--threads", "1"])
    assert rc == 0
    pkg = load_package(tmp_path / "pkg")
    (m,) = pkg.manifest["members"]
    assert m["width"] == 1.5 and m["flops_per_patch"] > 1.8 * base["nn_vit2_z"]["flops_per_patch"]
    # same data and recipe but the width: its own checkpoints, never width 1's
    narrow = {d.name for d in (quick_package[0] / "ckpt").iterdir() if d.name.startswith("nn_vit2_z_")}
    wide = {d.name for d in (tmp_path / "ckpt").iterdir() if d.name.startswith("nn_vit2_z_")}
    assert narrow and wide and not narrow & wide
    out = Ensemble(pkg, "combined", threads=1).predict(p[:3], np.ones((3, 64, 64), bool), {})
    assert out["prob"].shape == (3,)


def test_int8_members_adopted_only_where_the_rule_allows(quick_package, tmp_path):
    """training/quantize on the quick package (SYNTHETIC patches): members that pass
    the rule get int8 MatMul files, their metrics and the ensemble's are rewritten, the
    package still loads (checksums) and scores close to before; members that fail keep
    their files byte for byte."""
    import shutil

    pytest.importorskip("onnx")
    from sentinel_landslide.models.ensemble import Ensemble
    from sentinel_landslide.models.package import load_package
    from sentinel_landslide.training import quantize, train_nn

    tmp, p = quick_package
    data = train_nn.load_folder_data(tmp / "patches")
    pkg_dir = tmp_path / "pkg"
    shutil.copytree(tmp / "pkg", pkg_dir)
    before = {m["name"]: m["sha256"] for m in load_package(pkg_dir).manifest["members"]}

    # a rule nobody passes (int8 must gain 1.0 F1): no network file changes, thresholds stay, and
    # the manifest records the assessment (why each member is not int8)
    thresholds = {k: v["threshold"] for k, v in load_package(pkg_dir).manifest["modes"].items()}
    rows = quantize.run(pkg_dir, data, tmp / "ckpt", apply=True, min_speedup=0.0, tol={"f1": -1.0, "auc": -1.0},
                        seconds=0.05, log=None)
    assert [r["member"] for r in rows] == list(QUICK_MEMBERS) and not any(r["adopt"] for r in rows)
    man = load_package(pkg_dir).manifest
    assert {m["name"]: m["sha256"] for m in man["members"]} == before
    assert {k: v["threshold"] for k, v in man["modes"].items()} == thresholds
    for name in QUICK_MEMBERS:
        assert man["metrics"]["nn_proxy"]["members"][name]["int8_assessment"]["adopt"] is False
    assert man["metrics"]["nn_proxy"]["provenance"]["int8_rule"].endswith("int8 members: none")

    x = p[:8].astype(np.float32)
    valid = np.ones((8, 64, 64), bool)
    ref = Ensemble(load_package(pkg_dir), "combined", threads=1).predict(x, valid, {})
    rows = quantize.run(pkg_dir, data, tmp / "ckpt", apply=True, min_speedup=0.0, tol={"f1": 1.0, "auc": 1.0},
                        seconds=0.05, command="test", log=None)
    assert all(r["adopt"] for r in rows)
    pkg = load_package(pkg_dir)  # verifies the new checksums
    man = pkg.manifest
    for m in man["members"]:
        assert m["precision"].startswith("int8") and m["sha256"] != before[m["name"]]
        rec = man["metrics"]["nn_proxy"]["members"][m["name"]]
        assert rec["oof_f1"] == rec["oof_onnx_int8"]["f1"] and "ms_per_patch_int8" in rec["int8_assessment"]
    assert "int8_rule" in man["metrics"]["nn_proxy"]["provenance"]
    got = Ensemble(pkg, "combined", threads=1).predict(x, valid, {})
    assert np.abs(got["prob"] - ref["prob"]).max() < 0.05
    # int8 members are not quantised twice
    assert quantize.run(pkg_dir, data, tmp / "ckpt", apply=True, seconds=0.05, log=None) == []
