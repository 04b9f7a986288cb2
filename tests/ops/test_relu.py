"""relu: the real zero is the zero point (hand-checked), the simulator = the reference, the relu a GEMM absorbs
equals the relu node, its cost on a known layer, and the one-node C++ = the reference."""

from __future__ import annotations

import numpy as np
import pytest

from tests.helpers import add_relu
from tests.ops.opgraph import assert_fast_equals_reference
from tests.ops.test_eltwise import build_and_check
from vaqf.hw.board import get_board
from vaqf.ir import Graph, IntType, TensorInfo
from vaqf.ops import get_spec
from vaqf.ops.relu import reference
from vaqf.units import get_unit
from vaqf.units.eltwise import DEPTH


def sample() -> Graph:
    g = Graph("single_relu")
    x = g.add_input("x", TensorInfo((1, 3, 10), IntType(8, False), np.array([0.1]), 20))
    g.outputs = [add_relu(g, x, "relu").outputs[0]]
    g.verify()
    return g


def test_infer_keeps_type_scale_and_zero_point() -> None:
    g = sample()
    assert g.outputs[0].info.same_meaning(g.inputs[0].info)


def test_reference_by_hand() -> None:
    np.testing.assert_array_equal(reference(np.array([0, 19, 20, 21, 255]), 20), [20, 20, 20, 21, 255])


def test_simulator_equals_reference(rng: np.random.Generator) -> None:
    assert_fast_equals_reference(sample(), rng)


def test_is_a_gemm_epilogue() -> None:
    assert get_spec("relu").as_epilogue(sample().nodes[0]).kind == "relu"


def test_cycles_of_a_known_layer() -> None:
    # 3 rows of 10 at L = 4: 3 x 3 words at II=1, plus the depth
    assert get_unit("eltwise").cost(sample().nodes[0], {"lanes": 4}, get_board("zcu102")).cycles == 9 + DEPTH


@pytest.mark.cxx
def test_cxx_equals_reference_and_cycles(tmp_path) -> None:
    assert build_and_check(sample(), tmp_path / "p", 4).mismatched_values == 0
