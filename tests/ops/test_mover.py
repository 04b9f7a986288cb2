"""The mover (vaqf/units/mover.py, hls/vaqf/move.h, conv.h): its modes, knobs and descriptors, and the helpers
with which each mover op's test module (test_transpose, test_slice, ...) C-simulates single-op graphs at several
lane counts (one larger than every row), with the counted cycles equal to the cost model's."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.helpers import assert_cycles_match
from tests.ops.opgraph import single_op
from vaqf.backend.emit import write_project
from vaqf.dse.search import design_for_knobs
from vaqf.hw.board import get_board
from vaqf.hw.layout import LANE_CHOICES
from vaqf.hw.memory import aliases
from vaqf.ir import Graph, IntType, TensorInfo
from vaqf.ops import get_spec
from vaqf.units import get_unit, instance_of, unit_of
from vaqf.units.mover import COPY_DEPTH, plan_copy

LANES = [1, 4, 16, 64]
I8 = IntType(8, True)


def info(shape: tuple[int, ...], qtype: IntType = I8, zp: int = 0) -> TensorInfo:
    return TensorInfo(shape, qtype, [0.1], zp)


def build(graph: Graph, lanes: int, folder: Path) -> Path:
    design = design_for_knobs(graph, get_board("zcu102"), {"mover": {"lanes": lanes}})
    return write_project(graph, design, folder, force=True)


def check(graph: Graph, lanes: int, folder: Path) -> dict[str, int]:
    """C-simulation bit-exact against the simulator and every op's reference, and every layer's counted cycles
    equal to the cost model's (the counters and the model are one formula); the counted cycles per layer."""
    res = assert_cycles_match(build(graph, lanes, folder), inputs=3)
    for c in res.cycles:
        assert c.measured == c.estimated, c.to_json()
    return {c.to_json()["layer"]: c.to_json()["measured"] for c in res.cycles}


def cases_of(op: str) -> list[str]:
    """The names of the CASES of one op (each op's own test module C-simulates them)."""
    return sorted(k for k, (o, _, _) in CASES.items() if o == op)


def concat_graph(with_const: bool, last_axis: bool = False) -> Graph:
    """[const or y] ++ x along the rows, or x ++ y along the last axis (a masked last word, then elements)."""
    g = Graph("concat")
    x = g.add_input("x", info((1, 5, 6)))
    if last_axis:
        first, x = x, g.add_input("y", info((1, 5, 3)))
    elif with_const:
        data = np.arange(-3, 3, dtype=np.int64).reshape(1, 1, 6)
        cv = g.new_value("cls", info((1, 1, 6)))
        g.add_node("const", [], [cv], {"info": info((1, 1, 6)), "data": data}, name="cls")
        first = cv
    else:
        first = g.add_input("y", info((1, 2, 6)))
    out = g.new_value("out", info((1, 1, 6)))
    node = g.add_node("concat", [first, x], [out], {"axis": 2 if last_axis else 1}, name="cat")
    out.info = get_spec("concat").infer(node, [v.info for v in node.inputs])[0]
    g.outputs = [out]
    g.verify()
    return g


CASES = {
    "transpose_rows": ("transpose", [info((1, 3, 5, 6))], {"perm": [0, 2, 1, 3]}),
    "transpose_last": ("transpose", [info((1, 3, 5, 6))], {"perm": [0, 1, 3, 2]}),
    "slice": ("slice", [info((1, 7, 10))], {"axes": [1, 2], "starts": [1, 2], "ends": [7, 10], "steps": [2, 1]}),
    "slice_aligned": ("slice", [info((1, 6, 16))], {"axes": [2], "starts": [4], "ends": [12], "steps": [1]}),
    "strided_copy": ("strided_copy", [info((1, 4, 12))], {"shape": [2, 2, 6], "strides": [6, 24, 1], "base": 0}),
    "reshape": ("reshape", [info((1, 4, 6))], {"shape": [1, 3, 8]}),
    # rows of 4 into rows of 8: at 8 and 16 lanes runs of 4 land at lane 0 or 4 (rotated words)
    "reshape_rotated": ("reshape", [info((1, 6, 4))], {"shape": [1, 3, 8]}),
    # a patch split (rows of 8 into rows of 4) and a transpose reading runs at lane 0 or 4 of rows of 8
    "patch_split": ("reshape", [info((1, 2, 8, 8))], {"shape": [1, 2, 2, 4, 2, 4]}),
    "patch_transpose": ("strided_copy", [info((1, 2, 8, 8))],
                        {"shape": [1, 2, 2, 2, 4, 4], "strides": [0, 32, 4, 64, 8, 1], "base": 0}),
    "im2col": ("im2col", [info((1, 3, 5, 6), IntType(8, False), 7)],
               {"kernel": [3, 2], "stride": [2, 1], "pads": [1, 0, 1, 1]}),
    "im2col_chans": ("im2col", [info((1, 4, 4, 4), IntType(8, False), 3)],
                     {"kernel": [2, 2], "stride": [2, 2], "pads": [0, 0, 0, 0], "channels": np.array([0, 2, 3])}),
}


