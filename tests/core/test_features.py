"""Feature extraction against the REAL golden patch and its REAL row of the feature table."""
from __future__ import annotations

import numpy as np
import pytest

from ..helpers import shared_file


def test_features_match_the_real_golden_row():
    from sentinel_landslide.core.features import BASE_FEATURES, patch_features
    from sentinel_landslide.training.feature_table import load_feature_table

    x = np.load(shared_file("zindi/ID_005GY8.npy"))
    ids, labels, table = load_feature_table(shared_file("zindi/train_features_7147.csv.gz"))
    i = ids.index("ID_005GY8")
    f = patch_features(x.transpose(2, 0, 1)[None])
    assert len(BASE_FEATURES) == 85
    for name in BASE_FEATURES:
        assert f[name][0] == pytest.approx(table[name][i], rel=2e-6, abs=1e-6), name
    assert labels[i] == 0


def test_derived_features_are_the_same_function_in_training_and_detection():
    from sentinel_landslide.core.features import DERIVED_FEATURES, patch_features
    from sentinel_landslide.training.feature_table import load_feature_table

    x = np.load(shared_file("zindi/ID_005GY8.npy"))
    ids, _, table = load_feature_table(shared_file("zindi/train_features_7147.csv.gz"))
    f = patch_features(x.transpose(2, 0, 1)[None])
    i = ids.index("ID_005GY8")
    for name in DERIVED_FEATURES:
        assert f[name][0] == pytest.approx(table[name][i], rel=1e-4, abs=1e-5), name


def test_masked_statistics_ignore_invalid_pixels():
    """A patch whose left half is nodata has the statistics of its right half."""
    from sentinel_landslide.core.features import patch_features

    rng = np.random.default_rng(0)
    p = rng.normal(1500, 200, (1, 12, 64, 64)).astype(np.float32)
    valid = np.zeros((1, 64, 64), bool)
    valid[:, :, 32:] = True
    full = patch_features(p[:, :, :, 32:].copy())
    p[:, :, :, :32] = np.nan
    half = patch_features(p, valid)
    for k in ("band1_mean", "band5_std", "band12_kurt", "ndvi_skew", "band3_min", "band4_max"):
        assert half[k][0] == pytest.approx(full[k][0], rel=1e-5), k


def test_constant_patch_has_undefined_shape_statistics_not_crashes():
    from sentinel_landslide.core.features import patch_features

    p = np.full((2, 12, 64, 64), 1200.0, np.float32)
    f = patch_features(p)
    assert np.isnan(f["band1_kurt"]).all() and np.isnan(f["band1_skew"]).all()
    assert (f["band1_std"] == 0).all() and (f["band1_mean"] == 1200).all()


def test_optical_only_features_need_no_sar():
    from sentinel_landslide.core.features import feature_names, patch_features

    rng = np.random.default_rng(1)
    p = rng.normal(1500, 200, (3, 12, 64, 64)).astype(np.float32)
    p[:, 4:] = np.nan  # no SAR at all
    f = patch_features(p, groups=("optical",))
    for n in feature_names("optical"):
        assert np.isfinite(f[n]).all(), n


def test_every_input_combination_has_one_name_and_its_own_channels():
    from sentinel_landslide.core.channels import COMBINATION_BY_NAME, COMBINATIONS, LEGACY_MODE_NAMES, MODE_CHANNELS

    assert len(COMBINATIONS) == 17 == len(COMBINATION_BY_NAME)
    assert COMBINATION_BY_NAME["desc_post"].channels == (4, 5)  # post VV/VH, no change channels
    assert COMBINATION_BY_NAME["desc_post"].roles == ("S1_DESC_POST",)
    assert COMBINATION_BY_NAME["s2+asc"].channels == (0, 1, 2, 3, 8, 9, 10, 11)
    for old, new in LEGACY_MODE_NAMES.items():  # the three old modes are the same channels
        assert COMBINATION_BY_NAME[new].channels == MODE_CHANNELS[old]
