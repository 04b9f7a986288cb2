"""Helpers of the ops' simulation plans.

An op's fast simulation path (:mod:`vaqf.sim.fast`) is a plan builder ``(node, scratch) -> plan``: the plan
is a function of the input arrays (leading sample axis first, as ``OpSpec.reference`` takes them) that
computes the node's outputs, with everything that depends only on the node (converted weights, per-column
multipliers, strided views) worked out once, and its large arrays from ``scratch`` (:class:`Scratch`). The
simulator builds one plan per node and calls it for every batch; the tests hold every plan equal to the op's
readable reference.

Plans return integers in the narrowest numpy dtype holding the value's type (:func:`storage_dtype`), which
is what makes the kernels memory-light; ``reference`` and the simulator's results convert to int64.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Callable

import numpy as np

from vaqf.ir import BinaryType, IntType
from vaqf.ops.strided_copy import source_index

Plan = Callable[[list[np.ndarray]], list[np.ndarray]]

_DTYPES = (np.int8, np.uint8, np.int16, np.uint16, np.int32, np.uint32)


class Scratch:
    """Memory that the plans of one simulator share, so that large arrays are not freshly allocated for every
    node and batch (a fresh array costs a page fault per 4 KiB page on first touch, which on virtual machines
    is slower than the arithmetic done on it).

    - ``get(role, ...)``: a work buffer by role ("gemm_a", "gemm_acc", ...), reused by every plan; its
      contents live only within one plan call (nodes run one at a time).
    - ``new(shape, dtype)``: a node's output array. Large ones come from buffers that values no longer
      needed handed back (``release``, called by the simulator once nothing reads a buffer any more).

    Not thread-safe: one simulator per thread.
    """

    #: outputs smaller than this come from numpy directly (malloc serves them without page faults)
    POOL_MIN_BYTES = 1 << 16

    def __init__(self) -> None:
        self._bufs: dict[str, np.ndarray] = {}
        # id -> weak reference to a buffer handed out by new() while something still holds it
        self.owned: dict[int, weakref.ref] = {}
        self._free: list[np.ndarray] = []

    def get(self, role: str, shape: tuple[int, ...], dtype: np.dtype | type) -> np.ndarray:
        dt = np.dtype(dtype)
        n = int(np.prod(shape, dtype=np.int64))
        nbytes = max(n * dt.itemsize, 1)
        buf = self._bufs.get(role)
        if buf is None or buf.size < nbytes:
            buf = np.empty(nbytes, np.uint8)
            self._bufs[role] = buf
        return buf[:n * dt.itemsize].view(dt).reshape(shape)

    def new(self, shape: tuple[int, ...], dtype: np.dtype | type) -> np.ndarray:
        dt = np.dtype(dtype)
        nbytes = math.prod(shape) * dt.itemsize
        if nbytes < self.POOL_MIN_BYTES:
            return np.empty(shape, dt)
        best = -1
        for i, b in enumerate(self._free):
            if b.size >= nbytes and (best < 0 or b.size < self._free[best].size):
                best = i
        if best >= 0:
            buf = self._free.pop(best)
        else:
            buf = np.empty(nbytes, np.uint8)
            key = id(buf)
            self.owned[key] = weakref.ref(buf, lambda _, k=key, owned=self.owned: owned.pop(k, None))
        return buf[:nbytes].view(dt).reshape(shape)

    def release(self, buf: np.ndarray) -> None:
        """Hand back a buffer from ``new`` (the root array: ``root(a)`` of an array it returned)."""
        self._free.append(buf)

    def reset(self) -> None:
        """Forget every pooled buffer (when the batch size changes, so that memory does not pile up)."""
        self.owned.clear()
        self._free.clear()


def root(a: np.ndarray) -> np.ndarray:
    """The array that owns ``a``'s memory."""
    while isinstance(a.base, np.ndarray):
        a = a.base
    return a


def storage_dtype(qtype: object) -> np.dtype:
    """The narrowest integer dtype holding every value of ``qtype`` (int64 for anything else)."""
    if isinstance(qtype, (IntType, BinaryType)):
        lo, hi = int(qtype.min), int(qtype.max)
        for dt in _DTYPES:
            info = np.iinfo(dt)
            if info.min <= lo and hi <= info.max:
                return np.dtype(dt)
    return np.dtype(np.int64)


def as_int64(arrays: list[np.ndarray]) -> list[np.ndarray]:
    return [a if a.dtype == np.int64 else a.astype(np.int64) for a in arrays]


def reference_of(plan: Plan, inputs: list[np.ndarray]) -> list[np.ndarray]:
    """Run a plan on arrays as ``OpSpec.reference`` receives them; int64 results, as references return."""
    return as_int64(plan([np.asarray(a) for a in inputs]))


def strided_view(x: np.ndarray, shape: tuple[int, ...], strides: list[int], base: int) -> np.ndarray:
    """``x[b].flat[base + sum(o_k * strides_k)]`` for every sample b, shaped [B, *shape].

    A zero-copy view when the addressed elements lie inside each sample (they do for views the compiler
    made; checked), a gather otherwise (numpy raises for out-of-range indices, as the index form does).
    """
    flat = np.ascontiguousarray(x).reshape(x.shape[0], -1)
    n = flat.shape[1]
    lo = base + sum(min(0, (k - 1) * s) for k, s in zip(shape, strides, strict=True))
    hi = base + sum(max(0, (k - 1) * s) for k, s in zip(shape, strides, strict=True))
    if any(k == 0 for k in shape):
        return np.empty((x.shape[0],) + tuple(shape), dtype=x.dtype)
    if 0 <= lo and hi < n:
        isz = flat.itemsize
        return np.lib.stride_tricks.as_strided(flat[:, base:], (flat.shape[0],) + tuple(shape),
                                               (flat.strides[0],) + tuple(s * isz for s in strides),
                                               writeable=False)
    idx = source_index(tuple(shape), strides, base)
    return flat[:, idx.reshape(-1)].reshape((x.shape[0],) + tuple(shape))


def scatter_strided(acc: np.ndarray, shape: tuple[int, ...], strides: list[int], base: int,
                    scratch: Scratch | None = None) -> np.ndarray:
    """The inverse placement: an array [B, *shape] whose element at ``base + sum(i_k * strides_k)`` (flat, per
    sample) is ``acc[b, i...]``; positions nothing lands on are left as allocated (uninitialized)."""
    b = acc.shape[0]
    size = int(np.prod(shape, dtype=np.int64))
    out = scratch.new((b, size), acc.dtype) if scratch is not None else np.empty((b, size), dtype=acc.dtype)
    src = acc.shape[1:]
    lo = base + sum(min(0, (k - 1) * s) for k, s in zip(src, strides, strict=True))
    hi = base + sum(max(0, (k - 1) * s) for k, s in zip(src, strides, strict=True))
    if acc.size and 0 <= lo and hi < size:
        isz = out.itemsize
        view = np.lib.stride_tricks.as_strided(out[:, base:], acc.shape,
                                               (out.strides[0],) + tuple(s * isz for s in strides))
        view[...] = acc
    else:
        pos = source_index(src, strides, base).reshape(-1)
        out[:, pos] = acc.reshape(b, -1)
    return out.reshape((b,) + tuple(shape))
