"""Compiled loops of the cost model (numba, loaded on first use)."""

from __future__ import annotations

import numpy as np

from vaqf.jit import jit


@jit
def nonzero_rows(w):  # noqa: ANN001, ANN201
    """Whether each row of a 2-D array holds a non-zero, stopping at a row's first non-zero (an unpruned
    row ends at once)."""
    n, k = w.shape
    out = np.zeros(n, dtype=np.bool_)
    for i in range(n):
        for j in range(k):
            if w[i, j] != 0:
                out[i] = True
                break
    return out
