"""training.metrics (scikit-learn) against counts by hand."""
from __future__ import annotations

import math

import numpy as np
import pytest


def test_prf_and_binary_metrics_by_hand():
    from sentinel_landslide.training.metrics import binary_metrics, prf

    y = np.array([1, 1, 1, 0, 0, 0, 0, 0])
    p = np.array([0.9, 0.6, 0.2, 0.7, 0.1, 0.1, 0.3, 0.4])
    f1, prec, rec = prf(y, p, 0.5)  # TP 2, FP 1, FN 1
    assert (f1, prec, rec) == pytest.approx((2 / 3, 2 / 3, 2 / 3))
    assert prf(y, p, 0.95) == (0.0, 0.0, 0.0)  # nothing predicted: zero, not a warning or NaN
    m = binary_metrics(p, y, 0.5)
    assert m["auc"] == pytest.approx(round(11 / 15, 4))  # 11 of the 15 positive/negative pairs ordered right
    assert math.isnan(binary_metrics(p, np.zeros(8), 0.5)["auc"])


def test_best_threshold_is_f1_optimal_and_closest_to_half_on_ties():
    from sentinel_landslide.training.metrics import best_threshold, prf

    y = np.array([1, 1, 0, 0])
    p = np.array([0.8, 0.7, 0.3, 0.2])  # every threshold in (0.3, 0.7] separates perfectly
    assert best_threshold(p, y) == 0.5
    rng = np.random.default_rng(0)
    y = rng.random(300) < 0.3
    p = np.clip(y * 0.3 + rng.random(300) * 0.7, 0, 1)
    t = best_threshold(p, y)
    grid = np.round(np.arange(0.05, 0.95 + 0.0025, 0.005), 4)
    assert prf(y, p, t)[0] == pytest.approx(max(prf(y, p, g)[0] for g in grid))
