"""Graph properties that passes require and ensure (onnx_ir's pass contract, stated as checks).

A property is a function of the graph returning None when it holds, else a one-line reason naming the first
node that breaks it. A pass declares the properties it ``requires`` of its input and those it ``ensures`` of
its output; ``PassManager(check=True)`` (the tests run every pipeline that way) checks them around every pass.
"""

from __future__ import annotations

from collections.abc import Callable

from vaqf.ir import Graph
from vaqf.ops import get_spec

Property = Callable[[Graph], str | None]


def no_dead_nodes(graph: Graph) -> str | None:
    """Every node's outputs reach a graph output."""
    for node in graph.topo():
        if all(not graph.consumers(v) and not any(o is v for o in graph.outputs) for v in node.outputs):
            return f"node {node.name} ({node.op}) feeds nothing"
    return None


def no_identities(graph: Graph) -> str | None:
    """No node that returns its input unchanged with the same meaning is left between two other values
    (RemoveIdentities keeps one only when it separates a graph input or output from another)."""
    for node in graph.topo():
        if len(node.inputs) != 1 or len(node.outputs) != 1 or not get_spec(node.op).is_identity(node):
            continue
        src, out = node.inputs[0], node.outputs[0]
        if not src.info.same_meaning(out.info):
            continue
        io = any(o is out for o in graph.outputs) and (any(i is src for i in graph.inputs)
                                                       or any(o is src for o in graph.outputs))
        if not io:
            return f"node {node.name} ({node.op}) returns its input unchanged"
    return None


def no_fusable_epilogues(graph: Graph) -> str | None:
    """No elementwise epilogue (relu, requantization) is left as the sole consumer of a node that says it
    would absorb it (checked on a copy of the producer, so the graph is not touched)."""
    import copy

    for node in graph.topo():
        consumer = graph.sole_consumer(node)
        if consumer is None or len(consumer.inputs) != 1:
            continue
        epi = get_spec(consumer.op).as_epilogue(consumer)
        if epi is None:
            continue
        trial = copy.copy(node)
        trial.attrs = copy.deepcopy(node.attrs)
        if get_spec(node.op).absorb_epilogue(trial, epi):
            return f"{consumer.name} ({consumer.op}) could be fused into {node.name} ({node.op})"
    return None


def blocks_current(graph: Graph) -> str | None:
    """Every recorded dense-block table still matches its weights (OpSpec.infer checks it)."""
    from vaqf.errors import VaqfError

    for node in graph.topo():
        if node.attrs.get("blocks") is None:
            continue
        try:
            get_spec(node.op).infer(node, [v.info for v in node.inputs])
        except VaqfError as e:
            return f"{node.name}: {e}"
    return None


PROPERTIES: dict[str, Property] = {
    "no_dead_nodes": no_dead_nodes,
    "no_identities": no_identities,
    "no_fusable_epilogues": no_fusable_epilogues,
    "blocks_current": blocks_current,
}


def check(graph: Graph, names: tuple[str, ...]) -> list[str]:
    """The reasons the named properties fail on ``graph`` (empty: all hold)."""
    out = []
    for n in names:
        reason = PROPERTIES[n](graph)
        if reason is not None:
            out.append(f"{n}: {reason}")
    return out
