"""strided_copy: shape inference, the reference on a hand-checked case, the simulator = the reference, the C++
on the mover = the reference with its cycles as the cost model counts them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.ops.opgraph import assert_fast_equals_reference, single_op
from tests.ops.test_mover import CASES, LANES, cases_of, check, info
from vaqf.errors import VaqfError
from vaqf.ir import Graph
from vaqf.ops.strided_copy import reference
from vaqf.ops.transpose import reference as transpose


def sample() -> Graph:
    return single_op(*CASES["strided_copy"])


def test_infer_takes_the_box_and_refuses_reads_outside() -> None:
    assert sample().outputs[0].info.shape == (2, 2, 6)
    with pytest.raises(VaqfError, match="op: strided copy reads outside its input"):
        single_op("strided_copy", [info((1, 4, 12))], {"shape": [2, 2, 6], "strides": [6, 40, 1], "base": 0})


def test_reference_by_hand() -> None:
    x = np.arange(8).reshape(1, 1, 8)
    np.testing.assert_array_equal(reference(x, [2, 2], [1, 4], 2), [[[2, 6], [3, 7]]])


def test_a_transpose_is_a_strided_copy(rng: np.random.Generator) -> None:
    x = rng.integers(-128, 128, size=(3, 1, 4, 5))
    np.testing.assert_array_equal(reference(x, [1, 5, 4], [20, 1, 5], 0), transpose(x, [0, 2, 1]))


@pytest.mark.parametrize("case", cases_of("strided_copy"))
def test_simulator_equals_reference(rng: np.random.Generator, case: str) -> None:
    assert_fast_equals_reference(single_op(*CASES[case]), rng)


@pytest.mark.cxx
@pytest.mark.parametrize("lanes", LANES)
@pytest.mark.parametrize("case", cases_of("strided_copy"))
def test_cxx_equals_reference_and_cycles(case: str, lanes: int, tmp_path: Path) -> None:
    check(single_op(*CASES[case]), lanes, tmp_path / "p")
