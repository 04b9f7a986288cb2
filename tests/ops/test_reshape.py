"""reshape: shape inference, the reference, the simulator = the reference, no cycle when the layouts match
(the output shares the input's buffer) and a mover copy when they do not, C-simulated = the reference."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.ops.opgraph import assert_fast_equals_reference, single_op
from tests.ops.test_mover import CASES, LANES, cases_of, check, info
from vaqf.errors import VaqfError
from vaqf.hw.board import get_board
from vaqf.ir import Graph
from vaqf.ops.reshape import reference
from vaqf.units import get_unit
from vaqf.units.mover import COPY_DEPTH


def sample() -> Graph:
    return single_op(*CASES["reshape"])


def test_infer_keeps_the_element_count() -> None:
    assert sample().outputs[0].info.shape == (1, 3, 8)
    with pytest.raises(VaqfError, match="op: cannot reshape \\[1, 4, 6\\] to \\[1, 5, 5\\]"):
        single_op("reshape", [info((1, 4, 6))], {"shape": [1, 5, 5]})


def test_reference_by_hand() -> None:
    x = np.arange(6).reshape(1, 1, 2, 3)
    np.testing.assert_array_equal(reference(x, [1, 3, 2]), [[[[0, 1], [2, 3], [4, 5]]]])


def test_simulator_equals_reference(rng: np.random.Generator) -> None:
    assert_fast_equals_reference(sample(), rng)


def test_cost_free_when_the_layout_matches() -> None:
    """Rows of 8 and 16 at L = 8 are whole words either way: no copy. At L = 16 the rows of 8 are padded
    words: the four runs of 8 land at lane 0 or 8 of the rows of 16, one rotated word per cycle, plus the
    copy loop's depth."""
    node = single_op("reshape", [info((1, 4, 8))], {"shape": [1, 2, 16]}).nodes[0]
    board = get_board("zcu102")
    assert get_unit("mover").cost(node, {"lanes": 8}, board).cycles == 0
    assert get_unit("mover").cost(node, {"lanes": 16}, board).cycles == 4 + COPY_DEPTH


@pytest.mark.cxx
@pytest.mark.parametrize("lanes", LANES)
@pytest.mark.parametrize("case", cases_of("reshape"))
def test_cxx_equals_reference_and_cycles(case: str, lanes: int, tmp_path: Path) -> None:
    check(single_op(*CASES[case]), lanes, tmp_path / "p")
