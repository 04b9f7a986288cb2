import numpy as np
import pytest

from tests.ops.opgraph import csim_matches, int_inputs, single_op
from vaqf.hw.board import get_board
from vaqf.ir import IntType, TensorInfo
from vaqf.ops import get_spec
from vaqf.ops.softmax import softmax_attrs
from vaqf.sim.simulator import Simulator


def _graph(scale: float, bits: int = 8, n: int = 17, in_bits: int = 12):
    info = TensorInfo((1, 2, 5, n), IntType(in_bits, True), np.array([scale]))
    return single_op("softmax", [info], softmax_attrs(scale, bits))


@pytest.mark.parametrize("scale", [2.0**-4, 0.0123, 0.3, 3e-5])
@pytest.mark.parametrize("bits", [8, 4])
def test_softmax_close_to_float(rng, scale, bits):
    g = _graph(scale, bits)
    x = int_inputs(g, rng, 50)[0]
    got = Simulator(g).run_int([x]).dequantized[0]
    real = x * scale
    e = np.exp(real - real.max(axis=-1, keepdims=True))
    ref = e / e.sum(axis=-1, keepdims=True)
    step = 2.0**-bits
    # table step error (relative s_t/2 on each exponential) + one output step
    s_t = max(scale, 12.0 / 1023)
    bound = step + ref * (np.exp(s_t / 2) ** 2 - 1) + 2**-15
    assert np.all(np.abs(got - ref) <= bound + 1e-12)


def test_softmax_rows_sum_to_about_one(rng):
    g = _graph(0.05, 8, n=64)
    x = int_inputs(g, rng, 20)[0]
    got = Simulator(g).run_int([x]).outputs[0]
    sums = got.sum(axis=-1)
    assert np.all(np.abs(sums - 256) <= 64 / 2 + 1)  # each of 64 outputs rounds by at most half a step
    assert got.min() >= 0 and got.max() <= 255


@pytest.mark.cxx
@pytest.mark.parametrize("pick", ["max", "min"])
def test_softmax_cxx_bit_exact(tmp_path, pick):
    csim_matches(_graph(0.0123, 8), tmp_path / "p", count=10, pick=pick)


def test_softmax_cost_monotone_in_lanes():
    g = _graph(0.05, 8, n=64)
    node = g.nodes[0]
    spec = get_spec("softmax")
    board = get_board("zcu102")
    costs = [spec.cost(node, {"lanes": lanes}, board) for lanes in spec.knobs(node)["lanes"]]
    assert all(a.cycles >= b.cycles for a, b in zip(costs, costs[1:], strict=False))
    assert all(a.lut <= b.lut for a, b in zip(costs, costs[1:], strict=False))
