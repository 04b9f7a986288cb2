"""Graph editing, verification and topological order."""

from __future__ import annotations

import numpy as np
import pytest

from tests.helpers import add_dense, add_relu, add_requant, ops_of, small_graph
from vaqf.errors import IRError
from vaqf.ir import Graph, IntType, TensorInfo, Value
from vaqf.sim.simulator import Simulator


def _int8_input(g: Graph, name: str = "x", n: int = 6) -> Value:
    return g.add_input(name, TensorInfo((1, n), IntType(8), [0.5], 0))


def test_replace_all_uses_with_rewires_consumers_and_outputs(rng: np.random.Generator) -> None:
    g = Graph()
    x = _int8_input(g)
    a = add_relu(g, x, "a")
    b = add_relu(g, a.outputs[0], "b")
    c = add_relu(g, a.outputs[0], "c")
    g.outputs = [a.outputs[0], c.outputs[0]]
    # bypass relu "a": everything that read a's output now reads x
    g.replace_all_uses_with(a.outputs[0], x)
    assert b.inputs == [x] and c.inputs == [x]
    assert g.consumers(a.outputs[0]) == []
    assert g.outputs[0] is x and g.outputs[1] is c.outputs[0]
    assert {n.name for n in g.consumers(x)} == {"a", "b", "c"}
    g.remove(a)  # unused now
    g.verify()
    assert ops_of(g) == ["relu", "relu"]
    ints = rng.integers(-128, 128, size=(5, 6))
    res = Simulator(g).run_int([ints])
    np.testing.assert_array_equal(res.outputs[0], ints)
    np.testing.assert_array_equal(res.outputs[1], np.maximum(ints, 0))


def test_replace_all_uses_with_updates_topological_edges() -> None:
    """A consumer rewired onto a node added after it must be ordered after that node."""
    g = Graph()
    x = _int8_input(g)
    a = add_relu(g, x, "a")
    b = add_relu(g, a.outputs[0], "b")
    g.outputs = [b.outputs[0]]
    late = add_relu(g, x, "late")
    g.replace_all_uses_with(a.outputs[0], late.outputs[0])
    g.remove(a)
    order = [n.name for n in g.topo()]
    assert order == ["late", "b"]
    g.verify()


def test_remove_refuses_used_values() -> None:
    g = Graph()
    x = _int8_input(g)
    a = add_relu(g, x, "a")
    b = add_relu(g, a.outputs[0], "b")
    g.outputs = [b.outputs[0]]
    with pytest.raises(IRError, match="still used"):
        g.remove(a)  # b reads it
    with pytest.raises(IRError, match="still used"):
        g.remove(b)  # it is a graph output
    assert ops_of(g) == ["relu", "relu"] and g.value("a") is a.outputs[0]
    g.outputs = [a.outputs[0]]
    g.remove(b)
    assert [n.name for n in g.nodes] == ["a"]
    with pytest.raises(KeyError):
        g.value("b")
    assert g.producer(a.outputs[0]) is a
    g.verify()


def test_absorb_consumer_fuses_a_single_input_consumer(rng: np.random.Generator) -> None:
    g = Graph()
    x = _int8_input(g)
    d = add_dense(g, x, rng.integers(-127, 128, size=(4, 6)), name="fc")
    d.source = "onnx_fc"
    r = add_relu(g, d.outputs[0], "r")
    r.source = "onnx_relu"
    g.outputs = [r.outputs[0]]
    inner = d.outputs[0]
    g.absorb_consumer(d, r)
    assert d.outputs == [r.outputs[0]]
    assert g.producer(r.outputs[0]) is d
    assert "r" not in {n.name for n in g.nodes}
    with pytest.raises(KeyError):
        g.value(inner.name)
    assert d.source == "onnx_fc+onnx_relu"


