"""transpose: shape inference, the reference on a hand-checked case, the simulator = the reference, the C++ on
the mover = the reference with its cycles as the cost model counts them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.ops.opgraph import assert_fast_equals_reference, single_op
from tests.ops.test_mover import CASES, LANES, cases_of, check, info
from vaqf.errors import VaqfError
from vaqf.ir import Graph
from vaqf.ops import get_spec
from vaqf.ops.transpose import reference


def sample() -> Graph:
    return single_op(*CASES["transpose_rows"])


def test_infer_permutes_the_shape() -> None:
    g = sample()
    assert g.outputs[0].info.shape == (1, 5, 3, 6)
    with pytest.raises(VaqfError, match="op: \\[0, 1, 1, 3\\] is not a permutation"):
        single_op("transpose", [info((1, 3, 5, 6))], {"perm": [0, 1, 1, 3]})


def test_reference_by_hand() -> None:
    x = np.arange(6).reshape(1, 1, 2, 3)  # one sample of IR shape [1, 2, 3]
    np.testing.assert_array_equal(reference(x, [0, 2, 1]), [[[[0, 3], [1, 4], [2, 5]]]])


def test_merged_transposes_equal_the_pair(rng: np.random.Generator) -> None:
    g = sample()
    node = g.nodes[0]
    second = single_op("transpose", [g.outputs[0].info], {"perm": [0, 3, 1, 2]}).nodes[0]
    merged = get_spec("transpose").merge_with_consumer(node, second)
    x = rng.integers(-128, 128, size=(2, 1, 3, 5, 6))
    np.testing.assert_array_equal(reference(x, merged["perm"]),
                                  reference(reference(x, node.attrs["perm"]), second.attrs["perm"]))


@pytest.mark.parametrize("case", cases_of("transpose"))
def test_simulator_equals_reference(rng: np.random.Generator, case: str) -> None:
    assert_fast_equals_reference(single_op(*CASES[case]), rng)


@pytest.mark.cxx
@pytest.mark.parametrize("lanes", LANES)
@pytest.mark.parametrize("case", cases_of("transpose"))
def test_cxx_equals_reference_and_cycles(case: str, lanes: int, tmp_path: Path) -> None:
    check(single_op(*CASES[case]), lanes, tmp_path / "p")
