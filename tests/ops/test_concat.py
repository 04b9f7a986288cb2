"""concat: shape inference, the reference on a hand-checked case (a constant broadcasts over the samples), the
simulator = the reference, the C++ on the mover = the reference with its cycles as the cost model counts them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.ops.opgraph import assert_fast_equals_reference, single_op
from tests.ops.test_mover import LANES, check, concat_graph, info
from vaqf.errors import VaqfError
from vaqf.ir import Graph, IntType
from vaqf.ops.concat import reference


def sample() -> Graph:
    return concat_graph(False)


def test_infer_adds_the_axis() -> None:
    assert sample().outputs[0].info.shape == (1, 7, 6)
    assert concat_graph(False, last_axis=True).outputs[0].info.shape == (1, 5, 9)
    with pytest.raises(VaqfError, match="must share type, scale and zero point"):
        single_op("concat", [info((1, 2, 6)), info((1, 2, 6), IntType(8, False))], {"axis": 1})


def test_reference_by_hand() -> None:
    cls = np.array([[[7, 8]]])[None]                   # one sample (a constant) [1, 1, 1, 2]
    x = np.array([[[[1, 2], [3, 4]]], [[[5, 6], [0, 0]]]])  # two samples [2, 1, 2, 2]
    np.testing.assert_array_equal(reference([cls, x], 1), [[[[7, 8], [1, 2], [3, 4]]], [[[7, 8], [5, 6], [0, 0]]]])


@pytest.mark.parametrize("build", [lambda: concat_graph(False), lambda: concat_graph(True),
                                   lambda: concat_graph(False, last_axis=True)])
def test_simulator_equals_reference(rng: np.random.Generator, build) -> None:
    assert_fast_equals_reference(build(), rng)


@pytest.mark.cxx
@pytest.mark.parametrize("lanes", LANES)
@pytest.mark.parametrize("with_const", [False, True])
def test_cxx_equals_reference_and_cycles(with_const: bool, lanes: int, tmp_path: Path) -> None:
    check(concat_graph(with_const), lanes, tmp_path / "p")


@pytest.mark.cxx
@pytest.mark.parametrize("lanes", LANES)
def test_cxx_last_axis(lanes: int, tmp_path: Path) -> None:
    check(concat_graph(False, last_axis=True), lanes, tmp_path / "p")
