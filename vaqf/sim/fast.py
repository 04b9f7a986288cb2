"""The simulator's fast paths: per op kind, a plan (see :mod:`vaqf.sim.plans`) computing exactly what the op's
readable reference (``reference`` in vaqf/ops/<kind>.py) computes, through compiled loops
(:mod:`vaqf.sim.loops`), float BLAS where that is provably exact (:mod:`vaqf.sim.gemm`) and buffers recycled
between nodes. tests/ops/test_<kind>.py holds each one equal to its reference on edge cases and random
inputs; an op without an entry here runs its reference.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from vaqf.ir import IntType, Node
from vaqf.ir.qarith import Rounding
from vaqf.ops.layernorm import F_BITS, FG_BITS
from vaqf.ops.matmul import accumulator_bound
from vaqf.sim import gemm
from vaqf.sim.loops import (
    OutputStage,
    add_scaled,
    dense_int,
    epilogue_columns,
    epilogue_params,
    gemm_epilogue,
    int_gemm,
    layernorm_rows,
    softmax_rows,
    table_lookup,
)
from vaqf.sim.plans import Plan, Scratch, reference_of, scatter_strided, storage_dtype, strided_view

#: multiply-accumulates per call below which the integer kernel beats float conversions and a BLAS call
SMALL_GEMM = 1 << 15


def _accumulate(rows: np.ndarray, weight: np.ndarray, zp_in: int, bound: int,
                w_t: np.ndarray | None, scratch: Scratch | None = None) -> np.ndarray:
    """sum_k (rows[i, k] - zp_in) * weight[n, k], exactly: in int64 for small problems and beyond 2**53 (the
    compiled kernel), else as a float product (:func:`vaqf.sim.gemm.matmul_into`) in float32 when every
    partial sum provably fits its 24-bit mantissa, float64 below 2**53. ``w_t``: the weights transposed
    [K, N], contiguous, in that float type (converted here when None). Returns a float or int64 array of
    integers [rows, N] (a scratch buffer when ``scratch`` is given)."""
    n_out, k = weight.shape
    if rows.shape[0] * k * n_out <= SMALL_GEMM or bound >= 2**53:
        acc = np.empty((rows.shape[0], n_out), np.int64)
        int_gemm(np.ascontiguousarray(rows), np.int64(zp_in), weight, acc)
        return acc
    scratch = scratch if scratch is not None else Scratch()
    dt = np.float32 if bound < 2**24 else np.float64
    xf = scratch.get("gemm_a", rows.shape, dt)
    np.copyto(xf, rows, casting="unsafe")  # exact: |x| < 2**24
    if zp_in:
        xf -= dt(zp_in)
    if w_t is None or w_t.dtype != dt:
        w_t = np.ascontiguousarray(weight.T.astype(dt))
    return gemm.matmul_into(xf, w_t, scratch.get("gemm_acc", (rows.shape[0], n_out), dt))  # one 2-D GEMM


def dense_plan(node: Node, scratch: Scratch) -> Plan:
    """The node as one function of its input: GEMM (see :func:`_accumulate`; on 8-bit activations, large
    problems run on MLAS's integer kernels, :class:`vaqf.sim.gemm.IntGemm`, int32 accumulators, no float
    conversion), then bias, ReLU and requantization fused in one compiled pass writing the output's storage
    dtype."""
    weight = np.ascontiguousarray(node.attrs["weight"])
    n_out, k = weight.shape
    zp = int(node.attrs["zp_in"])
    bound = int(node.attrs["acc_bound"])
    relu = bool(node.attrs.get("relu"))
    rq = node.attrs.get("requant")
    if rq is not None:
        out_dt = storage_dtype(rq["qtype"])
        epi = OutputStage(n_out, node.attrs["bias"], relu, True, rq["mantissa"], rq["shift"], int(rq["zero_point"]),
                          int(rq["qtype"].min), int(rq["qtype"].max), Rounding(rq["rounding"]).cpp_id, zp, bound,
                          rq.get("offset"))
    else:  # the accumulator itself: int64, which holds whatever the inputs are
        out_dt = np.dtype(np.int64)
        epi = OutputStage(n_out, node.attrs["bias"], relu, False, zp_in=zp)
    cols, params = epi.cols, epi.params
    w_float: list[np.ndarray] = []  # converted on first use by a large batch, then kept
    small = SMALL_GEMM // (k * n_out) if bound < 2**53 else -1  # rows up to which the integer kernel runs
    fdt = np.float32 if bound < 2**24 else np.float64
    new = scratch.new

    igemm: dict[bool, gemm.IntGemm | None] = {}  # 8-bit activations (signed?): MLAS's integer GEMM, made once
    int_rows = gemm.INT_MIN_MACS // (k * n_out) if bound < 2**31 else -1

    def run(inputs: list[np.ndarray]) -> list[np.ndarray]:
        x = inputs[0]
        r = x.size // k
        if r <= small:
            if not x.flags.c_contiguous:
                x = np.ascontiguousarray(x)
            out = np.empty(x.shape[:-1] + (n_out,), out_dt)
            dense_int(x, weight, cols, params, out)
            return [out]
        rows = x.reshape(-1, k)
        if (x.dtype == np.uint8 or x.dtype == np.int8) and 0 <= int_rows <= r:
            signed = x.dtype == np.int8
            if signed not in igemm:  # int8 activations go in as uint8 x + 128 (= x ^ 0x80), zero point zp + 128
                igemm[signed] = gemm.IntGemm.make(weight, zp + 128 * signed, bound) if gemm.INT_GEMM else None
            ig = igemm[signed]
            if ig is not None:
                if signed:
                    xu = scratch.get("gemm_a", rows.shape, np.uint8)
                    np.bitwise_xor(rows.view(np.uint8), np.uint8(0x80), out=xu)
                    rows = xu
                out = new((r, n_out), out_dt)
                epi(ig(rows, scratch.get("gemm_acc", (r, n_out), np.int32)), out)
                return [out.reshape(x.shape[:-1] + (n_out,))]
        if small < 0:
            out = new((r, n_out), out_dt)
            dense_int(np.ascontiguousarray(rows), weight, cols, params, out)
        else:
            if not w_float:
                w_float.append(np.ascontiguousarray(weight.T.astype(fdt)))
            out = new((r, n_out), out_dt)
            epi(_accumulate(rows, weight, zp, bound, w_float[0], scratch), out)
        return [out.reshape(x.shape[:-1] + (n_out,))]

    return run


def matmul_plan(node: Node, scratch: Scratch) -> Plan:
    """The node as one function of its inputs: both operands read through their views (zero-copy strided
    views) into float buffers, one batched BLAS product (exact: float32 when every partial sum fits the
    24-bit mantissa, float64 below 2**53, int64 beyond), then ReLU and requantization in one compiled pass
    writing the output's storage dtype, placed through ``out_view``."""
    views = [node.attrs.get("a_view"), node.attrs.get("b_view")]
    zps = (int(node.inputs[0].info.zero_point), int(node.inputs[1].info.zero_point))
    bound = accumulator_bound(node)
    dt = np.float32 if bound < 2**24 else np.float64 if bound < 2**53 else np.int64
    b_shape = tuple(views[1]["shape"]) if views[1] is not None else node.inputs[1].info.shape
    n = b_shape[-1]
    relu = bool(node.attrs.get("relu"))
    rq = node.attrs.get("requant")
    if rq is not None:
        out_dt = storage_dtype(rq["qtype"])
        epi = OutputStage(n, 0, relu, True, rq["mantissa"], rq["shift"], int(rq["zero_point"]), int(rq["qtype"].min),
                          int(rq["qtype"].max), Rounding(rq["rounding"]).cpp_id, bound=bound)
    else:
        out_dt = np.dtype(np.int64)
        epi = OutputStage(n, 0, relu, False)
    out_view = node.attrs.get("out_view")

    def operand_array(i: int, x: np.ndarray, role: str) -> np.ndarray:
        view = views[i]
        if view is not None:
            x = strided_view(x, tuple(view["shape"]), list(view["strides"]), int(view["base"]))
        buf = scratch.get(role, x.shape, dt)
        np.copyto(buf, x, casting="unsafe")  # exact: |x| < 2**24
        if zps[i]:
            buf -= zps[i]
        return buf

    def run(inputs: list[np.ndarray]) -> list[np.ndarray]:
        xa = operand_array(0, inputs[0], "gemm_a")
        xb = operand_array(1, inputs[1], "gemm_b")
        acc_shape = np.broadcast_shapes(xa.shape[:-2], xb.shape[:-2]) + (xa.shape[-2], n)
        acc = gemm.matmul_into(xa, xb, scratch.get("gemm_acc", acc_shape, dt))
        if out_view is None:
            out = scratch.new(acc_shape, out_dt)
            epi(acc.reshape(-1, n), out.reshape(-1, n))
            return [out]
        tmp = scratch.get("epilogue", acc_shape, out_dt)
        epi(acc.reshape(-1, n), tmp.reshape(-1, n))
        return [scatter_strided(tmp, tuple(out_view["shape"]), list(out_view["strides"]), int(out_view["base"]),
                                scratch)]

    return run