def test_absorb_consumer_refuses_shared_or_exported_values(rng: np.random.Generator) -> None:
    g = Graph()
    x = _int8_input(g)
    d = add_dense(g, x, rng.integers(-127, 128, size=(4, 6)), name="fc")
    r1 = add_relu(g, d.outputs[0], "r1")
    r2 = add_relu(g, d.outputs[0], "r2")
    g.outputs = [r1.outputs[0], r2.outputs[0]]
    with pytest.raises(IRError, match="other uses"):
        g.absorb_consumer(d, r1)
    g2 = Graph()
    x2 = _int8_input(g2)
    d2 = add_dense(g2, x2, rng.integers(-127, 128, size=(4, 6)), name="fc")
    r3 = add_relu(g2, d2.outputs[0], "r3")
    g2.outputs = [d2.outputs[0], r3.outputs[0]]
    with pytest.raises(IRError, match="other uses"):
        g2.absorb_consumer(d2, r3)  # the inner value is a graph output
    other = add_relu(g2, x2, "other")
    with pytest.raises(IRError, match="not a single-input consumer"):
        g2.absorb_consumer(d2, other)
    # nothing changed
    assert g2.producer(d2.outputs[0]) is d2 and r3.inputs == [d2.outputs[0]]


def test_verify_catches_an_inconsistent_output_type(rng: np.random.Generator) -> None:
    g = small_graph(rng)
    g.verify()
    node = g.node("fc0")
    good = node.outputs[0].info
    node.outputs[0].info = TensorInfo(good.shape, IntType(good.qtype.bits + 1), good.scale, good.zero_point)
    with pytest.raises(IRError, match="fc0") as e:
        g.verify()
    assert "op infers" in str(e.value)
    node.outputs[0].info = TensorInfo(good.shape, good.qtype, good.scale * 2, good.zero_point)  # wrong scale
    with pytest.raises(IRError, match="fc0"):
        g.verify()
    node.outputs[0].info = good
    g.verify()


def test_verify_catches_structural_errors(rng: np.random.Generator) -> None:
    g = small_graph(rng)
    stranger = TensorInfo((1, 3), IntType(8))
    g.outputs.append(Value("never_made", stranger))
    with pytest.raises(IRError, match="never computed"):
        g.verify()
    g.outputs.pop()
    relu = g.node("act0_relu")
    relu.inputs = [Value("dangling", stranger)]
    with pytest.raises(IRError, match="not defined"):
        g.verify()


def test_duplicate_names_are_refused_or_uniquified() -> None:
    g = Graph()
    x = _int8_input(g)
    with pytest.raises(IRError, match="already exists"):
        g.add_input("x", x.info)
    a = add_relu(g, x, "a")
    b = add_relu(g, x, "a")  # same base name
    assert a.name != b.name and a.outputs[0].name != b.outputs[0].name
    with pytest.raises(IRError, match="already has a producer"):
        g.add_node("relu", [x], [a.outputs[0]])


def test_topo_order_is_dependency_order_and_deterministic(rng: np.random.Generator) -> None:
    g = Graph()
    x = _int8_input(g)
    mid = g.new_value("mid", x.info)
    out = g.new_value("out", x.info)
    # the consumer is added before its producer
    g.add_node("relu", [mid], [out], name="consumer")
    g.add_node("relu", [x], [mid], name="producer")
    side = add_relu(g, x, "side")
    g.outputs = [out, side.outputs[0]]
    order = [n.name for n in g.topo()]
    assert order.index("producer") < order.index("consumer")
    assert order == [n.name for n in g.topo()]  # same every time
    g.verify()


def test_topo_tolerates_removal_while_iterating() -> None:
    g = Graph()
    x = _int8_input(g)
    a = add_relu(g, x, "a")
    b = add_relu(g, x, "b")
    c = add_relu(g, x, "c")
    g.outputs = [a.outputs[0]]
    seen = []
    for node in g.topo():
        seen.append(node.name)
        if node is a:
            g.remove(c)
            g.remove(b)
    assert seen == ["a"]
    assert [n.name for n in g.nodes] == ["a"]


def test_dense_requant_relu_chain_builds_and_verifies(rng: np.random.Generator) -> None:
    g = Graph()
    x = g.add_input("x", TensorInfo((1, 6), IntType(8, signed=False), [0.1], 3))
    d = add_dense(g, x, rng.integers(-127, 128, size=(4, 6)))
    q = add_requant(g, d.outputs[0], 0.2, IntType(8), -3)
    r = add_relu(g, q.outputs[0])
    g.outputs = [r.outputs[0]]
    g.verify()
    assert r.outputs[0].info.zero_point == -3
    assert ops_of(g) == ["dense", "requant", "relu"]
