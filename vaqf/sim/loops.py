"""Compiled integer kernels of the simulator (numba): each op's integer arithmetic fused into one pass.

The op references (``vaqf/ops/*.py``) run these; the simulator calls them through per-node plans
(:mod:`vaqf.sim.plans`). The scalar helpers are the elementwise definitions of :mod:`vaqf.ir.qarith`
(``rshift_round``, ``round_div``, saturation), written once per element instead of once per array pass;
``tests/sim/test_loops.py`` checks them against qarith and against exact rational arithmetic.

Conventions: every scalar is converted to int64 before any arithmetic (numba would otherwise promote
uint64 mixes to float); outputs are written into arrays the caller allocates in the value's storage dtype
(:func:`vaqf.sim.plans.storage_dtype`), after saturation, so the narrowing store is exact. Rounding modes
are ``Rounding.cpp_id`` integers (0 = HALF_EVEN, 1 = HALF_UP, 2 = HALF_DOWN, 3 = HALF_CEIL, 4 = CEIL,
5 = FLOOR, 6 = UP, 7 = DOWN).

Compiled with :func:`vaqf.jit.jit` (cached on disk where possible).
"""

from __future__ import annotations

import math

import numpy as np

from vaqf.jit import jit

HALF_EVEN, HALF_UP, HALF_DOWN, HALF_CEIL, CEIL, FLOOR, UP, DOWN = range(8)
INT64_MIN = -(2**63)


# ---- scalar arithmetic (the elementwise definitions of vaqf.ir.qarith) ------------------------------

@jit
def _round_inc(q, r, d, negative, mode):  # noqa: ANN001, ANN202
    """Rounding increment (0 or 1) for floor quotient q and remainder 0 <= r < d (of a value < 0 when negative)."""
    if mode == FLOOR:
        return np.int64(0)
    if mode == CEIL:
        return np.int64(r != 0)
    if mode == DOWN:
        return np.int64(r != 0 and negative)
    if mode == UP:
        return np.int64(r != 0 and not negative)
    rest = d - r
    if r > rest:
        return np.int64(1)
    if r != rest:
        return np.int64(0)
    if mode == HALF_EVEN:
        return q & 1
    if mode == HALF_UP:
        return np.int64(not negative)
    if mode == HALF_DOWN:
        return np.int64(negative)
    return np.int64(1)  # HALF_CEIL


@jit
def rshift_round(n, s, mode):  # noqa: ANN001, ANN202
    """``n / 2**s`` rounded with ``mode``; n int64, 0 <= s <= 62. Exact for every int64 (no overflow)."""
    n = np.int64(n)
    s = np.int64(s)
    d = np.int64(1) << s
    q = n >> s
    r = n & (d - 1)
    return q + _round_inc(q, r, d, n < 0, mode)


@jit
def rshift_half_even(n, s):  # noqa: ANN001, ANN202
    """``rshift_round(n, s, HALF_EVEN)`` without branches (vectorizes); exact for every int64, 0 <= s <= 62."""
    n = np.int64(n)
    s = np.int64(s)
    q = n >> s
    r = n & ((np.int64(1) << s) - 1)
    h = (np.int64(1) << (s - 1)) if s > 0 else np.int64(1)  # s = 0: r = 0 < 1, never rounds
    return q + np.int64((r > h) | ((r == h) & ((q & 1) == 1)))


@jit
def round_div(n, d, mode):  # noqa: ANN001, ANN202
    """``n / d`` rounded with ``mode``; d > 0. Exact for every int64 n."""
    n = np.int64(n)
    d = np.int64(d)
    q = n // d  # floor division (numba follows Python's semantics for signed integers)
    r = n - q * d
    return q + _round_inc(q, r, d, n < 0, mode)


@jit
def round_div_half_even(n, d, inv):  # noqa: ANN001, ANN202
    """``round_div(n, d, HALF_EVEN)`` for d > 0 given inv = 1.0 / d: a float quotient estimate corrected to the
    exact floor quotient by integer steps (|n| < 2**52 keeps the estimate within a few units), instead of a
    64-bit division per element."""
    n = np.int64(n)
    d = np.int64(d)
    if n >= np.int64(1) << np.int64(52) or n <= -(np.int64(1) << np.int64(52)):
        return round_div(n, d, HALF_EVEN)
    q = np.int64(math.floor(np.float64(n) * inv))
    r = n - q * d
    while r < 0:
        q -= 1
        r += d
    while r >= d:
        q += 1
        r -= d
    rest = d - r
    return q + np.int64((r > rest) | ((r == rest) & ((q & 1) == 1)))