def softmax_fast(x: np.ndarray, table: np.ndarray, mant: int, shift: int, out_bits: int,
                 out: np.ndarray | None = None) -> np.ndarray:
    """Softmax over the last axis (compiled, :func:`vaqf.sim.loops.softmax_rows`); int64 unless ``out``
    (an array of x's shape, any integer dtype holding b bits) is given."""
    xi = np.asarray(x)
    if out is None:
        out = np.empty(xi.shape, np.int64)
    n = xi.shape[-1]
    softmax_rows(np.ascontiguousarray(xi).reshape(-1, n), np.asarray(table, dtype=np.int64), int(mant), int(shift),
                 int(out_bits), out.reshape(-1, n))
    return out


def softmax_plan(node: Node, scratch: Scratch) -> Plan:
    a = node.attrs
    table, mant, shift, bits = np.asarray(a["table"], dtype=np.int64), int(a["idx_mantissa"]), int(a["idx_shift"]), \
        int(a["out_bits"])
    out_dt = storage_dtype(IntType(bits, signed=False))

    def run(inputs: list[np.ndarray]) -> list[np.ndarray]:
        x = inputs[0]
        return [softmax_fast(x, table, mant, shift, bits, scratch.new(x.shape, out_dt))]

    return run


def layernorm_fast(x: np.ndarray, a: dict, out: np.ndarray | None = None) -> np.ndarray:
    """LayerNorm over the last axis (compiled, :func:`vaqf.sim.loops.layernorm_rows`); int64 unless ``out``
    (an array of x's shape in a dtype holding the output type) is given. ``a``: the node's attributes."""
    xi = np.asarray(x)
    if out is None:
        out = np.empty(xi.shape, np.int64)
    d = xi.shape[-1]
    qt = a["qtype"]
    layernorm_rows(np.ascontiguousarray(xi).reshape(-1, d), np.asarray(a["gamma_q"], dtype=np.int64),
                   np.asarray(a["beta_q"], dtype=np.int64), int(a["eps_q"]), F_BITS, FG_BITS, int(a["zero_point"]),
                   int(qt.min), int(qt.max), out.reshape(-1, d))
    return out


