"""rescale: the same integers under a scale times a positive factor; no unit runs it (no call, no cycle, no
hardware), so there is no C++ of its own to simulate: the model around it C-simulates its neighbours."""

from __future__ import annotations

import numpy as np
import pytest

from tests.ops.opgraph import assert_fast_equals_reference, single_op
from vaqf.errors import VaqfError
from vaqf.hw.model import units_of
from vaqf.ir import Graph, IntType, Node, TensorInfo
from vaqf.ops import get_spec
from vaqf.ops.rescale import reference
from vaqf.units import unit_of

X = TensorInfo((1, 3, 4), IntType(8, True), np.array([0.25]), 2)


def sample() -> Graph:
    return single_op("rescale", [X], {"factor": 0.5})


def test_infer_multiplies_the_scale() -> None:
    out = sample().outputs[0].info
    assert float(out.scale[0]) == 0.125 and out.qtype == X.qtype and out.zero_point == 2
    with pytest.raises(VaqfError, match="op: rescale factor must be positive, got -1.0"):
        get_spec("rescale").infer(Node("op", "rescale", [], [], {"factor": -1.0}), [X])


def test_reference_is_the_input() -> None:
    x = np.array([[[1, -2]]])
    assert reference(x) is x


def test_simulator_equals_reference(rng: np.random.Generator) -> None:
    assert_fast_equals_reference(sample(), rng)


def test_merges_and_vanishes() -> None:
    node = sample().nodes[0]
    assert get_spec("rescale").merge_with_consumer(node, node) == {"factor": 0.25}
    assert get_spec("rescale").is_identity(single_op("rescale", [X], {"factor": 1.0}).nodes[0])


def test_runs_on_no_unit() -> None:
    g = sample()
    assert unit_of(g.nodes[0]) is None and units_of(g) == {}
