"""Fuse elementwise epilogues (relu, requantization) into the op that produces their input."""

from __future__ import annotations

from vaqf.ir import Graph
from vaqf.ops import get_spec
from vaqf.passes.base import Pass, PassResult


class FuseEpilogues(Pass):
    """If a node's only output has exactly one consumer, and that consumer describes itself as an
    epilogue (``OpSpec.as_epilogue``) that the producer accepts (``OpSpec.absorb_epilogue``), merge them."""

    def call(self, graph: Graph) -> PassResult:
        modified = False
        changed = True
        while changed:
            changed = False
            for node in list(graph.topo()):
                consumer = graph.sole_consumer(node)
                if consumer is None or len(consumer.inputs) != 1:
                    continue
                epi = get_spec(consumer.op).as_epilogue(consumer)
                if epi is None or not get_spec(node.op).absorb_epilogue(node, epi):
                    continue
                graph.absorb_consumer(node, consumer)
                modified = changed = True
                break
        return PassResult(graph, modified)


class RemoveDeadNodes(Pass):
    """Drop nodes whose outputs reach no graph output."""

    def call(self, graph: Graph) -> PassResult:
        modified = False
        for node in reversed(list(graph.topo())):
            if all(not graph.consumers(v) and not any(o is v for o in graph.outputs) for v in node.outputs):
                graph.remove(node)
                modified = True
        return PassResult(graph, modified)


def default_pipeline() -> list[Pass]:
    from vaqf.passes.simplify import (
        CollapsePermutations,
        ComposeCopies,
        FoldOperandViews,
        FoldOutputViews,
        HoistRequant,
        MergeChains,
        RemoveIdentities,
    )
    from vaqf.passes.sparsity import FindDenseBlocks, FoldConstantChannels

    return [RemoveDeadNodes(), CollapsePermutations(), MergeChains(), RemoveIdentities(), FuseEpilogues(),
            HoistRequant(), ComposeCopies(), FoldOperandViews(), FoldOutputViews(), FoldConstantChannels(),
            FindDenseBlocks()]
