"""core.rows.Rows (a batch's tiles of one combination, gathered only when read) against
the ndarray it stands for, and the features and scores computed through it: SYNTHETIC
patches, bit-identical results."""
from __future__ import annotations

import numpy as np
import pytest


def _patches(n=23, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(-12, 3, (n, 12, 64, 64)).astype(np.float32)
    x[:, :4] = rng.uniform(1000, 3000, (n, 4, 64, 64))
    x[5, :, :10] = np.nan  # partly no data: the masked path
    x[9, :4, 30:] = np.nan
    return x


def test_rows_behave_as_the_gathered_array():
    from sentinel_landslide.core.rows import Rows, rows_of

    base = np.arange(40 * 3, dtype=np.float32).reshape(40, 3)
    idx = np.array([1, 2, 3, 7, 8, 20, 39])
    r, ref = Rows(base, idx), base[idx]
    assert len(r) == 7 and r.shape == (7, 3) and r.dtype == base.dtype
    np.testing.assert_array_equal(np.asarray(r), ref)
    assert isinstance(r[2:6], Rows) and np.array_equal(np.asarray(r[2:6]), ref[2:6])
    np.testing.assert_array_equal(np.asarray(r[1:][::2]), ref[1:][::2])
    np.testing.assert_array_equal(r[np.array([0, 4, 4])], ref[[0, 4, 4]])
    np.testing.assert_array_equal(r[3], ref[3])
    np.testing.assert_array_equal(r[:, 1], ref[:, 1])
    assert np.asarray(r, dtype=np.float64).dtype == np.float64
    assert rows_of(base, np.arange(40)) is base  # every row in order: the batch itself, no copy
    assert isinstance(rows_of(base, idx), Rows)
    assert isinstance(rows_of(base, np.arange(40)[::-1]), Rows)


def test_features_through_an_index_equal_those_of_the_gathered_patches():
    from sentinel_landslide.core.channels import COMBINATION_BY_NAME
    from sentinel_landslide.core.features import patch_features

    x = _patches()
    idx = np.array([0, 1, 2, 5, 6, 9, 10, 11, 17, 22])
    for name in ("s2+desc+asc", "desc+asc", "s2"):
        ch = COMBINATION_BY_NAME[name].channels
        valid = np.isfinite(x[idx][:, list(ch)]).all(axis=1)
        want = patch_features(x[idx], valid, channels=ch)
        got = patch_features(x, valid, channels=ch, index=idx)
        assert set(got) == set(want)
        for k in want:
            np.testing.assert_array_equal(got[k], want[k], err_msg=f"{name} {k}")
        got = patch_features(x, None, channels=ch, index=idx)  # valid worked out from the indexed patches
        for k in want:
            np.testing.assert_array_equal(got[k], want[k], err_msg=f"{name} {k} (valid None)")


@pytest.mark.parametrize("margin", [None, 0.05])
def test_the_ensemble_scores_rows_as_the_gathered_array(package, margin):
    """Cascade on (some tiles open, others not) and off: every member's score identical."""
    from sentinel_landslide.core.features import patch_features
    from sentinel_landslide.core.rows import Rows
    from sentinel_landslide.models.ensemble import Cascade, Ensemble

    x = _patches(40, seed=3)
    idx = np.array([0, 3, 4, 5, 9, 12, 13, 20, 21, 22, 30, 39])
    valid = np.isfinite(x[idx]).all(axis=1)
    feats = patch_features(x, valid, index=idx)
    ens = Ensemble(package, "s2+desc+asc", threads=2, cascade=None if margin is None else Cascade(None, margin))
    try:
        want = ens.predict(x[idx], valid, feats)
        got = ens.predict(Rows(x, idx), valid, feats)
    finally:
        ens.close()
    assert set(got) == set(want)
    for k in want:
        np.testing.assert_array_equal(got[k], want[k], err_msg=k)
