"""The matmul unit (activation x activation products): C-simulation bit-exact with the simulator and cycle
counters equal to the cost model, at several lane counts, with contiguous and strided (attention-style)
operand and output views, in word and element modes."""

from __future__ import annotations

import numpy as np
import pytest

from tests.helpers import assert_cycles_match
from tests.ops.opgraph import assert_fast_equals_reference, csim_matches, int_inputs, single_op
from vaqf.backend.emit import write_project
from vaqf.dse.search import design_for_knobs
from vaqf.hw.board import get_board
from vaqf.ir import Graph, IntType, TensorInfo
from vaqf.ir.qarith import Rounding
from vaqf.ops import get_spec
from vaqf.ops.matmul import finalize_matmul_attrs, reference
from vaqf.sim.simulator import Simulator
from vaqf.units import get_unit, instance_of, unit_of
from vaqf.units.matmul import operand_walk, output_walk


def _graph(a: TensorInfo, b: TensorInfo, attrs: dict) -> Graph:
    g = Graph("single_matmul")
    va, vb = g.add_input("in0", a), g.add_input("in1", b)
    out = g.new_value("out", TensorInfo(a.shape, IntType(32)))
    node = g.add_node("matmul", [va, vb], [out], dict(attrs, acc_bits=32), name="mm")
    out.info = get_spec("matmul").infer(node, [va.info, vb.info])[0]
    finalize_matmul_attrs(node)
    out.info = get_spec("matmul").infer(node, [va.info, vb.info])[0]
    g.outputs = [out]
    g.verify()
    return g


def contiguous() -> Graph:
    """[2 heads, 5 x 8] x [2, 8 x 13], zero points on both, accumulator output."""
    a = TensorInfo((1, 2, 5, 8), IntType(8, True), np.array([0.1]), 0)
    b = TensorInfo((1, 2, 8, 13), IntType(8, False), np.array([0.2]), 3)
    return _graph(a, b, {"relu": False, "requant": None})


def _requant(scale: float) -> dict:
    return {"mantissa": np.array([int(0.37 * 2**20)]), "shift": np.array([20 + int(np.log2(scale))]),
            "zero_point": 2, "qtype": IntType(8, False), "rounding": Rounding.HALF_EVEN.value,
            "scale": np.array([0.01])}


def attention_qk() -> Graph:
    """Q.K^T read in place from one qkv buffer [6 rows, 3 x 2 heads x 8], as FoldOperandViews sets it: q of
    head h at columns h*8, k at 16 + h*8 (B's k axis consecutive, its columns a row apart); relu and
    requantization; the same buffer passed as A and B."""
    qkv = TensorInfo((1, 6, 48), IntType(8, True), np.array([0.05]), 0)
    g = Graph("single_matmul_qk")
    v = g.add_input("in0", qkv)
    out = g.new_value("out", TensorInfo((1, 2, 6, 6), IntType(32)))
    attrs = {"relu": True, "requant": None, "acc_bits": 32,
             "a_view": {"shape": [1, 2, 6, 8], "strides": [0, 8, 48, 1], "base": 0, "factor": 1.0},
             "b_view": {"shape": [1, 2, 8, 6], "strides": [0, 8, 1, 48], "base": 16, "factor": 1.0}}
    node = g.add_node("matmul", [v, v], [out], attrs, name="qk")
    finalize_matmul_attrs(node)
    node.attrs["requant"] = _requant(64.0)
    out.info = get_spec("matmul").infer(node, [v.info, v.info])[0]
    g.outputs = [out]
    g.verify()
    return g


