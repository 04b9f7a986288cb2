"""requant: inference gives the output record's type, the reference on hand-checked cases (each rounding mode,
saturation, per-channel multipliers), the fast path = the reference on edge cases and random inputs, the
identity it recognizes, its cost on a known layer, and the one-node C++ = the reference."""

from __future__ import annotations

import numpy as np
import pytest

from tests.helpers import add_requant
from tests.ops.opgraph import assert_fast_equals_reference
from tests.ops.test_eltwise import build_and_check
from vaqf.hw.board import get_board
from vaqf.ir import Graph, IntType, TensorInfo
from vaqf.ir.qarith import Rounding
from vaqf.ops import get_spec
from vaqf.ops.requant import reference
from vaqf.units import get_unit


def sample(rounding: str = "HALF_EVEN", per_channel: bool = True) -> Graph:
    g = Graph("single_requant")
    scale = np.linspace(0.001, 0.004, 12) if per_channel else np.array([0.002])
    x = g.add_input("x", TensorInfo((1, 5, 12), IntType(16, True), scale, 0))
    g.outputs = [add_requant(g, x, 0.05, IntType(8, False), 3, rounding=rounding, name="rq").outputs[0]]
    g.verify()
    return g


def test_infer_takes_the_record() -> None:
    out = sample().outputs[0].info
    assert out.qtype == IntType(8, False) and out.zero_point == 3 and out.shape == (1, 5, 12)


def test_reference_by_hand() -> None:
    x = np.array([5, 6, 7, -5, 1000])  # times 1 / 2**1: 2.5, 3, 3.5, -2.5, 500
    half_even = reference(x, 0, np.array([1]), np.array([1]), 0, -128, 127, "HALF_EVEN")
    np.testing.assert_array_equal(half_even, [2, 3, 4, -2, 127])
    np.testing.assert_array_equal(reference(x, 0, np.array([1]), np.array([1]), 0, -128, 127, "HALF_UP"),
                                  [3, 3, 4, -3, 127])
    np.testing.assert_array_equal(reference(x, 0, np.array([1]), np.array([1]), 0, -128, 127, "FLOOR"),
                                  [2, 3, 3, -3, 127])
    # per channel on the last axis, input zero point 4, output zero point -1
    got = reference(np.array([[8, 8]]), 4, np.array([1, 3]), np.array([0, 2]), -1, -128, 127, "HALF_EVEN")
    np.testing.assert_array_equal(got, [[3, 2]])  # 4 * 1 - 1; 4 * 3 / 4 = 3, - 1


@pytest.mark.parametrize("rounding", [r.value for r in Rounding])
@pytest.mark.parametrize("per_channel", [True, False])
def test_fast_path_equals_reference(rng: np.random.Generator, rounding: str, per_channel: bool) -> None:
    assert_fast_equals_reference(sample(rounding, per_channel), rng)


def test_identity_when_nothing_changes() -> None:
    g = Graph("same")
    x = g.add_input("x", TensorInfo((1, 4), IntType(8, True), np.array([0.125]), 0))
    node = add_requant(g, x, 0.125, IntType(8, True), 0)
    assert get_spec("requant").is_identity(node)
    assert not get_spec("requant").is_identity(sample().nodes[0])


def test_cycles_of_a_known_layer() -> None:
    """The two channel tables first (12 multipliers, 12 shifts: ceil(12 / 4) = 3 table words each at L = 4,
    each one 128-bit DDR word of 4 lanes: 6 words in one burst), then 5 rows of 12: 15 words at II=1."""
    from vaqf.hw.cost import DDR_LATENCY
    from vaqf.units.eltwise import DEPTH, FILL_DEPTH

    c = get_unit("eltwise").cost(sample().nodes[0], {"lanes": 4}, get_board("zcu102"))
    assert c.cycles == 15 + DEPTH + 6 + DDR_LATENCY + FILL_DEPTH


@pytest.mark.cxx
def test_cxx_equals_reference_and_cycles(tmp_path) -> None:
    assert build_and_check(sample("HALF_UP"), tmp_path / "p", 16).mismatched_values == 0