@jit
def isqrt(v):  # noqa: ANN001, ANN202
    """Floor square root of 0 <= v < 2**62: a float estimate corrected exactly."""
    v = np.int64(v)
    r = np.int64(math.sqrt(np.float64(v)))
    while r * r > v:
        r -= 1
    while (r + 1) * (r + 1) <= v:
        r += 1
    return r


# ---- array kernels -----------------------------------------------------------------------------------

def epilogue_params(relu: bool, requant: bool, zp: int, lo: int, hi: int, mode: int, zp_in: int = 0) -> np.ndarray:
    """The scalars of :func:`gemm_epilogue` and :func:`dense_int` as one int64 array (one argument to pass)."""
    return np.array([int(relu), int(requant), zp, lo, hi, mode, zp_in], dtype=np.int64)


def epilogue_columns(bias: np.ndarray | int, mant: np.ndarray | int, shift: np.ndarray | int, cols: int,
                     offset: np.ndarray | int | None = None) -> np.ndarray:
    """The per-column constants of :func:`gemm_epilogue` as one int64 array [6, cols]: bias, multiplier,
    shift, for the half-to-even shift the remainder mask 2**s - 1 and the half 2**(s-1) (1 when s = 0,
    which a remainder of 0 never exceeds), and the offset added to the product (0 when None). Per-tensor
    values broadcast."""
    t = np.empty((6, cols), dtype=np.int64)
    for i, v in enumerate((bias, mant, shift)):
        t[i] = np.broadcast_to(np.asarray(v, dtype=np.int64).reshape(-1), (cols,))
    t[5] = np.broadcast_to(np.asarray(0 if offset is None else offset, dtype=np.int64).reshape(-1), (cols,))
    s = t[2]
    if np.any((s < 0) | (s > 62)):
        raise ValueError("shift must be within [0, 62]")
    t[3] = (np.int64(1) << s) - 1
    t[4] = np.where(s > 0, np.int64(1) << np.maximum(s - 1, 0), 1)
    return t


@jit
def gemm_epilogue(acc, cols, params, out):  # noqa: ANN001, ANN201
    """out[i, j] = requant(relu(acc[i, j] + bias[j])) for a 2-D accumulator (exact integers, any dtype).

    cols (:func:`epilogue_columns`): bias, mant, shift, mask, half, offset per column; params
    (:func:`epilogue_params`): relu, requant, zp, lo, hi, mode. requant: saturate(rshift_round(v * mant[j] +
    offset[j], shift[j], mode) + zp, lo, hi); without it the biased (and rectified) accumulator is stored as
    it is.
    """
    rows, n = acc.shape
    relu = params[0] != 0
    requant = params[1] != 0
    zp, lo, hi, mode = params[2], params[3], params[4], params[5]
    bias, mant, shift, mask, half, off = cols[0], cols[1], cols[2], cols[3], cols[4], cols[5]
    if requant and mode == HALF_EVEN:
        # the mode of every requantization: branch-free (rshift_half_even), so the column loop vectorizes
        for i in range(rows):
            for j in range(n):
                v = np.int64(acc[i, j]) + bias[j]
                if relu:
                    v = max(v, np.int64(0))
                p = v * mant[j] + off[j]
                q = p >> shift[j]
                r = p & mask[j]
                h = half[j]
                q += np.int64((r > h) | ((r == h) & ((q & 1) == 1)))
                out[i, j] = min(max(q + zp, lo), hi)
    elif requant:
        for i in range(rows):
            for j in range(n):
                v = np.int64(acc[i, j]) + bias[j]
                if relu:
                    v = max(v, np.int64(0))
                q = rshift_round(v * mant[j] + off[j], shift[j], mode)
                out[i, j] = min(max(q + zp, lo), hi)
    else:
        for i in range(rows):
            for j in range(n):
                v = np.int64(acc[i, j]) + bias[j]
                if relu:
                    v = max(v, np.int64(0))
                out[i, j] = v


def float_epilogue_columns(bias: np.ndarray | int, mant: np.ndarray | int, shift: np.ndarray | int,
                           cols: int, offset: np.ndarray | int | None = None) -> np.ndarray:
    """The constants of :func:`gemm_epilogue_f64` as float64 [4, cols]: bias, multiplier, 2**-shift and the
    offset."""
    t = epilogue_columns(bias, mant, shift, cols, offset)
    return np.stack([t[0].astype(np.float64), t[1].astype(np.float64), np.ldexp(1.0, -t[2]),
                     t[5].astype(np.float64)])