def test_knob_lists_every_lane_choice() -> None:
    for op, inputs, attrs in CASES.values():
        g = single_op(op, inputs, attrs)
        node = next(iter(g.topo()))
        assert unit_of(node) is get_unit("mover") and instance_of(node) == "mover"
        assert get_unit("mover").knobs(node)["lanes"] == list(LANE_CHOICES)


def test_word_mode_where_rows_line_up() -> None:
    """Rows moved whole: 15 rows of ceil(6/L) words; a transpose of the last axis moves elements."""
    src, dst = info((1, 3, 5, 6)), info((1, 5, 3, 6))
    d = plan_copy([5, 3, 6], [6, 30, 1], [18, 6, 1], 0, 0, src, dst, 4)
    assert d.words == 1 and d.n == 15 * 2 and d.tail == 2
    e = plan_copy([3, 6, 5], [30, 1, 6], [30, 5, 1], 0, 0, src, info((1, 3, 6, 5)), 4)
    assert e.words == 0 and e.n == 90
    # a slab that starts mid-word moves in runs of 2 (lane 2 of the source, lane 0 or 2 of the destination):
    # one rotated word each
    f = plan_copy([6, 8], [16, 1], [8, 1], 2, 0, info((1, 6, 16)), info((1, 6, 8)), 4)
    assert f.words == 1 and f.n == 6 * 4 and f.tail == 2
    # a slab at an odd column moves element by element
    h = plan_copy([6, 8], [16, 1], [8, 1], 1, 0, info((1, 6, 16)), info((1, 6, 8)), 4)
    assert h.words == 0 and h.n == 48


def test_reshape_free_only_when_layout_matches() -> None:
    g = single_op("reshape", [info((1, 4, 8))], {"shape": [1, 2, 16]})
    node = next(iter(g.topo()))
    board = get_board("zcu102")
    assert aliases(node, 8) and get_unit("mover").cost(node, {"lanes": 8}, board).cycles == 0
    assert not aliases(node, 16)
    # L = 16: rows of 8 are one padded word, rows of 16 one full word: the four runs of 8 land at lane 0 or 8,
    # one rotated word per cycle
    assert get_unit("mover").cost(node, {"lanes": 16}, board).cycles == 4 + COPY_DEPTH
    assert get_unit("mover").mode(node, {"lanes": 16}, board) == {"runs": [8]}


def test_mode_is_word_or_element_copies() -> None:
    """The per-layer mode: per copy call, the run moved as whole words (0: element by element)."""
    mover, board = get_unit("mover"), get_board("zcu102")
    node = next(iter(single_op(*CASES["transpose_rows"]).topo()))
    assert mover.mode(node, {"lanes": 4}, board) == {"runs": [6]}
    assert [d.words for d in mover.descs(node, 4, 128, {"runs": [6]})] == [1]
    node = next(iter(single_op(*CASES["transpose_last"]).topo()))
    assert mover.mode(node, {"lanes": 4}, board) == {"runs": [0]}
    cat = next(n for n in concat_graph(True).topo() if n.op == "concat")
    assert mover.mode(cat, {"lanes": 4}, board) == {"runs": [6, 6]}
    cls = next(n for n in concat_graph(True).topo() if n.op == "const")
    assert mover.mode(cls, {"lanes": 4}, board) is None
    free = next(iter(single_op("reshape", [info((1, 4, 8))], {"shape": [1, 2, 16]}).topo()))
    assert mover.mode(free, {"lanes": 8}, board) == {"runs": []}


def test_describe_reads_the_recorded_mode() -> None:
    """describe builds the descriptors the design's mode says (here element copies), and refuses a mode that
    does not fit the layer at the design's lanes."""
    from vaqf.errors import VaqfError
    from vaqf.units.base import EmitContext

    g = single_op(*CASES["transpose_rows"])
    node = next(iter(g.topo()))
    bufs = {"in0": "act_buf0", "out": "act_buf1"}
    dummy = {"act": "act_dummy", "acc": "acc_dummy"}

    def ctx(runs: list[int]) -> EmitContext:
        return EmitContext(bufs, {}, {node.name: "l0"}, dummy, lanes=4, modes={node.name: {"runs": runs}})

    (call,) = get_unit("mover").describe(node, ctx([0]))["calls"]
    assert call["desc"].words == 0 and call["desc"].n == 90
    (call,) = get_unit("mover").describe(node, ctx([6]))["calls"]
    assert call["desc"].words == 1 and call["desc"].n == 30
    with pytest.raises(VaqfError):
        get_unit("mover").describe(node, ctx([3]))  # runs of 3 start mid-word
    with pytest.raises(VaqfError):
        get_unit("mover").describe(node, ctx([6, 6]))
