"""Normalised-difference indices used as a neural-network input group.

The paper lists six; its reference nets computed them after scaling, which makes them
meaningless near zero denominators.  Here they are computed on physical reflectance
(the package's S2 offset removed first) with a guarded denominator, then shifted by
+0.5 as in the reference code.
"""
from __future__ import annotations

import numpy as np

from .channels import BLUE, GREEN, NIR, RED

# name -> (a, b): index = (a - b) / (a + b)
INDEX_DEFS = {
    "ndvi": (NIR, RED),
    "nd_nir_green": (NIR, GREEN),
    "nd_nir_blue": (NIR, BLUE),
    "nd_blue_green": (BLUE, GREEN),
    "nd_blue_red": (BLUE, RED),
    "nd_green_red": (GREEN, RED),
}
EPS = 1.0  # in reflectance x 10000 units: well below the sensor's quantisation


def compute_indices(patches: np.ndarray, names, s2_offset: float) -> np.ndarray:
    """(N, 12, H, W) in package convention -> (N, len(names), H, W) float32."""
    out = np.empty((patches.shape[0], len(names)) + patches.shape[2:], dtype=np.float32)
    for k, name in enumerate(names):
        a_i, b_i = INDEX_DEFS[name]
        a = np.clip(patches[:, a_i].astype(np.float32) - s2_offset, 0, None)
        b = np.clip(patches[:, b_i].astype(np.float32) - s2_offset, 0, None)
        out[:, k] = (a - b) / np.maximum(a + b, EPS) + 0.5
    return out
