"""The pass contract, checked: every property detects what it names, every pass ensures what it states and
reports ``modified`` truthfully (False: the graph is unchanged; a second run: False), and the pipeline holds
all of it on imported MLPs, CNNs and a ViT."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from tests.helpers import add_dense, add_relu, assert_same_graph, qdq_model, qonnx_model, small_graph
from tests.passes.test_sparsity import cnn
from vaqf.api import load_model
from vaqf.errors import IRError
from vaqf.ir import Graph, IntType, TensorInfo
from vaqf.passes import FIXPOINT_ROUNDS, Pass, PassManager, PassResult, default_pipeline, optimize
from vaqf.passes.contract import PROPERTIES, check


def _mlp_with_dead_node(rng: np.random.Generator) -> Graph:
    g = small_graph(rng)
    x = g.inputs[0]
    add_dense(g, x, rng.integers(-7, 8, size=(4, 12)), name="unused")  # feeds nothing
    return g


def _unfused(rng: np.random.Generator) -> Graph:
    g = Graph("unfused")
    x = g.add_input("x", TensorInfo((1, 12), IntType(8, signed=False), [0.0625], 0))
    d = add_dense(g, x, rng.integers(-7, 8, size=(6, 12)), name="fc")
    r = add_relu(g, d.outputs[0], "relu")
    g.outputs.append(r.outputs[0])
    g.verify()
    return g


def test_each_property_names_its_first_violation(rng: np.random.Generator) -> None:
    assert "unused" in PROPERTIES["no_dead_nodes"](_mlp_with_dead_node(rng))
    assert "relu" in PROPERTIES["no_fusable_epilogues"](_unfused(rng))
    for name in PROPERTIES:
        assert PROPERTIES[name](optimize(small_graph(rng)).graph) is None, name
    g = _unfused(rng)
    assert check(g, ("no_dead_nodes", "no_fusable_epilogues")) == \
        [f"no_fusable_epilogues: {PROPERTIES['no_fusable_epilogues'](g)}"]


def test_every_property_of_the_pipeline_is_ensured_by_one_of_its_passes() -> None:
    ensured = {e for p in default_pipeline() for e in p.ensures}
    assert ensured == set(PROPERTIES)
    for p in default_pipeline():
        assert set(p.requires) <= set(PROPERTIES) and set(p.ensures) <= set(PROPERTIES), p.name


def _graphs(rng: np.random.Generator) -> dict[str, Graph]:
    calib = np.random.default_rng(3).normal(size=(16, 1, 8, 8)).astype(np.float32)
    return {"qonnx": load_model(qonnx_model(rng), optimize=False),
            "qdq": load_model(qdq_model(rng), optimize=False),
            "dead": _mlp_with_dead_node(rng),
            "cnn": load_model(cnn(np.random.default_rng(7), {"c1": [0, 1]}), weights="int8", act_bits=8, calib=calib,
                              optimize=False),
            "blocks": load_model(cnn(np.random.default_rng(8), {}, blocks3=True), weights="int8", act_bits=8,
                                 calib=calib, optimize=False)}


@pytest.mark.parametrize("name", ["qonnx", "qdq", "dead", "cnn", "blocks"])
def test_the_pipeline_keeps_the_contract_to_its_fixpoint(name: str, rng: np.random.Generator) -> None:
    g = _graphs(rng)[name]
    result = PassManager(default_pipeline(), max_iterations=FIXPOINT_ROUNDS, check=True)(g)
    assert check(result.graph, tuple(PROPERTIES)) == []
    assert optimize(result.graph, check=True).modified is False  # the fixpoint was reached within the bound


@pytest.mark.parametrize("name", ["qonnx", "qdq", "dead", "cnn", "blocks"])
def test_every_pass_reports_modified_truthfully(name: str, rng: np.random.Generator) -> None:
    g = _graphs(rng)[name]
    for p in default_pipeline():  # each pass on the graph as the passes before it left it
        before = copy.deepcopy(g)
        if not p.call(g).modified:
            assert_same_graph(before, g)  # "not modified" means the graph is unchanged
        again = copy.deepcopy(g)
        assert p.call(g).modified is False, f"{p.name} modified the graph a second time"
        assert_same_graph(again, g)
        g.verify()


def test_the_manager_names_the_pass_that_breaks_its_promise(rng: np.random.Generator) -> None:
    class Liar(Pass):
        ensures = ("no_dead_nodes",)

        def call(self, graph: Graph) -> PassResult:
            add_dense(graph, graph.inputs[0], np.ones((2, 12), dtype=np.int64), name="orphan")
            return PassResult(graph, True)

    with pytest.raises(IRError, match=r"Liar does not ensure.*orphan"):
        PassManager([Liar()], check=True)(small_graph(rng))
    PassManager([Liar()])(copy.deepcopy(small_graph(rng)))  # without check the manager only verifies
