"""const: inference checks the data against its declared type, the reference is the data as one sample, and
the C++ (the mover's CONST mode: loaded from DDR) = the reference inside a concat (a constant alone is no model)."""

from __future__ import annotations

import numpy as np
import pytest

from tests.ops.test_mover import concat_graph, info
from vaqf.errors import VaqfError
from vaqf.hw.board import get_board
from vaqf.hw.cost import DDR_LATENCY
from vaqf.ir import Graph, IntType
from vaqf.ops import get_spec
from vaqf.ops.const import reference
from vaqf.units import get_unit
from vaqf.units.mover import CONST_DEPTH


def sample() -> Graph:
    return concat_graph(True)


def _node(g: Graph):
    return next(n for n in g.nodes if n.op == "const")


def test_infer_checks_the_data() -> None:
    g = Graph("c")
    out = g.new_value("c", info((1, 3)))
    node = g.add_node("const", [], [out], {"info": info((1, 3), IntType(4)), "data": np.array([[1, 2, 9]])})
    with pytest.raises(VaqfError, match="constant data does not match"):
        get_spec("const").infer(node, [])


def test_reference_is_one_sample() -> None:
    got = reference(np.array([[1, -2, 3]], dtype=np.int8))
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got, [[[1, -2, 3]]])
    node = _node(sample())
    np.testing.assert_array_equal(get_spec("const").reference(node, [])[0][0], node.attrs["data"])


def test_cost_of_a_known_load() -> None:
    """A [1, 1, 6] constant at L = 1 is 6 one-element words: one DDR round trip, a word per cycle, the depth.
    At L = 4 its row is 2 words (the last one partly padding)."""
    node = _node(sample())
    board = get_board("zcu102")
    assert get_unit("mover").cost(node, {"lanes": 1}, board).cycles == 6 + DDR_LATENCY + CONST_DEPTH
    assert get_unit("mover").cost(node, {"lanes": 4}, board).cycles == 2 + DDR_LATENCY + CONST_DEPTH


# the C-simulation of a constant runs in tests/ops/test_concat.py (test_cxx_equals_reference_and_cycles with
# with_const): its output must equal the reference of the const, then the concat, node by node