def attention_av() -> Graph:
    """A.V with V read from the qkv buffer (columns 32 + h*8: B's k axis a row apart, its columns
    consecutive) and the product written head-merged into [6, 16] (out_view: head h at columns h*8)."""
    p = TensorInfo((1, 2, 6, 6), IntType(8, False), np.array([1 / 255]), 0)
    qkv = TensorInfo((1, 6, 48), IntType(8, True), np.array([0.05]), 0)
    g = Graph("single_matmul_av")
    vp, vq = g.add_input("in0", p), g.add_input("in1", qkv)
    out = g.new_value("out", TensorInfo((1, 6, 16), IntType(32)))
    attrs = {"relu": False, "requant": None, "acc_bits": 32,
             "b_view": {"shape": [1, 2, 6, 8], "strides": [0, 8, 48, 1], "base": 32, "factor": 1.0},
             "out_view": {"shape": [1, 6, 16], "strides": [0, 8, 16, 1], "base": 0}}
    node = g.add_node("matmul", [vp, vq], [out], attrs, name="av")
    finalize_matmul_attrs(node)
    out.info = get_spec("matmul").infer(node, [vp.info, vq.info])[0]
    g.outputs = [out]
    g.verify()
    return g


GRAPHS = {"contiguous": contiguous, "qk": attention_qk, "av": attention_av}


def _project(g: Graph, folder, pe: int, lanes: int):
    design = design_for_knobs(g, get_board("zcu102"), {"matmul": {"pe": pe, "simd": lanes}})
    return write_project(g, design, folder, force=True)


def test_reference_matches_numpy(rng):
    g = contiguous()
    from tests.ops.opgraph import int_inputs
    from vaqf.sim.simulator import Simulator

    xa, xb = int_inputs(g, rng, 4)
    got = Simulator(g).run_int([xa, xb]).outputs[0]
    np.testing.assert_array_equal(got, np.matmul(xa.astype(np.int64), xb.astype(np.int64) - 3))


def test_modes_follow_the_views():
    qk, av = attention_qk().nodes[0], attention_av().nodes[0]
    # q at columns h*8 and k at 16 + h*8: whole words while L divides 8, elements beyond
    assert operand_walk(qk, 0, 8).word and operand_walk(qk, 1, 8).word
    assert not operand_walk(qk, 0, 16).word and not operand_walk(qk, 1, 16).word
    # V's k axis is a row apart: whole words across its columns when PE covers words and the head starts
    # at lane 0, else elements; the probabilities' rows are contiguous: words
    assert operand_walk(av, 1, 4, pe=8).word == 2 and operand_walk(av, 1, 4, pe=2).word == 0
    assert operand_walk(av, 1, 16, pe=16).word == 0 and operand_walk(av, 0, 4).word == 1
    # the head-merged output: words when PE covers whole words and a head fills them
    assert output_walk(av, 8, 8).word and not output_walk(av, 4, 8).word and not output_walk(av, 8, 16).word


def test_the_unit_records_each_walk_mode():
    av = attention_av().nodes[0]
    unit = unit_of(av)
    assert unit is get_unit("matmul") and instance_of(av) == "matmul" and unit.in_place is False
    assert unit.desc_fields == 42  # vaqf::matmul_desc: 15 scalars and three walks of 9
    board = get_board("zcu102")
    # P's rows whole words, V across its columns, the head-merged output whole words; elements at PE 2
    assert unit.mode(av, {"pe": 8, "simd": 4}, board) == {"a": 1, "b": 2, "out": 1}
    assert unit.mode(av, {"pe": 2, "simd": 4}, board) == {"a": 1, "b": 0, "out": 0}


def test_knobs_list_every_lane_count():
    from vaqf.hw.layout import LANE_CHOICES

    assert get_unit("matmul").knobs(contiguous().nodes[0])["simd"] == list(LANE_CHOICES)


def test_dsps_one_product_each():
    node = contiguous().nodes[0]
    c = get_unit("matmul").cost(node, {"pe": 4, "simd": 8}, get_board("zcu102"))
    assert c.dsp >= 4 * 8  # no packing is written, so none is assumed


@pytest.mark.cxx
@pytest.mark.parametrize("name", sorted(GRAPHS))
@pytest.mark.parametrize("pe,lanes", [(1, 1), (2, 1), (4, 4), (8, 4), (8, 8), (16, 16), (4, 64)])
def test_cxx_bit_exact_and_cycles(tmp_path, name, pe, lanes):
    g = GRAPHS[name]()
    project = _project(g, tmp_path / "p", pe, lanes)
    res = assert_cycles_match(project, tol=0.0, inputs=3)
    assert res.bit_exact == 3


