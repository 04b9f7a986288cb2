"""im2col: the window geometry, the reference on a hand-checked case (padding reads the zero point), the
simulator = the reference, the C++ on the mover = the reference with its cycles as the cost model counts them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.ops.opgraph import assert_fast_equals_reference, single_op
from tests.ops.test_mover import CASES, LANES, cases_of, check, info
from vaqf.errors import VaqfError
from vaqf.ir import Graph, IntType
from vaqf.ops.im2col import reference


def sample() -> Graph:
    return single_op(*CASES["im2col"])


def test_infer_counts_windows_and_columns() -> None:
    # 3 x 5 x 6 input, 3 x 2 window, stride (2, 1), pads (1, 0, 1, 1): Ho = (5 + 2 - 3)//2 + 1 = 3,
    # Wo = (6 + 1 - 2)//1 + 1 = 6; 18 rows of 3 * 3 * 2 = 18 columns
    assert sample().outputs[0].info.shape == (1, 18, 18)
    with pytest.raises(VaqfError, match="a 7x7 window does not fit a 5x6 input"):
        single_op("im2col", [info((1, 3, 5, 6))], {"kernel": [7, 7], "stride": [1, 1], "pads": [0, 0, 0, 0]})
    with pytest.raises(VaqfError, match="op: channel table \\[2, 1\\] is not increasing"):
        single_op("im2col", [info((1, 3, 5, 6))], {"kernel": [1, 1], "stride": [1, 1], "pads": [0, 0, 0, 0],
                                                  "channels": np.array([2, 1])})


def test_reference_by_hand() -> None:
    """A 2 x 2 image, 2 x 2 window, one pixel of padding on the right (zero point 9): two windows."""
    x = np.array([[1, 2], [3, 4]]).reshape(1, 1, 1, 2, 2)
    got = reference(x, [2, 2], [1, 1], [0, 0, 0, 1], 9)
    np.testing.assert_array_equal(got, [[[[1, 2, 3, 4], [2, 9, 4, 9]]]])
    two = np.stack([x[0, 0, 0], 10 * x[0, 0, 0]]).reshape(1, 1, 2, 2, 2)
    np.testing.assert_array_equal(reference(two, [2, 2], [1, 1], [0, 0, 0, 0], 0, channels=np.array([1])),
                                  [[[[10, 20, 30, 40]]]])


@pytest.mark.parametrize("case", cases_of("im2col"))
def test_simulator_equals_reference(rng: np.random.Generator, case: str) -> None:
    assert_fast_equals_reference(single_op(*CASES[case]), rng)


def test_padding_is_the_zero_point_on_edges(rng: np.random.Generator) -> None:
    g = single_op("im2col", [info((1, 1, 3, 3), IntType(8, False), 200)],
                  {"kernel": [3, 3], "stride": [1, 1], "pads": [1, 1, 1, 1]})
    ref = assert_fast_equals_reference(g, rng, count=6)
    assert np.all(ref[:, 0, 0, [0, 1, 2, 3, 6]] == 200)  # the top-left window's padded taps


@pytest.mark.cxx
@pytest.mark.parametrize("lanes", LANES)
@pytest.mark.parametrize("case", cases_of("im2col"))
def test_cxx_equals_reference_and_cycles(case: str, lanes: int, tmp_path: Path) -> None:
    check(single_op(*CASES[case]), lanes, tmp_path / "p")
