"""Simplify chains of relabelling and data-movement ops (reshape, transpose, rescale).

Exporters emit long Reshape/Transpose chains around attention and patch embedding. Two consecutive
nodes that one node can do (``OpSpec.merge_with_consumer``) are merged, and nodes that return their
input unchanged (``OpSpec.is_identity``) are removed.
"""

from __future__ import annotations

import numpy as np

from vaqf.ir import Graph
from vaqf.ops import get_spec
from vaqf.passes.base import Pass, PassResult


class MergeChains(Pass):
    def call(self, graph: Graph) -> PassResult:
        modified = False
        changed = True
        while changed:
            changed = False
            for node in list(graph.topo()):
                if len(node.outputs) != 1:
                    continue
                out = node.outputs[0]
                users = graph.consumers(out)
                if len(users) != 1 or any(o is out for o in graph.outputs) or len(users[0].inputs) != 1:
                    continue
                merged = get_spec(node.op).merge_with_consumer(node, users[0])
                if merged is None:
                    continue
                node.attrs = merged
                graph.absorb_consumer(node, users[0])
                modified = changed = True
                break
        return PassResult(graph, modified)


class RemoveIdentities(Pass):
    def call(self, graph: Graph) -> PassResult:
        modified = False
        for node in list(graph.topo()):
            if len(node.inputs) != 1 or len(node.outputs) != 1 or not get_spec(node.op).is_identity(node):
                continue
            src, out = node.inputs[0], node.outputs[0]
            if not src.info.same_meaning(out.info):
                continue
            if any(o is out for o in graph.outputs) and (any(i is src for i in graph.inputs)
                                                         or any(o is src for o in graph.outputs)):
                continue  # keep a distinct output value
            graph.replace_all_uses_with(out, src)
            graph.remove(node)
            modified = True
        return PassResult(graph, modified)


class CollapsePermutations(Pass):
    """Replace a chain of pure element permutations (``OpSpec.permutes_elements``: reshape, transpose)
    whose composition keeps every element in place by a single reshape. The composition is checked by
    running the chain's references on the element indices, so any mix of reshapes and transposes works."""

    def call(self, graph: Graph) -> PassResult:
        modified = True
        any_modified = False
        while modified:
            modified = False
            for start in list(graph.topo()):
                chain = self._chain(graph, start)
                if chain is None:
                    continue
                head = chain[0]
                out = chain[-1].outputs[0]
                for n in chain[1:]:
                    graph.absorb_consumer(head, n)
                head.op = "reshape"
                head.attrs = {"shape": list(out.info.shape)}
                modified = any_modified = True
                break
        return PassResult(graph, any_modified)

    @staticmethod
    def _chain(graph: Graph, start) -> list | None:
        if not get_spec(start.op).permutes_elements or len(start.inputs) != 1:
            return None
        chain = [start]
        node = start
        while True:
            out = node.outputs[0]
            users = graph.consumers(out)
            if len(users) != 1 or any(o is out for o in graph.outputs) or len(users[0].inputs) != 1 \
                    or not get_spec(users[0].op).permutes_elements:
                break
            node = users[0]
            chain.append(node)
        src = start.inputs[0]
        idx = np.arange(src.info.size, dtype=np.int64).reshape((1,) + src.info.shape)
        best = None
        for i, n in enumerate(chain):
            idx = get_spec(n.op).reference(n, [idx])[0]
            moving = sum(not get_spec(m.op).aliases_input for m in chain[: i + 1])
            if i > 0 and moving > 0 and np.array_equal(idx.reshape(-1), np.arange(idx.size)):
                best = i
        return chain[: best + 1] if best is not None else None
