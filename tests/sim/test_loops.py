"""The simulator's compiled kernels (vaqf.sim.loops) against exact rational arithmetic and straightforward
int64 numpy formulas, on edge cases; the per-node plans' alternative paths against each other; the
simulator's fast path (generated code, recycled buffers) against its plain interpreter."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.sim.test_qarith import ref_round
from vaqf.ir import Graph, IntType, TensorInfo
from vaqf.ir.qarith import Rounding, round_div, rshift_round
from vaqf.ops import get_spec
from vaqf.sim import loops as K
from vaqf.sim.plans import Scratch, storage_dtype
from vaqf.sim.simulator import Simulator

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
EDGE = [INT64_MIN, INT64_MIN + 1, -(2**62), -(2**53) - 1, -12345678901, -7, -6, -5, -4, -3, -2, -1, 0, 1, 2, 3, 4, 5,
        6, 7, 2**31 - 1, 2**53 + 1, 2**62, INT64_MAX - 1, INT64_MAX]
int64s = st.integers(INT64_MIN, INT64_MAX)


@pytest.mark.parametrize("mode", list(Rounding))
def test_rshift_round_matches_fractions_and_qarith(mode):
    for n in EDGE:
        for s in range(63):
            want = ref_round(Fraction(n, 2**s), mode)
            got = K.rshift_round(n, s, mode.cpp_id)
            assert got == want, (n, s, mode)
            assert got == int(rshift_round(np.int64(n), s, mode))
            if mode is Rounding.HALF_EVEN:
                assert K.rshift_half_even(n, s) == want


@settings(max_examples=300, deadline=None)
@given(int64s, st.integers(0, 62), st.sampled_from(list(Rounding)))
def test_rshift_round_random(n, s, mode):
    want = ref_round(Fraction(n, 2**s), mode)
    assert K.rshift_round(n, s, mode.cpp_id) == want
    assert K.rshift_half_even(n, s) == ref_round(Fraction(n, 2**s), Rounding.HALF_EVEN)


@pytest.mark.parametrize("mode", list(Rounding))
def test_round_div_matches_fractions(mode):
    for n in EDGE:
        for d in (1, 2, 3, 7, 10, 2**31 - 1, 2**40 + 3, INT64_MAX):
            want = ref_round(Fraction(n, d), mode)
            assert K.round_div(n, d, mode.cpp_id) == want, (n, d, mode)
            assert K.round_div(n, d, mode.cpp_id) == int(round_div(np.int64(n), np.int64(d), mode))


@settings(max_examples=500, deadline=None)
@given(st.integers(-(2**62), 2**62), st.integers(1, 2**40))
def test_round_div_half_even_reciprocal(n, d):
    """The float-reciprocal quotient is corrected to the exact one, also past 2**52 (the division path)."""
    want = ref_round(Fraction(n, d), Rounding.HALF_EVEN)
    assert K.round_div_half_even(n, d, 1.0 / d) == want


def test_round_div_half_even_ties_and_edges():
    for d in (1, 2, 3, 4, 5, 6, 7, 97, 1024, 2**31 - 1):
        for q in (-(2**30), -5, -1, 0, 1, 5, 2**30):
            for r in range(-2, 3):
                for n in (q * d + r, q * d + d // 2, q * d - d // 2, 2 * q * d + d):
                    want = ref_round(Fraction(n, d), Rounding.HALF_EVEN)
                    assert K.round_div_half_even(n, d, 1.0 / d) == want, (n, d)


def test_isqrt_exact():
    vals = [0, 1, 2, 3, 4, 15, 16, 17, 2**52 - 1, 2**52, 2**52 + 1, 2**62 - 1]
    vals += [k * k + e for k in (3, 2**26 - 1, 2**26, 2**31 - 1, 2**31) for e in (-1, 0, 1) if 0 <= k * k + e < 2**62]
    for v in vals:
        assert K.isqrt(v) == math.isqrt(v), v


def _ref_epilogue(acc, bias, relu, mant, shift, zp, lo, hi, mode, offset=None):
    out = np.empty(acc.shape, dtype=object)
    for (i, j), a in np.ndenumerate(acc):
        v = int(a) + int(bias[j])
        if relu:
            v = max(v, 0)
        if mant is None:
            out[i, j] = v
        else:
            o = 0 if offset is None else int(offset[j])
            q = ref_round(Fraction(v * int(mant[j]) + o, 2 ** int(shift[j])), mode) + zp
            out[i, j] = min(max(q, lo), hi)
    return out.astype(np.int64)


@pytest.mark.parametrize("mode", list(Rounding))
@pytest.mark.parametrize("relu", [False, True])
def test_gemm_epilogue_matches_fractions(mode, relu):
    rng = np.random.default_rng(mode.cpp_id)
    cols = 13
    acc = rng.integers(-(2**23), 2**23, size=(9, cols))
    acc[0, :] = [0, 1, -1, 2**23 - 1, -(2**23), 3, -3, 4, -4, 5, -5, 6, -6]
    bias = rng.integers(-1000, 1000, size=cols)
    mant = rng.integers(1, 2**24, size=cols)
    shift = rng.integers(0, 40, size=cols)
    shift[:3] = [0, 1, 2]
    mant[:3] = [1, 1, 3]
    for dt in (np.float32, np.int64, np.int32):
        a = acc.astype(dt)
        out = np.empty(acc.shape, np.int16)
        K.gemm_epilogue(a, K.epilogue_columns(bias, mant, shift, cols),
                        K.epilogue_params(relu, True, 7, -300, 300, mode.cpp_id), out)
        np.testing.assert_array_equal(out, _ref_epilogue(acc, bias, relu, mant, shift, 7, -300, 300, mode))
    out = np.empty(acc.shape, np.int64)
    K.gemm_epilogue(acc, K.epilogue_columns(bias, 1, 0, cols), K.epilogue_params(relu, False, 0, 0, 0, 0), out)
    np.testing.assert_array_equal(out, _ref_epilogue(acc, bias, relu, None, None, 0, 0, 0, mode))


@pytest.mark.parametrize("relu", [False, True])
def test_float_epilogue_exact_where_allowed(relu):
    """The float64 epilogue equals the exact definition wherever float_epilogue_exact admits it (ties
    included), and is refused where products may pass 2**53."""
    rng = np.random.default_rng(5)
    cols = 16
    for bound, mbits in ((2**24 - 1, 24), (2**28, 24), (2**21, 31)):
        acc = rng.integers(-bound, bound + 1, size=(40, cols))
        acc[0] = [0, 1, -1, bound, -bound, 2, -2, 3, -3, 4, -4, 5, -5, 6, -6, 7]
        bias = rng.integers(-50, 50, size=cols)
        mant = rng.integers(1, 2**mbits, size=cols)
        mant[:4] = [1, 1, 3, 2**mbits - 1]
        shift = rng.integers(0, 62, size=cols)
        shift[:4] = [0, 1, 2, 62]
        assert K.float_epilogue_exact(bound, bias, mant)
        for dt in (np.float32, np.float64, np.int64):
            if dt is np.float32 and bound >= 2**24:
                continue
            out = np.empty(acc.shape, np.int32)
            K.gemm_epilogue_f64(acc.astype(dt), K.float_epilogue_columns(bias, mant, shift, cols),
                                K.epilogue_params(relu, True, -9, -(2**31), 2**31 - 1, 0), out)
            want = _ref_epilogue(acc, bias, relu, mant, shift, -9, -(2**31), 2**31 - 1, Rounding.HALF_EVEN)
            np.testing.assert_array_equal(out, want)
    # ties: v * mant = (2k + 1) * 2**(s-1)
    s = np.arange(1, 40)
    acc = np.stack([(2 * np.arange(6)[:, None] + 1) * (1 << (s - 1))[None, :], -(2 * np.arange(6)[:, None] + 1)
                    * (1 << (s - 1))[None, :]]).reshape(12, -1)
    out = np.empty(acc.shape, np.int64)
    K.gemm_epilogue_f64(acc, K.float_epilogue_columns(0, 1, s, s.size), K.epilogue_params(False, True, 0, -(2**40),
                                                                                           2**40, 0), out)
    np.testing.assert_array_equal(out, _ref_epilogue(acc, np.zeros(s.size, np.int64), False, np.ones(s.size), s, 0,
                                                     -(2**40), 2**40, Rounding.HALF_EVEN))
    assert not K.float_epilogue_exact(2**30, 0, 2**24)
    assert K.OutputStage(4, 0, False, True, 2**24, 30, bound=2**30).fcols is None
    assert K.OutputStage(4, 0, False, True, 2**20, 30, bound=2**24).fcols is not None
    assert K.OutputStage(4, 0, False, True, 2**20, 30, mode=Rounding.FLOOR.cpp_id, bound=2**24).fcols is None


def _softmax_numpy(x, table, mant, shift, out_bits):
    """The op's definition as int64 numpy passes (the simulator's implementation before the kernels)."""
    xi = np.asarray(x, dtype=np.int64)
    d = xi.max(axis=-1, keepdims=True) - xi
    idx = np.minimum(rshift_round(d * mant, shift), table.size - 1)
    e = table[idx]
    recip = (np.int64(1) << 32) // e.sum(axis=-1, keepdims=True)
    return np.minimum(rshift_round(e * recip, 32 - out_bits), 2**out_bits - 1)


@pytest.mark.parametrize("bits", [4, 8, 16])
def test_softmax_kernel_matches_numpy_definition(bits):
    from vaqf.ops.softmax import softmax_attrs
    from vaqf.sim.fast import softmax_fast

    rng = np.random.default_rng(bits)
    for scale in (0.002, 0.05, 0.4):
        a = softmax_attrs(scale, bits)
        x = rng.integers(-128, 128, size=(5, 7, 33))
        x[0, 0] = 5  # a constant row
        x[0, 1] = [-128] * 32 + [127]  # one dominant entry
        want = _softmax_numpy(x, a["table"], a["idx_mantissa"], a["idx_shift"], bits)
        got = softmax_fast(x.astype(np.int8), a["table"], a["idx_mantissa"], a["idx_shift"], bits)
        np.testing.assert_array_equal(got, want)


def _layernorm_numpy(x, a):
    from vaqf.ir.qarith import saturate
    from vaqf.ops.layernorm import F_BITS, FG_BITS, isqrt_array

    xi = np.asarray(x, dtype=np.int64)
    d = xi.shape[-1]
    y = d * xi - xi.sum(axis=-1, keepdims=True)
    v = (y * y).sum(axis=-1, keepdims=True)
    s = np.maximum(isqrt_array(v // d + int(a["eps_q"])), 1)
    n = round_div(y << F_BITS, s)
    q = rshift_round(n * a["gamma_q"] + a["beta_q"], FG_BITS, Rounding.HALF_EVEN) + int(a["zero_point"])
    return saturate(q, int(a["qtype"].min), int(a["qtype"].max))


@pytest.mark.parametrize("in_bits", [8, 16])
def test_layernorm_kernel_matches_numpy_definition(in_bits):
    from vaqf.ops.layernorm import layernorm_attrs
    from vaqf.sim.fast import layernorm_fast

    rng = np.random.default_rng(in_bits)
    d = 48
    for out_zp, eps in ((0, 1e-6), (3, 1e-2), (-5, 0.0)):
        a = layernorm_attrs(rng.normal(1, 0.3, d), rng.normal(0, 0.2, d), eps, 0.05, 0.03, IntType(8), out_zp, "t")
        hi = 2 ** (in_bits - 1)
        x = rng.integers(-hi, hi, size=(6, 5, d))
        x[0, 0] = 7  # constant row: variance 0
        x[0, 1] = [-hi, hi - 1] * (d // 2)  # extreme
        x[0, 2] = 0
        x[0, 2, 0] = hi - 1  # one outlier
        np.testing.assert_array_equal(layernorm_fast(x, a), _layernorm_numpy(x, a))


def test_add_lut_requant_kernels_match_numpy():
    from vaqf.ir.qarith import requantize, saturate
    from vaqf.ops.add import add_attrs

    rng = np.random.default_rng(3)
    at = add_attrs(0.03, 0.011, 0.02, IntType(8), -3, "t")
    a = rng.integers(-128, 128, size=(4, 50))
    b = rng.integers(0, 256, size=(1, 50))  # one sample: broadcasts
    out = np.empty((4, 50), np.int8)
    K.add_scaled(a, b, 1, 128, at["ma"], at["mb"], at["shift"], at["zero_point"], -128, 127, out)
    s = (a - 1) * at["ma"] + (b - 128) * at["mb"]
    np.testing.assert_array_equal(out, saturate(rshift_round(s, at["shift"]) + at["zero_point"], -128, 127))

    table = rng.integers(-100, 100, size=256)
    x = rng.integers(-128, 128, size=300)
    got = np.empty(300, np.int64)
    K.table_lookup(x.astype(np.int8), table, -128, got)
    np.testing.assert_array_equal(got, table[x + 128])
    with pytest.raises(IndexError):
        K.table_lookup(np.array([127], np.int16), table[:10], -128, got[:1])

    for mode in Rounding:
        acc = rng.integers(-(2**20), 2**20, size=(7, 6))
        mant, shift = rng.integers(1, 2**24, size=6), rng.integers(0, 30, size=6)
        out = np.empty((7, 6), np.int64)
        K.gemm_epilogue(acc, K.epilogue_columns(-5, mant, shift, 6), K.epilogue_params(False, True, 2, -50, 60,
                                                                                         mode.cpp_id), out)
        np.testing.assert_array_equal(out, requantize(acc - 5, mant, shift, 2, -50, 60, mode))


def test_quantize_and_finish_match_numpy():
    from vaqf.ir.qarith import round_real, saturate

    x = np.array([0.0, -0.0, 0.5, 1.5, 2.5, -0.5, -1.5, 0.49999999999999994, -0.49999999999999994, 1e300, -1e300,
                  np.inf, -np.inf, np.nan, 127.4, 127.6, -128.5, 9.2e18, -9.3e18, 1e-300])
    for scale, zp, lo, hi in ((1.0, 0, -128, 127), (0.003, 7, 0, 255), (2.0**-7, -3, -32768, 32767)):
        with np.errstate(invalid="ignore", over="ignore"):
            want = saturate(round_real(x / np.array([scale])) + zp, lo, hi)
        for dt in (np.float64, np.float32):
            xs = x.astype(dt) if dt is np.float64 else x[np.abs(np.nan_to_num(x)) < 3e38].astype(dt)
            with np.errstate(invalid="ignore", over="ignore"):
                w = want if dt is np.float64 else saturate(round_real(xs.astype(np.float64) / np.array([scale])) + zp,
                                                          lo, hi)
            got = np.empty(xs.size, np.int64)
            K.quantize_half_even(xs, scale, zp, lo, hi, got)
            np.testing.assert_array_equal(got, w)

    info = TensorInfo((1, 2, 3), IntType(16), np.array([0.5, 0.25, 3.0]), 11)
    q = np.random.default_rng(0).integers(-32768, 32768, size=(4, 1, 2, 3))
    ints, real = np.empty(q.size, np.int64), np.empty(q.size, np.float64)
    K.finish_output(q.astype(np.int16).ravel(), info.scale, 11.0, ints, real)
    np.testing.assert_array_equal(ints, q.ravel())
    np.testing.assert_array_equal(real, info.dequantize(q).ravel())
    q = np.random.default_rng(1).integers(-32768, 32768, size=(5, 1, 2, 3))  # 30 values, scale tiled to 12
    ints, real = np.empty(q.size, np.int64), np.empty(q.size, np.float64)
    K.finish_output(q.astype(np.int16).ravel(), np.tile(info.scale, 4), 11.0, ints, real)
    np.testing.assert_array_equal(ints, q.ravel())
    np.testing.assert_array_equal(real, info.dequantize(q).ravel())


def _dense_graph(bound_bits: int, zp: int, relu: bool, requant: bool, force_bound: int | None,
                 signed: bool = False) -> Graph:
    from vaqf.ops.common import requant_params
    from vaqf.ops.dense import acc_type

    rng = np.random.default_rng(bound_bits)
    k, n = 40, 24
    w = rng.integers(-(2 ** (bound_bits - 1)), 2 ** (bound_bits - 1), size=(n, k))
    x = TensorInfo((1, 3, k), IntType(8, signed=signed), np.array([0.02]), zp)
    attrs = {"weight": w, "w_type": IntType(bound_bits), "w_scale": np.full(n, 0.01), "relu": relu,
             "bias": rng.integers(-5000, 5000, size=n), "zp_in": zp, "rows": 3}
    at = acc_type(type("N", (), {"attrs": attrs})(), x)
    attrs["acc_bits"] = at.bits
    attrs["acc_bound"] = force_bound or int(at.max)  # any upper bound is valid; a larger one picks a wider path
    if requant:
        attrs["requant"] = requant_params(np.full(n, 0.0002), 0.05, n, IntType(8), 3, "HALF_EVEN", "t")
    g = Graph("dense")
    v = g.add_input("x", x)
    out = g.new_value("y", x)
    node = g.add_node("dense", [v], [out], attrs, name="d")
    out.info = get_spec("dense").infer(node, [x])[0]
    g.outputs = [out]
    return g


@pytest.mark.parametrize(("bound_bits", "force_bound"), [(8, None), (20, None), (16, 2**53)])  # f32, f64, int64
@pytest.mark.parametrize(("zp", "relu", "requant"), [(0, False, False), (128, True, True), (3, False, True)])
def test_dense_paths_agree(monkeypatch, bound_bits, force_bound, zp, relu, requant):
    """The integer kernel (small problems) and the BLAS path give the same integers as int64 numpy."""
    from vaqf.sim import fast

    g = _dense_graph(bound_bits, zp, relu, requant, force_bound)
    node = next(iter(g.topo()))
    x = np.random.default_rng(1).integers(0, 256, size=(50, 1, 3, 40))
    acc = (x.astype(np.int64) - zp) @ node.attrs["weight"].T.astype(np.int64) + node.attrs["bias"]
    if relu:
        acc = np.maximum(acc, 0)
    want = acc
    if requant:
        from vaqf.ir.qarith import requantize

        rq = node.attrs["requant"]
        want = requantize(acc, rq["mantissa"], rq["shift"], rq["zero_point"], rq["qtype"].min, rq["qtype"].max)
    results = []
    for small in (0, 1 << 40):  # BLAS (or int64 beyond 2**53), then always the integer kernel
        monkeypatch.setattr(fast, "SMALL_GEMM", small)
        got = fast.run_fast(node, [x])[0]
        assert got.dtype == np.int64
        np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(get_spec("dense").reference(node, [x])[0], want)
        plan = fast.dense_plan(node, Scratch())
        out = plan([x.astype(np.uint8)])[0]
        assert out.dtype == (storage_dtype(node.attrs["requant"]["qtype"]) if requant else np.int64)
        results.append(out)
    np.testing.assert_array_equal(results[0], results[1])


def test_matmul_views_match_index_gather():
    """Operands read through strided views (as_strided) equal the index-array gather of their definition."""
    from vaqf.ops.strided_copy import source_index
    from vaqf.sim.plans import scatter_strided, strided_view

    rng = np.random.default_rng(0)
    x = rng.integers(-128, 128, size=(3, 1, 10, 24)).astype(np.int8)
    for shape, strides, base in (((1, 2, 10, 4), [0, 4, 24, 1], 0), ((1, 2, 4, 10), [0, 4, 1, 24], 8),
                                 ((2, 3), [-1, 5], 20)):
        idx = source_index(shape, strides, base).reshape(-1)
        want = x.reshape(3, -1)[:, idx].reshape((3,) + shape)
        np.testing.assert_array_equal(strided_view(x, shape, strides, base), want)
    acc = rng.integers(-5, 5, size=(3, 1, 2, 10, 4))
    out = scatter_strided(acc, (1, 10, 2, 4), [0, 4, 8, 1], 0)
    pos = source_index(acc.shape[1:], [0, 4, 8, 1], 0).reshape(-1)
    want = np.empty((3, 80), np.int64)
    want[:, pos] = acc.reshape(3, -1)
    np.testing.assert_array_equal(out.reshape(3, -1), want)


def test_fast_path_equals_interpreter_and_recycles_safely():
    """Generated code with recycled buffers (large batches), tiny batches and the plain interpreter (traced)
    give the same integers, run after run, whatever the batch sizes in between."""
    import vaqf
    from vaqf.examples import example_inputs, example_model

    g = vaqf.load_model(example_model("mlp"))
    x, _ = example_inputs("mlp")
    x = np.tile(x, (4, 1))[:1200]
    sim = Simulator(g)
    ref = sim.run([x], trace=True)
    assert sim._pooled_batch <= 1200
    for batch in (1200, 7, 1200, 1, 600, 1200):
        got = np.concatenate([sim.run([x[i:i + batch]]).outputs[0] for i in range(0, 1200, batch)])
        np.testing.assert_array_equal(got, ref.outputs[0])
    again = sim.run([x])
    np.testing.assert_array_equal(again.dequantized[0], ref.dequantized[0])
    assert again.outputs[0].dtype == np.int64
    assert all(a.dtype == np.int64 for a in ref.trace.values())


@pytest.mark.parametrize("kind", ["u8s8", "u8u8"])
@pytest.mark.parametrize(("wlo", "whi", "zp"), [(-128, 127, 0), (-128, 127, 201), (-1, 1, 3), (-8, 7, 128),
                                                 (-64, 64, 255)])
def test_int_gemm_exact(kind, wlo, whi, zp):
    """MLAS's integer GEMMs (vaqf.sim.gemm.IntGemm) give (x - zp) @ w.T exactly, worst cases included (rows of
    255 against weight rows of 127 and -128: the pair sums that saturate int16 in the non-VNNI u8s8 kernel).
    The u8s8 kernel is only used where :func:`u8s8_exact` or small weights allow it; here it is checked
    directly where it applies."""
    from vaqf.sim import gemm

    if gemm._int_session(kind) is None:
        pytest.skip("onnxruntime unavailable")
    if kind == "u8s8" and max(-wlo, whi) > 64 and not gemm.u8s8_exact():
        pytest.skip("this CPU's uint8 x int8 kernel saturates int16 pair sums (IntGemm uses u8u8 here)")
    rng = np.random.default_rng(-wlo * 7 + zp)
    m, k, n = 301, 129, 37
    x = rng.integers(0, 256, size=(m, k)).astype(np.uint8)
    x[:3] = 255
    x[3] = 0
    w = rng.integers(wlo, whi + 1, size=(n, k))
    w[0], w[1] = whi, wlo
    bound = int(np.abs(w).sum(axis=1).max()) * 255
    ig = gemm.IntGemm.make(w, zp, bound, kind)
    assert ig is not None and ig.b.dtype == (np.int8 if kind == "u8s8" else np.uint8)
    got = ig(x, np.empty((m, n), np.int32))
    np.testing.assert_array_equal(got, (x.astype(np.int64) - zp) @ w.T.astype(np.int64))
    wide = w.copy()
    wide[0, 0] = 128  # beyond int8
    assert gemm.IntGemm.make(wide, zp, bound) is None
    assert gemm.IntGemm.make(w, 256, bound) is None and gemm.IntGemm.make(w, zp, 2**31) is None


@pytest.mark.parametrize(("zp", "relu", "requant", "signed"),
                         [(0, False, False, False), (128, True, True, False), (3, False, True, False),
                          (0, False, False, True), (-128, True, True, True), (-5, False, True, True)])
def test_dense_int_gemm_equals_float_gemm(monkeypatch, zp, relu, requant, signed):
    """A dense layer on uint8 or int8 activations (these as uint8 x + 128) gives the same integers through the
    integer GEMM as through the float GEMM (INT_GEMM off) and the int64 kernel."""
    from vaqf.sim import fast, gemm

    g = _dense_graph(8, zp, relu, requant, None, signed)
    node = next(iter(g.topo()))
    dt = np.int8 if signed else np.uint8
    info = np.iinfo(dt)
    x = np.random.default_rng(2).integers(info.min, info.max + 1, size=(400, 1, 3, 40)).astype(dt)
    x[0], x[1] = info.max, info.min
    calls = []
    call = gemm.IntGemm.__call__
    monkeypatch.setattr(gemm.IntGemm, "__call__", lambda self, a, out: calls.append(a.dtype) or call(self, a, out))
    results = []
    for on, small in ((True, 0), (False, 0), (False, 1 << 40)):
        monkeypatch.setattr(gemm, "INT_GEMM", on)
        monkeypatch.setattr(fast, "SMALL_GEMM", small)
        results.append(fast.dense_plan(node, Scratch())([x])[0])
    if gemm._int_session("u8u8") is not None:
        assert calls == [np.dtype(np.uint8)]  # the first run went through the integer GEMM, on uint8
    for r in results[1:]:
        assert r.dtype == results[0].dtype
        np.testing.assert_array_equal(r, results[0])


@pytest.mark.parametrize("mode", list(Rounding))
def test_epilogue_offsets_equal_the_exact_definition(mode):
    """The sub-step offset (a folded BatchNormalization's bias below one accumulator step) is added to the
    product before the shift: the integer and float64 epilogues and qarith.requantize equal
    round((v * m + o) / 2**s) computed in fractions, offsets of both signs up to 2**24."""
    from vaqf.ir.qarith import requantize

    rng = np.random.default_rng(11)
    cols = 12
    acc = rng.integers(-(2**20), 2**20, size=(30, cols))
    bias = rng.integers(-100, 100, size=cols)
    mant = rng.integers(1, 2**24, size=cols)
    shift = rng.integers(1, 40, size=cols)
    offset = rng.integers(-(2**24) + 1, 2**24, size=cols)
    offset[:3] = [0, 1, -1]
    want = _ref_epilogue(acc, bias, False, mant, shift, 3, -500, 500, mode, offset)
    out = np.empty(acc.shape, np.int32)
    K.gemm_epilogue(acc, K.epilogue_columns(bias, mant, shift, cols, offset),
                    K.epilogue_params(False, True, 3, -500, 500, mode.cpp_id), out)
    np.testing.assert_array_equal(out, want)
    np.testing.assert_array_equal(requantize(acc + bias, mant, shift, 3, -500, 500, mode, offset=offset), want)
    if mode is Rounding.HALF_EVEN:
        assert K.float_epilogue_exact(2**20, bias, mant, offset)
        K.gemm_epilogue_f64(acc, K.float_epilogue_columns(bias, mant, shift, cols, offset),
                            K.epilogue_params(False, True, 3, -500, 500, mode.cpp_id), out)
        np.testing.assert_array_equal(out, want)
