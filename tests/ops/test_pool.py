"""pool: window geometry, the reference on hand-checked cases, the simulator = the reference, and the pool
unit: its cost on a known layer, C-simulation bit-exact with the simulator and the reference and cycle counters
equal to the cost model, at several lane counts (one wider than the rows), for max pooling with padding and
stride and average pooling."""

from __future__ import annotations

import numpy as np
import pytest

from tests.ops.opgraph import assert_fast_equals_reference, single_op
from tests.ops.test_eltwise import build_and_check
from vaqf.errors import VaqfError
from vaqf.hw.board import get_board
from vaqf.ir import IntType, TensorInfo
from vaqf.ops.pool import pool_attrs, reference
from vaqf.units import get_unit


def max_graph():
    info = TensorInfo((1, 3, 7, 9), IntType(8, True), np.array([0.1]), 0)
    return single_op("pool", [info], pool_attrs("max", (3, 3), (2, 2), (1, 1, 1, 1)))


def avg_graph():
    info = TensorInfo((1, 4, 6, 6), IntType(8, False), np.array([0.1]), 5)
    return single_op("pool", [info], pool_attrs("avg", (2, 3), (2, 1), (0, 0, 0, 0)))


def test_cycles_of_a_known_layer():
    # 3 channels x 4 x 5 outputs x 9 window elements, one per cycle, plus the pipeline depth 6
    g = max_graph()
    assert get_unit("pool").cost(g.nodes[0], {"lanes": 4}, get_board("zcu102")).cycles == 3 * 4 * 5 * 9 + 6


@pytest.mark.cxx
@pytest.mark.parametrize("lanes", [1, 4, 16])
@pytest.mark.parametrize("build", [max_graph, avg_graph])
def test_csim_bit_exact_and_cycles(tmp_path, build, lanes):
    res = build_and_check(build(), tmp_path / "p", lanes)
    assert res.mismatched_values == 0


def sample():
    return max_graph()


def test_infer_window_geometry():
    # 7 x 9 input, 3 x 3 window, stride 2, pads 1: Ho = (7 + 2 - 3)//2 + 1 = 4, Wo = (9 + 2 - 3)//2 + 1 = 5
    assert max_graph().outputs[0].info.shape == (1, 3, 4, 5)
    assert avg_graph().outputs[0].info.shape == (1, 4, 3, 4)
    with pytest.raises(VaqfError, match="average pooling with padding"):
        pool_attrs("avg", (2, 2), (2, 2), (1, 0, 0, 0))


def test_reference_by_hand():
    x = np.array([[1, -5], [3, 2]]).reshape(1, 1, 1, 2, 2)
    # max with one pixel of padding all round, 2 x 2 windows at stride 1: the padding (-128) never wins
    got = reference(x, "max", [2, 2], [1, 1], [1, 1, 1, 1], 0, -128, 127)
    np.testing.assert_array_equal(got[0, 0, 0], [[1, 1, -5], [3, 3, 2], [3, 3, 2]])
    # average of the 2 x 2 window around zero point 1: (0 + -6 + 2 + 1) / 4 = -0.75 -> -1, + 1 = 0
    d = pool_attrs("avg", (2, 2), (1, 1), (0, 0, 0, 0))
    np.testing.assert_array_equal(reference(x, "avg", [2, 2], [1, 1], [0, 0, 0, 0], 1, -128, 127, d["mantissa"],
                                            d["shift"]), [[[[[0]]]]])


@pytest.mark.parametrize("build", [max_graph, avg_graph])
def test_simulator_equals_reference(rng, build):
    assert_fast_equals_reference(build(), rng)


def test_cost_monotone_in_lanes():
    board = get_board("zcu102")
    costs = [get_unit("pool").cost(avg_graph().nodes[0], {"lanes": n}, board) for n in (1, 2, 4)]
    assert all(a.cycles >= b.cycles for a, b in zip(costs, costs[1:], strict=False))
