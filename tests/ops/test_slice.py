"""slice: shape inference, the reference on a hand-checked case, the simulator = the reference, the C++ on the
mover = the reference with its cycles as the cost model counts them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.ops.opgraph import assert_fast_equals_reference, single_op
from tests.ops.test_mover import CASES, LANES, cases_of, check, info
from vaqf.errors import VaqfError
from vaqf.ir import Graph
from vaqf.ops.slice import reference


def sample() -> Graph:
    return single_op(*CASES["slice"])


def test_infer_counts_the_kept_indices() -> None:
    assert sample().outputs[0].info.shape == (1, 3, 8)  # rows 1, 3, 5 of 7; columns 2..9 of 10
    with pytest.raises(VaqfError, match="op: slice is empty"):
        single_op("slice", [info((1, 7, 10))], {"axes": [1], "starts": [3], "ends": [3], "steps": [1]})


def test_reference_by_hand() -> None:
    x = np.arange(12).reshape(1, 1, 3, 4)
    got = reference(x, [1, 2], [0, 1], [3, 4], [2, 2])  # rows 0 and 2, columns 1 and 3
    np.testing.assert_array_equal(got, [[[[1, 3], [9, 11]]]])


@pytest.mark.parametrize("case", cases_of("slice"))
def test_simulator_equals_reference(rng: np.random.Generator, case: str) -> None:
    assert_fast_equals_reference(single_op(*CASES[case]), rng)


@pytest.mark.cxx
@pytest.mark.parametrize("lanes", LANES)
@pytest.mark.parametrize("case", cases_of("slice"))
def test_cxx_equals_reference_and_cycles(case: str, lanes: int, tmp_path: Path) -> None:
    check(single_op(*CASES[case]), lanes, tmp_path / "p")
