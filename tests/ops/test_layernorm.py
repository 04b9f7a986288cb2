import numpy as np
import pytest

from tests.ops.opgraph import csim_matches, int_inputs, single_op
from vaqf.errors import VaqfError
from vaqf.hw.board import get_board
from vaqf.ir import IntType, TensorInfo
from vaqf.ops import get_spec
from vaqf.ops.layernorm import isqrt_array, layernorm_attrs
from vaqf.sim.simulator import Simulator


def _graph(rng, d=48, in_bits=9, in_zp=3, out_bits=8, eps=1e-5):
    gamma = rng.uniform(0.5, 1.5, d)
    beta = rng.uniform(-0.3, 0.3, d)
    in_scale, out_scale = 0.02, 4.0 / 127
    info = TensorInfo((1, 5, d), IntType(in_bits, True), np.array([in_scale]), in_zp)
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


@pytest.mark.cxx
def test_layernorm_cxx_bit_exact(rng, tmp_path):
    g = _graph(rng)[0]
    csim_matches(g, tmp_path / "p", count=10)


def test_layernorm_cost_monotone(rng):
    g = _graph(rng)[0]
    node = g.nodes[0]
    spec = get_spec("layernorm")
    costs = [spec.cost(node, {"lanes": v}, get_board("zcu102")) for v in spec.knobs(node)["lanes"]]
    assert all(a.cycles >= b.cycles and a.lut <= b.lut for a, b in zip(costs, costs[1:], strict=False))
