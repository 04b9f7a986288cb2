"""FuseEpilogues, RemoveDeadNodes and the PassManager contract."""

from __future__ import annotations

import numpy as np
import pytest

from tests.helpers import add_relu, assert_same_graph, ops_of, qdq_model, qonnx_model, small_graph
from vaqf.api import load_model
from vaqf.backend.emit import random_int_inputs
from vaqf.errors import IRError
from vaqf.ir import Graph, IntType, TensorInfo
from vaqf.ir.serialize import graph_to_data
from vaqf.passes import FuseEpilogues, Pass, PassManager, PassResult, RemoveDeadNodes, optimize
from vaqf.sim.simulator import Simulator


def _copy(g: Graph) -> Graph:
    """An independent copy through the serializer (tested in tests/ir/test_serialize.py)."""
    import tempfile
    from pathlib import Path

    from vaqf.ir.serialize import load_graph, save_graph

    with tempfile.TemporaryDirectory() as td:
        save_graph(g, Path(td))
        return load_graph(Path(td))


def _assert_same_results(before: Graph, after: Graph, ints: list[np.ndarray]) -> None:
    a = Simulator(before).run_int(ints)
    b = Simulator(after).run_int(ints)
    assert len(a.outputs) == len(b.outputs)
    for x, y in zip(a.outputs, b.outputs, strict=True):
        np.testing.assert_array_equal(x, y)
    for x, y in zip(a.dequantized, b.dequantized, strict=True):
        np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("relu_first", [True, False], ids=["dense-relu-requant", "dense-requant-relu"])
@pytest.mark.parametrize("out_zp", [0, 9])
def test_fuse_dense_relu_requant(relu_first: bool, out_zp: int, rng: np.random.Generator) -> None:
    g = small_graph(rng, relu_first=relu_first, out_zp=out_zp)
    before = _copy(g)
    assert ops_of(g) == ["dense", "relu", "requant", "dense"] if relu_first else ["dense", "requant", "relu", "dense"]
    result = FuseEpilogues()(g)
    assert result.modified is True
    assert result.graph is g  # in place
    g.verify()
    assert ops_of(g) == ["dense", "dense"]
    fc0 = g.node("fc0")
    assert fc0.attrs["relu"] is True and fc0.attrs["requant"] is not None
    assert fc0.outputs[0].info.qtype == IntType(8, signed=False)
    assert fc0.outputs[0].info.zero_point == out_zp
    assert g.node("fc1").attrs["relu"] is False and g.node("fc1").attrs["requant"] is None
    # random integers over the whole input range, saturation included
    _assert_same_results(before, g, random_int_inputs(before, 2000, seed=1))
    # truthful "modified": nothing left to do
    snapshot = graph_to_data(g)
    again = FuseEpilogues()(g)
    assert again.modified is False
    after = graph_to_data(g)
    assert snapshot[0] == after[0]


@pytest.mark.parametrize("make", [qonnx_model, qdq_model], ids=["qonnx", "qdq"])
def test_fusion_of_imported_models_keeps_results(make, rng: np.random.Generator) -> None:
    g = load_model(make(rng), optimize=False)
    assert "requant" in ops_of(g) and "relu" in ops_of(g)
    before = _copy(g)
    result = optimize(g)
    assert result.modified is True
    assert set(ops_of(result.graph)) == {"dense"}
    _assert_same_results(before, result.graph, random_int_inputs(before, 1000, seed=2))
    assert optimize(result.graph).modified is False


def test_no_fusion_when_the_intermediate_has_other_uses(rng: np.random.Generator) -> None:
    g = small_graph(rng)
    fc0 = g.node("fc0")
    g.outputs.append(fc0.outputs[0])  # the accumulator is also a graph output
    assert FuseEpilogues()(g).modified is False
    g.outputs.pop()
    add_relu(g, fc0.outputs[0], "second_reader")  # a second consumer (dead, not an output)
    g.outputs.append(g.value("second_reader"))
    assert FuseEpilogues()(g).modified is False
    assert g.node("fc0").attrs["relu"] is False


def test_no_fusion_of_a_second_relu(rng: np.random.Generator) -> None:
    """A dense that already has relu and requant does not absorb another relu after it."""
    g = small_graph(rng)
    extra = add_relu(g, g.outputs[0], "tail")
    g.outputs = [extra.outputs[0]]
    FuseEpilogues()(g)
    fc1 = g.node("fc1")
    assert fc1.attrs["relu"] is True  # fc1's accumulator relu was absorbed
    before = _copy(g)
    extra2 = add_relu(g, g.outputs[0], "tail2")
    g.outputs = [extra2.outputs[0]]
    assert FuseEpilogues()(g).modified is False  # relu twice is not absorbed twice
    assert "tail2" in {n.name for n in g.nodes}
    _assert_same_results(before, g, random_int_inputs(before, 500, seed=3))


def test_remove_dead_nodes(rng: np.random.Generator) -> None:
    g = small_graph(rng)
    dead = add_relu(g, g.node("fc0").outputs[0], "dead")
    add_relu(g, dead.outputs[0], "dead2")
    result = RemoveDeadNodes()(g)
    assert result.modified is True
    assert {"dead", "dead2"}.isdisjoint(n.name for n in g.nodes)
    g.verify()
    assert RemoveDeadNodes()(g).modified is False


class _Breaks(Pass):
    """Deliberately corrupts the graph: retypes a node's output behind its op's back."""

    def call(self, graph: Graph) -> PassResult:
        node = next(iter(graph.topo()))
        info = node.outputs[0].info
        node.outputs[0].info = TensorInfo(info.shape, IntType(3), info.scale, info.zero_point)
        return PassResult(graph, True)


def test_pass_manager_names_the_pass_sequence_on_failure(rng: np.random.Generator) -> None:
    g = small_graph(rng)
    pm = PassManager([RemoveDeadNodes(), FuseEpilogues(), _Breaks()])
    with pytest.raises(IRError) as e:
        pm(g)
    msg = str(e.value)
    assert "RemoveDeadNodes -> FuseEpilogues -> _Breaks" in msg
    assert "fc0" in msg  # and what is wrong


def test_pass_manager_iterates_until_nothing_changes(rng: np.random.Generator) -> None:
    calls = []

    class Counting(Pass):
        def call(self, graph: Graph) -> PassResult:
            calls.append(1)
            return PassResult(graph, len(calls) < 3)

    g = small_graph(rng)
    result = PassManager([Counting()], max_iterations=10)(g)
    assert result.modified is True and len(calls) == 3
    calls.clear()
    assert PassManager([Counting()], max_iterations=2)(g).modified is True and len(calls) == 2


def test_pipeline_is_idempotent_on_its_output(rng: np.random.Generator) -> None:
    g = small_graph(rng)
    optimize(g)
    snapshot = _copy(g)
    assert optimize(g).modified is False
    assert_same_graph(snapshot, g)
