"""lut: inference checks the table covers the input type, the reference is the lookup (hand-checked), the fast
path = the reference on every input integer, GELU within half a step, its cost on a known layer, and the C++ =
the reference at several lane counts."""

from __future__ import annotations

import numpy as np
import pytest

from tests.ops.opgraph import assert_fast_equals_reference, csim_matches, int_inputs, single_op
from tests.ops.test_eltwise import LANES, build_and_check, lut_graph
from vaqf.errors import VaqfError
from vaqf.hw.board import get_board
from vaqf.hw.cost import DDR_LATENCY
from vaqf.ir import Graph, IntType, TensorInfo
from vaqf.ops.lut import gelu_erf, lut_attrs, reference
from vaqf.sim.simulator import Simulator
from vaqf.units import get_unit
from vaqf.units.lut import DEPTH, FILL_DEPTH


def sample() -> Graph:
    return lut_graph()


def test_infer_needs_a_table_over_the_whole_input_type() -> None:
    info = TensorInfo((1, 6, 20), IntType(8, True), np.array([0.05]), 0)
    attrs = lut_attrs("gelu", info, IntType(8, True), 0.04, 0)
    with pytest.raises(VaqfError, match="op: table of 256 entries does not cover int7"):
        single_op("lut", [TensorInfo((1, 6, 20), IntType(7, True), np.array([0.05]), 0)], attrs)


def test_reference_by_hand() -> None:
    np.testing.assert_array_equal(reference(np.array([[-2, 0, 1]]), np.array([5, 6, 7, 8]), -2), [[5, 7, 8]])
    with pytest.raises(IndexError):
        reference(np.array([2]), np.array([5, 6, 7, 8]), -2)


def test_fast_path_equals_reference_on_every_input() -> None:
    g = sample()
    every = np.concatenate([np.arange(-128, 128), np.full(3 * 120 - 256, -128)]).reshape(3, 6, 20)
    assert_fast_equals_reference(g, np.random.default_rng(0), inputs=[every])


def test_gelu_within_half_a_step(rng: np.random.Generator) -> None:
    info = TensorInfo((1, 6, 16), IntType(8, True), np.array([0.05]))
    g = single_op("lut", [info], lut_attrs("gelu", info, IntType(8, True), 0.04, 0))
    x = int_inputs(g, rng, 30)[0]
    got = Simulator(g).run_int([x]).dequantized[0]
    real = np.clip(gelu_erf(x * 0.05), -128 * 0.04, 127 * 0.04)
    assert np.max(np.abs(got - real)) <= 0.02 + 1e-12


def test_cycles_of_a_known_layer() -> None:
    """256 entries at 4 per 128-bit DDR word: 64 fill cycles after the DDR latency; then 6 rows of 20 at
    L = 4, 30 words at II=1, plus the depth."""
    c = get_unit("lut").cost(sample().nodes[0], {"lanes": 4}, get_board("zcu102"))
    assert c.cycles == 64 + DDR_LATENCY + FILL_DEPTH + 30 + DEPTH
    costs = [get_unit("lut").cost(sample().nodes[0], {"lanes": n}, get_board("zcu102")) for n in (1, 2, 4)]
    assert all(a.cycles > b.cycles and a.bram18 <= b.bram18 for a, b in zip(costs, costs[1:], strict=False))


@pytest.mark.cxx
@pytest.mark.parametrize("lanes", LANES)
def test_cxx_equals_reference_and_cycles(tmp_path, lanes: int) -> None:
    res = build_and_check(sample(), tmp_path / "p", lanes)
    assert res.mismatched_values == 0


@pytest.mark.cxx
def test_cxx_at_the_largest_and_smallest_knobs(tmp_path) -> None:
    info = TensorInfo((1, 6, 16), IntType(8, True), np.array([0.05]))
    g = single_op("lut", [info], lut_attrs("gelu", info, IntType(8, True), 0.04, 0))
    csim_matches(g, tmp_path / "p", count=10)
    csim_matches(g, tmp_path / "q", count=5, pick="min")
