import numpy as np
import pytest

from tests.ops.opgraph import csim_matches, int_inputs, single_op
from vaqf.hw.board import get_board
from vaqf.ir import IntType, TensorInfo
from vaqf.ops.add import add_attrs
from vaqf.ops.lut import gelu_erf, lut_attrs
from vaqf.ops.matmul import finalize_matmul_attrs
from vaqf.sim.simulator import Simulator
from vaqf.units import get_unit


def _gelu_graph():
    info = TensorInfo((1, 6, 16), IntType(8, True), np.array([0.05]))
    return single_op("lut", [info], lut_attrs("gelu", info, IntType(8, True), 0.04, 0)), info


def test_gelu_table_within_half_step(rng):
    g, info = _gelu_graph()
    x = int_inputs(g, rng, 30)[0]
    got = Simulator(g).run_int([x]).dequantized[0]
    ref = np.clip(gelu_erf(x * 0.05), -128 * 0.04, 127 * 0.04)
    assert np.max(np.abs(got - ref)) <= 0.02 + 1e-12


def _add_graph():
    a = TensorInfo((1, 4, 8), IntType(8, True), np.array([0.03]), 0)
    b = TensorInfo((1, 4, 8), IntType(8, False), np.array([0.011]), 7)
    return single_op("add", [a, b], add_attrs(0.03, 0.011, 0.05, IntType(9, True), 0, "add"))


def test_add_within_half_step(rng):
    g = _add_graph()
    xa, xb = int_inputs(g, rng, 30)
    got = Simulator(g).run_int([xa, xb]).dequantized[0]
    ref = np.clip(xa * 0.03 + (xb - 7) * 0.011, -256 * 0.05, 255 * 0.05)
    assert np.max(np.abs(got - ref)) <= 0.025 + 1e-9


def _matmul_graph():
    a = TensorInfo((1, 2, 5, 8), IntType(8, True), np.array([0.1]), 0)
    b = TensorInfo((1, 2, 8, 16), IntType(8, False), np.array([0.2]), 3)
    g = single_op("matmul", [a, b], {"relu": False, "requant": None, "acc_bits": 32})
    finalize_matmul_attrs(g.nodes[0])
    return g


def test_matmul_exact(rng):
    g = _matmul_graph()
    xa, xb = int_inputs(g, rng, 10)
    got = Simulator(g).run_int([xa, xb]).outputs[0]
    np.testing.assert_array_equal(got, np.matmul(xa.astype(np.int64), xb.astype(np.int64) - 3))


@pytest.mark.cxx
@pytest.mark.parametrize("build", [_gelu_graph, _add_graph, _matmul_graph])
def test_cxx_bit_exact(tmp_path, build):
    g = build()
    g = g[0] if isinstance(g, tuple) else g
    csim_matches(g, tmp_path / "p", count=10)
    csim_matches(g, tmp_path / "q", count=5, pick="min")


def test_matmul_cost_monotone():
    # dimensions are multiples of every knob value, so no setting pays for padding
    g = _matmul_graph()
    node = g.nodes[0]
    unit = get_unit("matmul")
    board = get_board("zcu102")
    ks = unit.knobs(node)
    for simd in ks["simd"]:
        costs = [unit.cost(node, {"pe": pe, "simd": simd}, board) for pe in ks["pe"]]
        assert all(a.cycles >= b.cycles and a.dsp <= b.dsp for a, b in zip(costs, costs[1:], strict=False))
