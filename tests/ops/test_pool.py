"""The pool unit: C-simulation bit-exact with the simulator and cycle counters equal to the cost model, at
several lane counts (one wider than the rows), for max pooling with padding and stride and average pooling."""

from __future__ import annotations

import numpy as np
import pytest

from tests.ops.opgraph import single_op
from tests.ops.test_eltwise import build_and_check
from vaqf.hw.board import get_board
from vaqf.ir import IntType, TensorInfo
from vaqf.ops.pool import pool_attrs
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
