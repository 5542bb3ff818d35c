"""Rows of an array chosen by an index, gathered only when they are read.

A batch of patches is about 67 MB; the tiles of one combination in it (a cloud mask
splits a batch into an optical and a SAR-only group) used to be copied out of it before
their features were computed, and the networks then read only the few tiles the cascade
left open.  ``Rows`` names the subset without copying it: slicing gives another ``Rows``,
an integer index gathers just those rows.
"""
from __future__ import annotations

import numpy as np


class Rows:
    """``base[index]`` along the first axis, gathered only when read.

    ``len(rows)``, ``rows.shape``; ``rows[a:b]`` -> ``Rows``; ``rows[int array]`` or
    ``rows[i]`` -> the gathered ndarray; ``np.asarray(rows)`` -> every row gathered."""

    __slots__ = ("base", "index")

    def __init__(self, base: np.ndarray, index) -> None:
        self.base = base
        self.index = np.asarray(index, dtype=np.intp)

    def __len__(self) -> int:
        return len(self.index)

    @property
    def shape(self) -> tuple:
        return (len(self.index),) + tuple(self.base.shape[1:])

    @property
    def dtype(self):
        return self.base.dtype

    def __getitem__(self, key):
        if isinstance(key, slice):
            return Rows(self.base, self.index[key])
        if isinstance(key, tuple):  # a multi-axis index: on the gathered rows
            return np.asarray(self)[key]
        return self.base[self.index[key]]

    def __array__(self, dtype=None, copy=None):
        out = self.base[self.index]
        return out if dtype is None else out.astype(dtype, copy=False)


def rows_of(base: np.ndarray, index) -> np.ndarray | Rows:
    """``base`` itself when ``index`` selects every row in order, else ``Rows(base, index)``."""
    index = np.asarray(index, dtype=np.intp)
    if len(index) == len(base) and (len(index) == 0 or (index == np.arange(len(base))).all()):
        return base
    return Rows(base, index)