def float_epilogue_exact(bound: int, bias: np.ndarray | int, mant: np.ndarray | int,
                         offset: np.ndarray | int | None = None) -> bool:
    """Whether :func:`gemm_epilogue_f64` is exact for accumulators |acc| <= bound: every biased accumulator's
    product with the multiplier, plus the offset, below 2**53 (then the product, the sum, its scaling by 2**-s
    and the half-to-even rounding of that are all exact in float64)."""
    b = int(np.max(np.abs(np.asarray(bias, dtype=np.int64)), initial=0))
    m = int(np.max(np.abs(np.asarray(mant, dtype=np.int64)), initial=0))
    o = int(np.max(np.abs(np.asarray(0 if offset is None else offset, dtype=np.int64)), initial=0))
    return (int(bound) + b) * max(m, 1) + o < 2**53


@jit
def gemm_epilogue_f64(acc, fcols, params, out):  # noqa: ANN001, ANN201
    """:func:`gemm_epilogue` with half-to-even requantization, in float64 (vectorizes better than int64);
    only where :func:`float_epilogue_exact` holds: then v * mant is exact, scaling it by 2**-shift is
    exact, and ``rint`` rounds half to even, so the result is rshift_round(v * mant, shift) exactly."""
    rows, n = acc.shape
    relu = params[0] != 0
    zp, lo, hi = np.float64(params[2]), np.float64(params[3]), np.float64(params[4])
    bias, mant, scale, off = fcols[0], fcols[1], fcols[2], fcols[3]
    for i in range(rows):
        for j in range(n):
            v = np.float64(acc[i, j]) + bias[j]
            if relu:
                v = max(v, 0.0)
            q = np.rint((v * mant[j] + off[j]) * scale[j]) + zp
            out[i, j] = np.int64(min(max(q, lo), hi))


class OutputStage:
    """A node's output stage, constants prepared once: ``epi(acc, out)`` runs :func:`gemm_epilogue_f64` where
    that is exact for accumulators up to ``bound`` (half-to-even requantization), :func:`gemm_epilogue`
    otherwise. ``cols``/``params`` are the integer kernel's constants (also for :func:`dense_int`)."""

    def __init__(self, cols: int, bias: np.ndarray | int, relu: bool, requant: bool, mant: np.ndarray | int = 1,
                 shift: np.ndarray | int = 0, zp: int = 0, lo: int = 0, hi: int = 0, mode: int = HALF_EVEN,
                 zp_in: int = 0, bound: int | None = None, offset: np.ndarray | int | None = None) -> None:
        self.cols = epilogue_columns(bias, mant, shift, cols, offset)
        self.params = epilogue_params(relu, requant, zp, lo, hi, mode, zp_in)
        self.fcols = None
        if requant and mode == HALF_EVEN and bound is not None and float_epilogue_exact(bound, bias, mant, offset):
            self.fcols = float_epilogue_columns(bias, mant, shift, cols, offset)

    def __call__(self, acc: np.ndarray, out: np.ndarray) -> None:
        if self.fcols is not None:
            gemm_epilogue_f64(acc, self.fcols, self.params, out)
        else:
            gemm_epilogue(acc, self.cols, self.params, out)


@jit
def int_gemm(x, zp, w, acc):  # noqa: ANN001, ANN201
    """acc[i, n] = sum_k (x[i, k] - zp) * w[n, k] in int64 (small problems: no BLAS call, no conversions)."""
    rows, k = x.shape
    n_out = w.shape[0]
    xs = np.empty(k, np.int64)
    for i in range(rows):
        for t in range(k):
            xs[t] = np.int64(x[i, t]) - zp
        for n in range(n_out):
            s = np.int64(0)
            for t in range(k):
                s += xs[t] * np.int64(w[n, t])
            acc[i, n] = s


@jit
def dense_int(x, w, cols, params, out):  # noqa: ANN001, ANN201
    """A small dense layer in one call: :func:`int_gemm` (input zero point params[6]), then
    :func:`gemm_epilogue`. x [..., K] and out [..., N] C-contiguous, any number of leading axes."""
    k, n = w.shape[1], w.shape[0]
    rows = x.size // k
    acc = np.empty((rows, n), np.int64)
    int_gemm(x.reshape((rows, k)), params[6], w, acc)
    gemm_epilogue(acc, cols, params, out.reshape((rows, n)))


