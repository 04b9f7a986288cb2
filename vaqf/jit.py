"""numba compilation with an on-disk cache where one can be written.

Compiled code is cached next to the module (or in numba's per-user cache directory when the install is
read-only); where no cache directory is writable the function is compiled in memory on first use in
each process.
"""

from __future__ import annotations

import warnings

import numba


def jit(fn):  # noqa: ANN001, ANN201
    """``numba.njit`` (nogil, numpy error model), cached on disk when possible."""
    opts = {"nogil": True, "error_model": "numpy"}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", numba.NumbaWarning)
            return numba.njit(cache=True, **opts)(fn)
    except RuntimeError:  # "cannot cache function ...: no locator available" (no writable cache directory)
        return numba.njit(cache=False, **opts)(fn)