# ---- the op: reference, fast path, cost ---------------------------------------------------------------

def zero_point_graph() -> Graph:
    """[2, 5, 8] x [2, 8, 16] with B on uint8 at zero point 3, the accumulator out."""
    a = TensorInfo((1, 2, 5, 8), IntType(8, True), np.array([0.1]), 0)
    b = TensorInfo((1, 2, 8, 16), IntType(8, False), np.array([0.2]), 3)
    return single_op("matmul", [a, b], {"relu": False, "requant": None, "acc_bits": 32})


def sample() -> Graph:
    return zero_point_graph()


def test_reference_by_hand() -> None:
    a = np.array([[[[1, 2], [3, 4]]]])         # one sample, [1, 2, 2]
    b = np.array([[[[5, 6], [7, 8]]]])
    np.testing.assert_array_equal(reference(a, b, 0, 0), [[[[19, 22], [43, 50]]]])
    np.testing.assert_array_equal(reference(a, b, 1, 5), [[[[2, 3], [6, 11]]]])   # (a - 1) @ (b - 5)
    rq = {"mantissa": np.array([1]), "shift": np.array([2]), "zero_point": 1, "qtype": IntType(4, False),
          "scale": np.array([1.0]), "rounding": "HALF_EVEN"}
    # 19/4 = 4.75 -> 5, 22/4 = 5.5 -> 6, 43/4 -> 11, 50/4 = 12.5 -> 12; + 1; saturated at 15
    np.testing.assert_array_equal(reference(a, b, 0, 0, requant=rq), [[[[6, 7], [12, 13]]]])
    np.testing.assert_array_equal(reference(-a, b, 0, 0, relu=True, requant=rq), [[[[1, 1], [1, 1]]]])


def test_views_read_and_write_as_defined() -> None:
    """a_view reads rows of a [1, 4] input as [2, 2] (stride 2); out_view writes the product transposed."""
    a = np.array([[[1, 2, 3, 4]]])
    b = np.eye(2, dtype=np.int64)[None, None]
    view = {"shape": [1, 2, 2], "strides": [0, 2, 1], "base": 0}
    np.testing.assert_array_equal(reference(a, b, 0, 0, a_view=view), [[[[1, 2], [3, 4]]]])
    out_view = {"shape": [1, 2, 2], "strides": [0, 1, 2], "base": 0}
    np.testing.assert_array_equal(reference(a, b, 0, 0, a_view=view, out_view=out_view), [[[[1, 3], [2, 4]]]])


@pytest.mark.parametrize("name", sorted(GRAPHS) + ["zero_point"])
def test_fast_path_equals_reference(rng: np.random.Generator, name: str) -> None:
    assert_fast_equals_reference(zero_point_graph() if name == "zero_point" else GRAPHS[name](), rng, count=12)


def test_exact_against_numpy(rng: np.random.Generator) -> None:
    g = zero_point_graph()
    xa, xb = int_inputs(g, rng, 10)
    got = Simulator(g).run_int([xa, xb]).outputs[0]
    np.testing.assert_array_equal(got, np.matmul(xa.astype(np.int64), xb.astype(np.int64) - 3))


def test_cost_monotone_in_parallelism() -> None:
    # dimensions are multiples of every knob value, so no setting pays for padding
    node = zero_point_graph().nodes[0]
    unit = get_unit("matmul")
    board = get_board("zcu102")
    ks = unit.knobs(node)
    for simd in ks["simd"]:
        costs = [unit.cost(node, {"pe": pe, "simd": simd}, board) for pe in ks["pe"]]
        assert all(a.cycles >= b.cycles and a.dsp <= b.dsp for a, b in zip(costs, costs[1:], strict=False))


@pytest.mark.cxx
def test_cxx_zero_point_operand(tmp_path) -> None:
    g = zero_point_graph()
    csim_matches(g, tmp_path / "p", count=10)
    csim_matches(g, tmp_path / "q", count=5, pick="min")