@jit
def softmax_rows(x, table, mant, shift, out_bits, out):  # noqa: ANN001, ANN201
    """Integer softmax of each row of a 2-D array (see vaqf.ops.softmax for the definition)."""
    rows, n = x.shape
    last = np.int64(table.size - 1)
    top = (np.int64(1) << np.int64(out_bits)) - 1
    oshift = np.int64(32 - out_bits)
    e = np.empty(n, np.int64)
    for i in range(rows):
        mx = np.int64(x[i, 0])
        for j in range(1, n):
            mx = max(mx, np.int64(x[i, j]))
        total = np.int64(0)
        for j in range(n):
            d = mx - np.int64(x[i, j])
            idx = min(rshift_half_even(d * mant, shift), last)
            e[j] = np.int64(table[idx])
            total += e[j]
        recip = (np.int64(1) << np.int64(32)) // total
        for j in range(n):
            out[i, j] = min(rshift_half_even(e[j] * recip, oshift), top)


@jit
def layernorm_rows(x, gamma, beta, eps, f_bits, fg_bits, zp, lo, hi, out):  # noqa: ANN001, ANN201
    """Integer LayerNorm of each row of a 2-D array (see vaqf.ops.layernorm for the definition)."""
    rows, d = x.shape
    d64 = np.int64(d)
    y = np.empty(d, np.int64)
    for i in range(rows):
        total = np.int64(0)
        for j in range(d):
            total += np.int64(x[i, j])
        v = np.int64(0)
        for j in range(d):
            y[j] = d64 * np.int64(x[i, j]) - total
            v += y[j] * y[j]
        s = max(isqrt(v // d64 + eps), np.int64(1))
        inv = 1.0 / np.float64(s)
        for j in range(d):
            n = round_div_half_even(y[j] << f_bits, s, inv)
            q = rshift_half_even(n * np.int64(gamma[j]) + np.int64(beta[j]), fg_bits) + zp
            out[i, j] = min(max(q, lo), hi)


@jit
def add_scaled(a, b, zpa, zpb, ma, mb, shift, zp, lo, hi, out):  # noqa: ANN001, ANN201
    """out = saturate(rshift_round((a - zpa) * ma + (b - zpb) * mb, shift) + zp); 2-D, a row of 1 broadcasts."""
    rows, n = out.shape
    for i in range(rows):
        ia = 0 if a.shape[0] == 1 else i
        ib = 0 if b.shape[0] == 1 else i
        for j in range(n):
            s = (np.int64(a[ia, j]) - zpa) * ma + (np.int64(b[ib, j]) - zpb) * mb
            out[i, j] = min(max(rshift_half_even(s, shift) + zp, lo), hi)


@jit
def table_lookup(x, table, in_min, out):  # noqa: ANN001, ANN201
    """out = table[x - in_min], 1-D; an input outside the table raises IndexError."""
    n = np.int64(table.size)
    for i in range(x.size):
        k = np.int64(x[i]) - in_min
        if k < 0 or k >= n:
            raise IndexError("table input out of range")
        out[i] = table[k]


@jit
def quantize_half_even(x, scale, zp, lo, hi, out):  # noqa: ANN001, ANN201
    """out = saturate(rint(float64(x) / scale) + zp), element by element (both C-contiguous, same size):
    host-side quantization, as numpy does it.

    Values whose rounding does not fit int64 (and NaN) become INT64_MIN before the zero point is added, as
    numpy's float-to-int64 conversion does on x86-64; the sum wraps as numpy's int64 addition does.
    """
    x = x.reshape(x.size)
    out = out.reshape(out.size)
    for i in range(x.size):
        v = np.rint(np.float64(x[i]) / scale)
        q = np.int64(v) if -9.223372036854775808e18 <= v < 9.223372036854775808e18 else np.int64(INT64_MIN)
        out[i] = min(max(q + zp, lo), hi)


@jit
def finish_output(q, scale, zp, ints, real):  # noqa: ANN001, ANN201
    """ints = int64(q); real = scale[k % S] * (float64(q) - zp) with S = scale.size (per tensor, or per
    channel on the last axis, possibly tiled to a multiple of the channel count so that the inner loop is long
    enough to vectorize): TensorInfo.dequantize's operations in its order. All C-contiguous, same size."""
    q = q.reshape(q.size)
    ints = ints.reshape(ints.size)
    real = real.reshape(real.size)
    c = scale.size
    if c == 1:
        s = scale[0]
        for i in range(q.size):
            v = np.int64(q[i])
            ints[i] = v
            real[i] = s * (np.float64(v) - zp)
    else:  # a run of S elements at a time (no modulo per element), then the rest
        full = q.size // c
        for r in range(full):
            o = r * c
            for j in range(c):
                v = np.int64(q[o + j])
                ints[o + j] = v
                real[o + j] = scale[j] * (np.float64(v) - zp)
        o = full * c
        for j in range(q.size - o):
            v = np.int64(q[o + j])
            ints[o + j] = v
            real[o + j] = scale[j] * (np.float64(v) - zp)
