"""The cascade's interval arithmetic and the execution-provider choice (CPU-only tests:
the provider list is faked; a GPU run is the bench's job)."""
from __future__ import annotations

import numpy as np
import pytest


def test_the_full_probability_and_the_gbm_mean_lie_in_the_interval_within_the_bound():
    """For any member probabilities in [0, 1]: the full weighted mean lies in [lo, hi]
    computed from the GBMs alone, so does the GBM pair's mean, and the two differ by at
    most (N / W) max(p, 1 - p)."""
    from sentinel_landslide.models.ensemble import cascade_interval, gbm_tile_bound

    rng = np.random.default_rng(3)
    w_gbm, w_net = np.array([1.0, 1.0]), np.full(7, 0.1)
    n = 20000
    gbm = rng.random((2, n))
    # networks anywhere in [0, 1], including the extremes that make the bound tight
    nets = np.concatenate([rng.random((7, n - 200)), np.zeros((7, 100)), np.ones((7, 100))], axis=1)
    W, N = w_gbm.sum() + w_net.sum(), w_net.sum()
    full = ((w_gbm[:, None] * gbm).sum(0) + (w_net[:, None] * nets).sum(0)) / W
    gsum = (w_gbm[:, None] * gbm).sum(0)
    lo, hi = cascade_interval(gsum, N, W)
    assert np.all(full >= lo - 1e-12) and np.all(full <= hi + 1e-12)
    pg = gsum / w_gbm.sum()
    assert np.all(pg >= lo - 1e-12) and np.all(pg <= hi + 1e-12)
    diff = np.abs(pg - full)
    bound = gbm_tile_bound(pg, N, W)
    assert np.all(diff <= bound + 1e-12)
    assert diff.max() > 0.9 * bound[np.argmax(diff)]  # attained at the extremes: not a loose bound


@pytest.mark.parametrize("t,margin", [(0.38, 0.0), (0.38, 0.05), (0.5, 0.2)])
def test_certain_tiles_keep_their_flag_whatever_the_networks_say(t, margin):
    from sentinel_landslide.models.ensemble import Cascade, cascade_certain, cascade_interval

    rng = np.random.default_rng(4)
    gsum = 2.0 * rng.random(5000)
    N, W = 0.7, 2.7
    lo, hi = cascade_interval(gsum, N, W)
    certain = cascade_certain(lo, hi, Cascade(t, margin))
    assert certain.any() and (~certain).any()
    for net_mean in (0.0, 0.3, 1.0):  # the networks' weighted mean, at the extremes and between
        full = (gsum + N * net_mean) / W
        gbm_only = gsum / 2.0
        assert np.array_equal((full >= t)[certain], (gbm_only >= t)[certain])
        # and none of them is within the margin of the threshold
        assert np.all(np.abs(full[certain] - t) >= margin)


@pytest.mark.parametrize("available,choice,want,warns", [
    (["CUDAExecutionProvider", "CPUExecutionProvider"], "auto", "CUDAExecutionProvider", False),
    (["DmlExecutionProvider", "CoreMLExecutionProvider", "CPUExecutionProvider"], "auto", "DmlExecutionProvider", False),
    (["CoreMLExecutionProvider", "CPUExecutionProvider"], "auto", "CoreMLExecutionProvider", False),
    (["TensorrtExecutionProvider", "CPUExecutionProvider"], "auto", "CPUExecutionProvider", False),
    (["CPUExecutionProvider"], "auto", "CPUExecutionProvider", False),
    (["CUDAExecutionProvider", "CPUExecutionProvider"], "cpu", "CPUExecutionProvider", False),
    (["CUDAExecutionProvider", "CPUExecutionProvider"], "CUDA", "CUDAExecutionProvider", False),
    (["CPUExecutionProvider"], "cuda", "CPUExecutionProvider", True),
    (["CPUExecutionProvider"], "directml", "CPUExecutionProvider", True),
    (["TensorrtExecutionProvider", "CPUExecutionProvider"], "TensorrtExecutionProvider", "TensorrtExecutionProvider", False),
    (["CPUExecutionProvider"], "NoSuchExecutionProvider", "CPUExecutionProvider", True),
])
def test_provider_choice_from_the_build_s_list(available, choice, want, warns):
    from sentinel_landslide.models.ensemble import choose_provider

    got, warning = choose_provider(choice, available)
    assert got == want
    assert (warning is not None) == warns
    if warns:
        assert "CPU" in warning and choice in warning


class _FakeOrt:
    """The real onnxruntime, claiming CUDA; ``mode`` says what a CUDA session does:
    'raise' (driver missing) or 'silent' (onnxruntime starts it on the CPU by itself)."""

    def __init__(self, mode: str):
        import onnxruntime

        self._ort, self.mode, self.asked = onnxruntime, mode, []

    def __getattr__(self, name):
        return getattr(self._ort, name)

    def get_available_providers(self):
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]

    def InferenceSession(self, path, sess_options=None, providers=None):  # noqa: N802 - onnxruntime's name
        self.asked.append(list(providers or []))
        if providers and providers[0] == "CUDAExecutionProvider" and self.mode == "raise":
            raise RuntimeError("CUDA failure 100: no CUDA-capable device is detected")
        return self._ort.InferenceSession(path, sess_options=sess_options, providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("mode", ["raise", "silent"])
def test_a_provider_that_fails_to_start_falls_back_to_the_cpu_with_a_warning(monkeypatch, package, mode):
    from sentinel_landslide.core.features import patch_features
    from sentinel_landslide.models import ensemble as E

    fake = _FakeOrt(mode)
    real_require = E.require
    monkeypatch.setattr(E, "require", lambda m: fake if m == "onnxruntime" else real_require(m))
    ens = E.Ensemble(package, "desc+asc", threads=1, provider="auto", only=["nn_sar_vit_caformer", "lgbm_desc+asc",
                                                                             "xgb_desc+asc"])
    assert fake.asked and fake.asked[0][0] == "CUDAExecutionProvider"  # auto tried CUDA first
    assert set(ens.providers.values()) == {"CPUExecutionProvider"}
    assert ens.warnings and all(w.startswith("Warning:") for w in ens.warnings)
    assert "CPUExecutionProvider: nn_sar_vit_caformer" in ens.provider_line()
    assert not ens.on_accelerator and ens.sub_batch == E._SUB_BATCH
    monkeypatch.setattr(E, "require", real_require)
    ref = E.Ensemble(package, "desc+asc", threads=1, provider="cpu", only=["nn_sar_vit_caformer", "lgbm_desc+asc",
                                                                           "xgb_desc+asc"])
    assert not ref.warnings
    rng = np.random.default_rng(0)
    x = rng.normal(-12, 3, (3, 12, 64, 64)).astype(np.float32)
    x[:, :4] = rng.uniform(1000, 3000, (3, 4, 64, 64))
    valid = np.ones((3, 64, 64), bool)
    f = patch_features(x, valid)
    a, b = ens.predict(x, valid, f), ref.predict(x, valid, f)
    assert np.allclose(a["prob"], b["prob"], atol=1e-6)