def layernorm_plan(node: Node, scratch: Scratch) -> Plan:
    a = dict(node.attrs)
    a["gamma_q"] = np.asarray(a["gamma_q"], dtype=np.int64)
    a["beta_q"] = np.asarray(a["beta_q"], dtype=np.int64)
    out_dt = storage_dtype(a["qtype"])

    def run(inputs: list[np.ndarray]) -> list[np.ndarray]:
        x = inputs[0]
        return [layernorm_fast(x, a, scratch.new(x.shape, out_dt))]

    return run


def add_plan(node: Node, scratch: Scratch) -> Plan:
    """One compiled pass (:func:`vaqf.sim.loops.add_scaled`); a single-sample input (a constant) broadcasts
    over the samples."""
    at = node.attrs
    zpa, zpb = int(node.inputs[0].info.zero_point), int(node.inputs[1].info.zero_point)
    ma, mb, shift, zp = int(at["ma"]), int(at["mb"]), int(at["shift"]), int(at["zero_point"])
    lo, hi = int(at["qtype"].min), int(at["qtype"].max)
    out_dt = storage_dtype(at["qtype"])

    def run(inputs: list[np.ndarray]) -> list[np.ndarray]:
        a, b = (np.asarray(x) for x in inputs)
        shape = np.broadcast_shapes(a.shape, b.shape)
        if a.shape[1:] != shape[1:] or b.shape[1:] != shape[1:]:  # only the sample axis broadcasts cheaply
            a, b = np.broadcast_to(a, shape).copy(), np.broadcast_to(b, shape).copy()
        out = scratch.new(shape, out_dt)
        rows = shape[0]
        add_scaled(np.ascontiguousarray(a).reshape(a.shape[0], -1), np.ascontiguousarray(b).reshape(b.shape[0], -1),
                   zpa, zpb, ma, mb, shift, zp, lo, hi, out.reshape(rows, -1))
        return [out]

    return run


