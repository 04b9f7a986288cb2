"""add: shape inference, the reference on hand-checked cases (rounding and saturation), the fast path = the
reference on edge cases and random inputs, within half a step of the real sum, its cost on a known layer, and
the C++ = the reference at several lane counts."""

from __future__ import annotations

import numpy as np
import pytest

from tests.ops.opgraph import assert_fast_equals_reference, int_inputs, single_op
from tests.ops.test_eltwise import LANES, add_graph, build_and_check
from vaqf.errors import VaqfError
from vaqf.hw.board import get_board
from vaqf.ir import Graph, IntType, TensorInfo
from vaqf.ops.add import add_attrs, reference
from vaqf.sim.simulator import Simulator
from vaqf.units import get_unit
from vaqf.units.eltwise import DEPTH


def sample() -> Graph:
    return add_graph()


def test_infer_takes_the_output_record() -> None:
    out = sample().outputs[0].info
    assert out.shape == (1, 4, 10) and out.qtype == IntType(9, True) and float(out.scale[0]) == 0.05
    a = TensorInfo((1, 4, 10), IntType(8, True), np.array([0.03]))
    with pytest.raises(VaqfError, match="op: cannot add \\[1, 4, 10\\] and \\[1, 4, 9\\]"):
        single_op("add", [a, TensorInfo((1, 4, 9), IntType(8, True), np.array([0.03]))],
                  add_attrs(0.03, 0.03, 0.05, IntType(8, True), 0, "add"))


def test_reference_by_hand() -> None:
    # ((3 - 1) * 3 + (5 - 0) * 2) / 2**2 = 16 / 4 = 4, + zp 10 = 14; 3.5 rounds to 4 (even), 2.5 to 2
    args = (1, 0, 3, 2, 2, 10, -128, 127)
    np.testing.assert_array_equal(reference(np.array([3]), np.array([5]), *args), [14])
    np.testing.assert_array_equal(reference(np.array([1, 1]), np.array([7, 5]), 0, 0, 0, 2, 2, 0, -128, 127),
                                  [4, 2])
    np.testing.assert_array_equal(reference(np.array([100]), np.array([100]), 0, 0, 4, 4, 1, 0, -128, 127), [127])


def test_fast_path_equals_reference(rng: np.random.Generator) -> None:
    assert_fast_equals_reference(sample(), rng, count=60)


def test_constant_operand_broadcasts(rng: np.random.Generator) -> None:
    """A single-sample operand (a position embedding) broadcasts over the samples in both paths."""
    g = sample()
    xa, xb = int_inputs(g, rng, 7)
    assert_fast_equals_reference(g, rng, inputs=[xa, np.broadcast_to(xb[:1], xb.shape).copy()])


def test_within_half_a_step_of_the_real_sum(rng: np.random.Generator) -> None:
    g = sample()
    xa, xb = int_inputs(g, rng, 30)
    got = Simulator(g).run_int([xa, xb]).dequantized[0]
    real = np.clip(xa * 0.03 + (xb - 7) * 0.011, -256 * 0.05, 255 * 0.05)
    assert np.max(np.abs(got - real)) <= 0.025 + 1e-9


def test_cycles_of_a_known_layer() -> None:
    # 4 rows of 10 at L = 4: 4 x ceil(10/4) = 12 words at II=1, plus the pipeline depth
    c = get_unit("eltwise").cost(sample().nodes[0], {"lanes": 4}, get_board("zcu102"))
    assert c.cycles == 12 + DEPTH
    costs = [get_unit("eltwise").cost(sample().nodes[0], {"lanes": n}, get_board("zcu102")) for n in (1, 2, 4, 8)]
    assert all(a.cycles > b.cycles and a.dsp < b.dsp for a, b in zip(costs, costs[1:], strict=False))


@pytest.mark.cxx
@pytest.mark.parametrize("lanes", LANES)
def test_cxx_equals_reference_and_cycles(tmp_path, lanes: int) -> None:
    res = build_and_check(sample(), tmp_path / "p", lanes)
    assert res.mismatched_values == 0
