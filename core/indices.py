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
    bands: dict = {}  # each band offset-removed and clipped once, not once per index using it

    def band(i):
        if i not in bands:
            bands[i] = np.clip(patches[:, i].astype(np.float32) - s2_offset, 0, None)
        return bands[i]

    den = np.empty(out.shape[:1] + out.shape[2:], dtype=np.float32)
    for k, name in enumerate(names):
        a, b = (band(i) for i in INDEX_DEFS[name])
        np.add(a, b, out=den)
        np.maximum(den, EPS, out=den)
        dst = out[:, k]
        np.subtract(a, b, out=dst)
        dst /= den
        dst += np.float32(0.5)
    return out
