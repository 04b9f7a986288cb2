"""layernorm: the integer square root, the reference on hand-checked cases, the fast path = the reference,
closeness to the float LayerNorm, overflow refused, the unit's cost and the C++ = the reference."""

import numpy as np
import pytest

from tests.helpers import assert_cycles_match
from tests.ops.opgraph import assert_fast_equals_reference, int_inputs, single_op
from vaqf.backend.emit import write_project
from vaqf.dse.search import design_for_knobs
from vaqf.errors import VaqfError
from vaqf.hw.board import get_board
from vaqf.hw.layout import LANE_CHOICES
from vaqf.ir import IntType, TensorInfo
from vaqf.ops.layernorm import F_BITS, isqrt_array, layernorm_attrs, reference
from vaqf.sim.simulator import Simulator
from vaqf.units import get_unit
from vaqf.units.layernorm import layer_bits, q_bits


def _graph(rng, d=48, in_bits=9, in_zp=3, out_bits=8, eps=1e-5, rows=5):
    gamma = rng.uniform(0.5, 1.5, d)
    beta = rng.uniform(-0.3, 0.3, d)
    in_scale, out_scale = 0.02, 4.0 / 127
    info = TensorInfo((1, rows, d), IntType(in_bits, True), np.array([in_scale]), in_zp)
    attrs = layernorm_attrs(gamma, beta, eps, in_scale, out_scale, IntType(out_bits, True), 0, "ln")
    return single_op("layernorm", [info], attrs), gamma, beta, in_scale, out_scale, in_zp


def test_isqrt_exact():
    v = np.array([0, 1, 2, 3, 4, 15, 16, 17, 2**40 - 1, 2**40, 2**62 - 1], dtype=np.int64)
    r = isqrt_array(v)
    assert np.all(r * r <= v) and np.all((r + 1) * (r + 1) > v)


def test_layernorm_close_to_float(rng):
    g, gamma, beta, s_in, s_out, zp = _graph(rng)
    x = int_inputs(g, rng, 40)[0]
    got = Simulator(g).run_int([x]).dequantized[0]
    real = (x - zp) * s_in
    mu = real.mean(axis=-1, keepdims=True)
    var = real.var(axis=-1, keepdims=True)
    ref = np.clip((real - mu) / np.sqrt(var + 1e-5) * gamma + beta, -128 * s_out, 127 * s_out)
    # one output step plus the 2^-10 resolution of the normalized value times |gamma|
    assert np.max(np.abs(got - ref)) <= s_out * 0.5 + 1.5 * 2.0**-10 * gamma.max() + 1e-3


def test_layernorm_refuses_overflowing_input():
    info = TensorInfo((1, 4, 4096), IntType(24, True), np.array([1.0]))
    attrs = layernorm_attrs(np.ones(4096), np.zeros(4096), 1e-5, 1.0, 0.1, IntType(8), 0, "ln")
    with pytest.raises(VaqfError, match="overflows"):
        single_op("layernorm", [info], attrs)


def _reciprocal_normalize(y: int, s: int, yb: int) -> int:
    """The kernel's stage 2 + 3 arithmetic for one element, in Python integers."""
    k = yb + F_BITS
    r = (1 << k) // s
    a = abs(y) << F_BITS
    q = (abs(y) * r) >> (k - F_BITS)
    rem = a - q * s
    assert 0 <= rem < 2 * s  # q is the floor or one less
    if rem >= s:
        q, rem = q + 1, rem - s
    if 2 * rem > s or (2 * rem == s and q & 1):
        q += 1
    return -q if y < 0 else q


def test_reciprocal_with_correction_equals_half_even_division(rng):
    """The hardware's one reciprocal per row + exact correction gives round_half_even(y 2^F / S)."""
    from fractions import Fraction

    for _ in range(3000):
        d = int(rng.integers(1, 800))
        yb = int(rng.integers(1, 20))
        y = int(rng.integers(-(2**yb) + 1, 2**yb))
        s = int(rng.integers(1, 2 ** (yb + 1)))
        got = _reciprocal_normalize(y, s, yb)
        exact = Fraction(y << F_BITS, s)
        fl = exact.numerator // exact.denominator
        rest = exact - fl
        want = fl + (1 if rest > Fraction(1, 2) or (rest == Fraction(1, 2) and fl & 1) else 0)
        assert got == want, (y, s, yb, d)


