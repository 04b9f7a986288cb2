"""Fuse elementwise epilogues (relu, requantization) into the op that produces their input."""

from __future__ import annotations

from vaqf.ir import Graph, Node
from vaqf.ops import get_spec
from vaqf.passes.base import Pass, PassResult, absorb_sole_consumers


class FuseEpilogues(Pass):
    """If a node's only output has exactly one consumer, and that consumer describes itself as an
    epilogue (``OpSpec.as_epilogue``) that the producer accepts (``OpSpec.absorb_epilogue``), merge them."""

    ensures = ("no_fusable_epilogues",)

    def call(self, graph: Graph) -> PassResult:
        def fuse(node: Node, consumer: Node) -> bool:
            epi = get_spec(consumer.op).as_epilogue(consumer)
            return epi is not None and get_spec(node.op).absorb_epilogue(node, epi)

        return PassResult(graph, absorb_sole_consumers(graph, fuse))


class RemoveDeadNodes(Pass):
    """Drop nodes whose outputs reach no graph output."""

    ensures = ("no_dead_nodes",)

    def call(self, graph: Graph) -> PassResult:
        modified = False
        for node in reversed(list(graph.topo())):
            if all(not graph.consumers(v) and not any(o is v for o in graph.outputs) for v in node.outputs):
                graph.remove(node)
                modified = True
        return PassResult(graph, modified)
