"""The on-chip word layout, the buffer plan in words, and what sharing the units costs."""

from __future__ import annotations

import numpy as np
import pytest

from tests.helpers import add_dense, add_relu, add_requant, small_graph
from vaqf.errors import VaqfError
from vaqf.hw.layout import design_lanes, row_words, same_layout, value_words, word_index
from vaqf.hw.memory import plan_buffers
from vaqf.hw.model import sharing_cost
from vaqf.ir import Graph, IntType, TensorInfo


def info(*shape: int) -> TensorInfo:
    return TensorInfo(shape, IntType(8, signed=False), [1.0], 0)


def test_rows_are_padded_to_whole_words() -> None:
    assert [row_words(d, 64) for d in (1, 64, 65, 192, 197)] == [1, 1, 2, 3, 4]
    t = info(1, 197, 192)
    assert value_words(t, 64) == 197 * 3 and value_words(t, 256) == 197
    # every element has its own (word, lane), and a row starts a new word
    for lanes in (1, 4, 16, 64, 256):
        seen = {word_index(t, i, lanes) for i in range(t.size)}
        assert len(seen) == t.size
        assert all(word_index(t, r * 192, lanes) == (r * row_words(192, lanes), 0) for r in range(197))


def test_a_reshape_shares_the_words_only_when_every_element_keeps_its_place() -> None:
    a, b, c = info(1, 16, 64), info(1, 1024), info(1, 64, 16)
    assert same_layout(a, b, 16) and same_layout(a, b, 64)      # whole words on both sides
    assert not same_layout(a, c, 32)                             # rows of 64 vs rows of 16 (half a word)
    assert same_layout(a, c, 16)
    assert not same_layout(a, info(1, 8, 64), 16)                # not the same elements
    for lanes in (16, 32, 64):  # the rule matches the element positions themselves
        for x, y in ((a, b), (a, c)):
            same = all(word_index(x, i, lanes) == word_index(y, i, lanes) for i in range(x.size))
            assert same == same_layout(x, y, lanes), (x.shape, y.shape, lanes)


def test_buffers_are_counted_in_words_of_the_designs_lanes() -> None:
    g = small_graph(np.random.default_rng(0))
    for lanes in (1, 8, 64):
        plan = plan_buffers(g, lanes)
        assert plan.lanes == lanes
        for v in g.values():
            if v.name in plan.buffer_of:
                words = plan.words[(plan.kind_of[v.name], plan.buffer_of[v.name])]
                assert words >= value_words(v.info, lanes)
        one = plan_buffers(g, 1).cost()
        assert plan.cost().bram18 >= 0 and (lanes == 1 or plan.cost().lut + plan.cost().bram18 >= one.bram18)


def test_units_must_share_one_lane_count() -> None:
    assert design_lanes({"dense_int8": {"pe": 2, "simd": 16}, "eltwise": {"lanes": 16}, "mover": {}}) == 16
    assert design_lanes({"mover": {}}) == 1
    with pytest.raises(VaqfError, match="disagree on the lanes"):
        design_lanes({"dense_int8": {"pe": 2, "simd": 16}, "eltwise": {"lanes": 8}})


def test_sharing_grows_with_lanes_and_call_sites() -> None:
    rng = np.random.default_rng(1)
    g = Graph("chain")
    x = g.add_input("x", info(1, 32))
    v = x
    for i in range(4):
        d = add_dense(g, v, rng.integers(-7, 8, size=(32, 32)), name=f"fc{i}")
        q = add_requant(g, d.outputs[0], 0.1, IntType(8, signed=False), name=f"q{i}")
        v = add_relu(g, q.outputs[0], f"relu{i}").outputs[0]
    g.outputs.append(v)
    g.verify()
    costs = [sharing_cost(g, plan_buffers(g, lanes)).lut for lanes in (1, 4, 16)]
    assert 0 < costs[0] < costs[1] < costs[2]
    short = Graph("one")
    y = short.add_input("x", info(1, 32))
    short.outputs.append(add_dense(short, y, rng.integers(-7, 8, size=(32, 32)), name="fc").outputs[0])
    short.verify()
    assert sharing_cost(short, plan_buffers(short, 4)).lut < costs[1]