def lut_plan(node: Node, scratch: Scratch) -> Plan:
    """One compiled pass (:func:`vaqf.sim.loops.table_lookup`)."""
    a = node.attrs
    table, in_min, out_dt = np.asarray(a["table"], dtype=np.int64), int(a["in_min"]), storage_dtype(a["qtype"])

    def run(inputs: list[np.ndarray]) -> list[np.ndarray]:
        x = np.asarray(inputs[0])
        out = scratch.new(x.shape, out_dt)
        table_lookup(np.ascontiguousarray(x).reshape(-1), table, in_min, out.reshape(-1))
        return [out]

    return run


def requant_plan(node: Node, scratch: Scratch) -> Plan:
    """The GEMM epilogue kernel on the input minus its zero point (the "bias"), channels on the last axis."""
    a = node.attrs
    c = int(node.inputs[0].info.shape[-1]) if node.inputs[0].info.shape else 1
    cols = epilogue_columns(-int(node.inputs[0].info.zero_point), a["mantissa"], a["shift"], c, a.get("offset"))
    zp, lo, hi = int(a["zero_point"]), int(a["qtype"].min), int(a["qtype"].max)
    mode, out_dt = Rounding(a["rounding"]).cpp_id, storage_dtype(a["qtype"])
    params = epilogue_params(False, True, zp, lo, hi, mode)

    def run(inputs: list[np.ndarray]) -> list[np.ndarray]:
        x = np.asarray(inputs[0])
        out = scratch.new(x.shape, out_dt)
        gemm_epilogue(np.ascontiguousarray(x).reshape(-1, c), cols, params, out.reshape(-1, c))
        return [out]

    return run


#: op kind -> the builder of its fast plan
FAST_PLANS: dict[str, Callable[[Node, Scratch], Plan]] = {
    "add": add_plan,
    "dense": dense_plan,
    "layernorm": layernorm_plan,
    "lut": lut_plan,
    "matmul": matmul_plan,
    "requant": requant_plan,
    "softmax": softmax_plan,
}


def fast_plan(node: Node, scratch: Scratch) -> Plan | None:
    """The node's fast plan, or None when its op runs its reference."""
    make = FAST_PLANS.get(node.op)
    return None if make is None else make(node, scratch)


def run_fast(node: Node, inputs: list[np.ndarray]) -> list[np.ndarray]:
    """The fast path on arrays as ``OpSpec.reference`` takes them, int64 results (what the tests compare)."""
    plan = fast_plan(node, Scratch())
    if plan is None:
        raise KeyError(f"op {node.op} has no fast path")
    return reference_of(plan, inputs)
