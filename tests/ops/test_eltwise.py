"""The elementwise unit (relu, requant, add) and the table unit (lut): the graphs and the build helper the op
modules C-simulate with, the lane knob, and a chain of elementwise layers sharing one unit instance."""

from __future__ import annotations

import numpy as np
import pytest

from tests.helpers import add_relu, add_requant, assert_cycles_match
from tests.ops.opgraph import single_op
from vaqf.backend.emit import write_project
from vaqf.dse.search import design_for_knobs
from vaqf.hw.board import get_board
from vaqf.hw.model import units_of
from vaqf.ir import Graph, IntType, TensorInfo
from vaqf.ops.add import add_attrs
from vaqf.ops.lut import lut_attrs
from vaqf.units import unit_of

LANES = [1, 4, 16, 64]


def _knobs(graph: Graph, lanes: int) -> dict[str, dict[str, int]]:
    return {u: {"lanes": lanes} for u in units_of(graph)}


def build_and_check(graph: Graph, folder, lanes: int, inputs: int = 3):
    design = design_for_knobs(graph, get_board("zcu102"), _knobs(graph, lanes))
    write_project(graph, design, folder, force=True)
    return assert_cycles_match(folder, inputs=inputs)


def relu_requant_graph() -> Graph:
    """int16 per-channel-scaled input -> relu -> per-channel requant to uint8 -> requant per tensor."""
    g = Graph("eltwise_chain")
    x = g.add_input("x", TensorInfo((1, 5, 12), IntType(16, True), np.linspace(0.001, 0.004, 12), 0))
    r = add_relu(g, x, "relu").outputs[0]
    q = add_requant(g, r, 0.05, IntType(8, False), 3, name="rq").outputs[0]
    q2 = add_requant(g, q, 0.11, IntType(6, True), 0, rounding="HALF_UP", name="rq2").outputs[0]
    g.outputs = [q2]
    g.verify()
    return g


def add_graph() -> Graph:
    a = TensorInfo((1, 4, 10), IntType(8, True), np.array([0.03]), 0)
    b = TensorInfo((1, 4, 10), IntType(8, False), np.array([0.011]), 7)
    return single_op("add", [a, b], add_attrs(0.03, 0.011, 0.05, IntType(9, True), 0, "add"))


def lut_graph() -> Graph:
    info = TensorInfo((1, 6, 20), IntType(8, True), np.array([0.05]), 0)
    return single_op("lut", [info], lut_attrs("gelu", info, IntType(8, True), 0.04, 0))


def test_lane_knob_lists_every_lane_choice():
    from vaqf.hw.layout import LANE_CHOICES

    for g in (relu_requant_graph(), add_graph(), lut_graph()):
        for n in g.nodes:
            assert unit_of(n).knobs(n)["lanes"] == list(LANE_CHOICES)


@pytest.mark.cxx
@pytest.mark.parametrize("lanes", [1, 64])
def test_csim_chain_bit_exact_and_cycles(tmp_path, lanes):
    """relu -> requant -> requant on one unit instance (one lane width narrower, one wider than the rows); the
    one-node projects of add, lut, relu and requant run in their own test modules."""
    res = build_and_check(relu_requant_graph(), tmp_path / "p", lanes)
    assert res.mismatched_values == 0