def test_q_bits_bound_holds_on_extreme_rows():
    """|round(y 2^F / S)| < 2^Q_BITS on the rows that maximize it (one outlier, the rest at the other end)."""
    for d in (2, 3, 17, 48, 192, 768):
        for span in (1, 255, 511):
            x = np.zeros(d, np.int64)
            x[0] = span
            y = d * x - x.sum()
            v = int((y * y).sum())
            s = max(int(isqrt_array(np.array([v // d]))[0]), 1)
            assert abs(int(y[0]) << F_BITS) // s + 1 < 2 ** (q_bits(d) - 1)
            info = TensorInfo((1, d), IntType(9, True), np.array([1.0]))
            assert int(np.abs(y).max()) < 2 ** layer_bits(info, d, 0)["y"]


def _project(graph, lanes: int, folder):
    design = design_for_knobs(graph, get_board("zcu102"), {"layernorm": {"lanes": lanes}})
    write_project(graph, design, folder, force=True)
    return folder


@pytest.mark.cxx
@pytest.mark.parametrize("lanes", [1, 4, 16, 64])
def test_layernorm_cxx_bit_exact_and_cycles(rng, tmp_path, lanes):
    """d = 48: L = 1, 4, 16 (three words) and 64 (one word, 16 idle lanes)."""
    g = _graph(rng)[0]
    res = assert_cycles_match(_project(g, lanes, tmp_path / "p"), inputs=8)
    est = get_unit("layernorm").cost(g.nodes[0], {"lanes": lanes}, get_board("zcu102")).cycles
    layer = next(c for c in res.cycles if c.layer == g.nodes[0].name)
    assert layer.measured == est  # one formula for the counters and the model: exact


@pytest.mark.cxx
def test_layernorm_cxx_extremes_zero_point_and_wide_input(rng, tmp_path):
    """Constant rows (variance 0, S = 1 from eps 0), one outlier, the extremes; a 12-bit input, zero point."""
    g = _graph(rng, d=20, in_bits=12, in_zp=-7, out_bits=8, eps=0.0, rows=6)[0]
    folder = _project(g, 8, tmp_path / "p")
    from vaqf.backend.csim import run_csim

    hi = 2**11
    x = rng.integers(-hi, hi, size=(4, 6, 20))
    x[0, 0] = 5
    x[0, 1] = [-hi, hi - 1] * 10
    x[0, 2] = -hi
    x[0, 2, 0] = hi - 1
    x[1, 3] = hi - 1
    x[1, 3, 7] = -hi
    res = run_csim(folder, int_inputs=[x], graph=g)
    assert res.bit_exact == 4 and res.mismatched_values == 0


def test_layernorm_in_place_is_off():
    assert get_unit("layernorm").in_place is False


def test_layernorm_lane_knob_lists_every_choice(rng):
    g = _graph(rng)[0]
    assert get_unit("layernorm").knobs(g.nodes[0])["lanes"] == list(LANE_CHOICES)


def test_layernorm_cost_monotone(rng):
    g = _graph(rng)[0]
    node = g.nodes[0]
    unit = get_unit("layernorm")
    costs = [unit.cost(node, {"lanes": v}, get_board("zcu102")) for v in LANE_CHOICES if v <= 48]
    assert all(a.cycles >= b.cycles and a.lut <= b.lut for a, b in zip(costs, costs[1:], strict=False))


# ---- the op: reference, fast path ------------------------------------------------------------------------

def sample():
    return _graph(np.random.default_rng(0))[0]


def test_reference_by_hand():
    """Row [1, 3] (D = 2): y = 2x - 4 = [-2, 2], V = 8, S = isqrt(8 // 2 + 0) = 2, n = y * 2**F / 2 =
    [-1024, 1024]; G = 2**14 (gamma 1 at FG - F = 14 bits), B = 0: q = n * 2**14 / 2**24 = -1 and 1."""
    g = np.array([2**14, 2**14])
    np.testing.assert_array_equal(reference(np.array([[1, 3]]), g, np.zeros(2, np.int64), 0, 0, -128, 127),
                                  [[-1, 1]])
    # a constant row has no variance: S = max(isqrt(E), 1) and every n is 0, so q is round(B / 2**FG) + zp
    got = reference(np.array([[5, 5]]), g, np.array([3 * 2**23, -(2**23)]), 0, 2, -128, 127)
    np.testing.assert_array_equal(got, [[4, 2]])  # 1.5 -> 2 (even), -0.5 -> 0 (even); + zp 2


@pytest.mark.parametrize("in_bits,in_zp", [(8, 0), (9, 3), (16, -5)])
def test_fast_path_equals_reference(rng, in_bits, in_zp):
    assert_fast_equals_reference(_graph(rng, d=24, in_bits=in_bits, in_zp=in_zp, rows=3)[0], rng, count=20)
