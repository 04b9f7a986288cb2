"""Simplify chains of relabelling and data-movement ops (reshape, transpose, rescale).

Exporters emit long Reshape/Transpose chains around attention and patch embedding. Two consecutive
nodes that one node can do (``OpSpec.merge_with_consumer``) are merged, and nodes that return their
input unchanged (``OpSpec.is_identity``) are removed.
"""

from __future__ import annotations

import numpy as np

from vaqf.ir import Graph, Node
from vaqf.ops import get_spec
from vaqf.passes.base import Pass, PassResult, absorb_sole_consumers, rewrite_until_fixed


class MergeChains(Pass):
    """Merge a node with its sole consumer when the op can do both in one (``OpSpec.merge_with_consumer``)."""

    def call(self, graph: Graph) -> PassResult:
        def merge(node: Node, user: Node) -> bool:
            merged = get_spec(node.op).merge_with_consumer(node, user)
            if merged is None:
                return False
            node.attrs = merged
            return True

        return PassResult(graph, absorb_sole_consumers(graph, merge))


class RemoveIdentities(Pass):
    """Remove nodes that return their input unchanged (``OpSpec.is_identity``), unless one separates a
    graph input or output from another."""

    ensures = ("no_identities",)

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
        def collapse(start: Node) -> bool:
            chain = self._chain(graph, start)
            if chain is None:
                return False
            head = chain[0]
            out = chain[-1].outputs[0]
            for n in chain[1:]:
                graph.absorb_consumer(head, n)
            head.op = "reshape"
            head.attrs = {"shape": list(out.info.shape)}
            return True

        return PassResult(graph, rewrite_until_fixed(graph, collapse))

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


class HoistRequant(Pass):
    """Move a per-tensor requantization (or relu) above the permutations that separate it from its
    producer: ``requant(transpose(x)) == transpose(requant(x))`` for a per-tensor map, so the requant
    can then fuse into the producer's epilogue and the permuted tensor is stored narrow."""

    def call(self, graph: Graph) -> PassResult:
        def hoist(perm: Node) -> bool:
            if not get_spec(perm.op).permutes_elements or len(perm.inputs) != 1:
                return False
            out = perm.outputs[0]
            users = graph.consumers(out)
            if len(users) != 1 or any(o is out for o in graph.outputs):
                return False
            ew = users[0]
            epi = get_spec(ew.op).as_epilogue(ew)
            src = perm.inputs[0]
            if epi is None or src.info.per_channel or len(graph.consumers(src)) != 1:
                return False
            if epi.kind == "requant" and np.asarray(epi.params["mantissa"]).size != 1:
                return False
            head = graph.producer(src)
            while head is not None and get_spec(head.op).permutes_elements and len(head.inputs) == 1:
                head = graph.producer(head.inputs[0])
            if head is None:
                return False  # only worth it when the requant can then fuse into a producer
            _swap(graph, perm, ew)
            return True

        return PassResult(graph, rewrite_until_fixed(graph, hoist))


def _swap(graph: Graph, first, second) -> None:
    """first -> second  becomes  second' -> first' (second elementwise, first a permutation)."""
    from vaqf.ir import TensorInfo

    src = first.inputs[0]
    mid_old = first.outputs[0]
    final = second.outputs[0]
    spec2 = get_spec(second.op)
    mid_info = spec2.infer(second, [src.info])[0]
    mid = graph.new_value(f"{final.name}_pre", TensorInfo(src.info.shape, mid_info.qtype, mid_info.scale,
                                                           mid_info.zero_point))
    a = graph.add_node(second.op, [src], [mid], dict(second.attrs), name=second.name, source=second.source)
    graph.replace_all_uses_with(final, mid_old)  # consumers of the old result now read a placeholder
    graph.remove(second)
    b_out = graph.new_value(f"{final.name}_post", TensorInfo(final.info.shape, mid.info.qtype, mid.info.scale,
                                                              mid.info.zero_point))
    b = graph.add_node(first.op, [mid], [b_out], dict(first.attrs), name=first.name + "_h", source=first.source)
    graph.replace_all_uses_with(mid_old, b_out)
    graph.remove(first)
    del a, b


class ComposeCopies(Pass):
    """A data-movement node (``OpSpec.moves_elements``) whose input comes from another one is replaced by
    one ``strided_copy`` from the first one's source, when the composed index map is affine (checked on
    the element indices). The intermediate node stays only while other consumers need it."""

    def call(self, graph: Graph) -> PassResult:
        def compose(node: Node) -> bool:
            spec = get_spec(node.op)
            if not spec.moves_elements or spec.aliases_input or len(node.inputs) != 1:
                return False
            chain = [node]
            src = node.inputs[0]
            while True:
                p = graph.producer(src)
                if p is None or not get_spec(p.op).moves_elements or len(p.inputs) != 1:
                    break
                chain.insert(0, p)
                src = p.inputs[0]
            if len(chain) < 2 or sum(not get_spec(n.op).aliases_input for n in chain) < 2:
                return False
            if src.info.per_channel:
                return False
            idx = np.arange(src.info.size, dtype=np.int64).reshape((1,) + src.info.shape)
            for n in chain:
                idx = get_spec(n.op).reference(n, [idx])[0]
            idx = idx[0]
            strides = _affine_strides(idx)
            if strides is None:
                return False
            out = node.outputs[0]
            new = graph.new_value(f"{out.name}_c", out.info)
            graph.add_node("strided_copy", [src], [new], {"shape": list(out.info.shape), "strides": strides,
                           "base": int(idx.reshape(-1)[0]) if idx.size else 0},
                           name=f"{node.name}_copy", source=node.source)
            graph.replace_all_uses_with(out, new)
            graph.remove(node)
            _drop_dead(graph, chain[:-1])
            return True

        return PassResult(graph, rewrite_until_fixed(graph, compose))


def _affine_strides(idx: np.ndarray) -> list[int] | None:
    """Strides s with idx[o] == idx[0] + sum(o_k * s_k) for every o, or None."""
    if idx.size == 0:
        return None
    strides = []
    origin = idx.reshape(-1)[0]
    for axis, n in enumerate(idx.shape):
        if n == 1:
            strides.append(0)
            continue
        sel = [0] * idx.ndim
        sel[axis] = 1
        strides.append(int(idx[tuple(sel)] - origin))
    from vaqf.ops.strided_copy import source_index

    if not np.array_equal(source_index(idx.shape, strides, int(origin)), idx):
        return None
    return strides


def _drop_dead(graph: Graph, nodes: list) -> None:
    for n in reversed(nodes):
        if all(not graph.consumers(v) and not any(o is v for o in graph.outputs) for v in n.outputs):
            graph.remove(n)


class FoldOperandViews(Pass):
    """A strided copy feeding only an activation product, possibly through relabelling ops (reshape,
    rescale), becomes that operand's view: the product reads the copy's source with strides, so q, k^T
    and v are read in place from the projection's output."""

    def call(self, graph: Graph) -> PassResult:
        from vaqf.ops.strided_copy import source_index

        modified = False
        for node in list(graph.topo()):
            if not get_spec(node.op).accepts_operand_views:
                continue
            for i, key in enumerate(("a_view", "b_view")):
                if node.attrs.get(key) is not None:
                    continue
                operand = node.inputs[i]
                chain = []
                v = operand
                while True:
                    p = graph.producer(v)
                    if p is None or len(graph.consumers(v)) != 1 or any(o is v for o in graph.outputs):
                        p = None
                        break
                    if p.op == "strided_copy":
                        break
                    if not get_spec(p.op).aliases_input or len(p.inputs) != 1:
                        p = None
                        break
                    chain.insert(0, p)
                    v = p.inputs[0]
                if p is None:
                    continue
                copy = p
                shape = tuple(operand.info.shape)
                if sum(1 for n in shape[:-2] if n > 1) > 1 or copy.inputs[0].info.per_channel:
                    continue  # the product walks one batch axis
                idx = source_index(tuple(copy.attrs["shape"]), copy.attrs["strides"], int(copy.attrs["base"]))
                strides = _affine_strides(idx.reshape(shape))
                if strides is None:
                    continue
                factor = float(operand.info.scale[0]) / float(copy.outputs[0].info.scale[0])
                node.attrs[key] = {"shape": list(shape), "strides": strides, "base": int(idx.reshape(-1)[0]),
                                   "factor": factor}
                graph.set_input(node, i, copy.inputs[0])
                for dead in reversed([copy] + chain):
                    graph.remove(dead)
                modified = True
        return PassResult(graph, modified)


class FoldOutputViews(Pass):
    """An activation product whose only consumer permutes its result (the head merge of attention) writes
    the permuted layout directly (``out_view``), and the permutation disappears."""

    def call(self, graph: Graph) -> PassResult:
        modified = False
        for node in list(graph.topo()):
            if not get_spec(node.op).accepts_operand_views or node.attrs.get("out_view") is not None:
                continue
            out = node.outputs[0]
            users = graph.consumers(out)
            if len(users) != 1 or any(o is out for o in graph.outputs):
                continue
            perm = users[0]
            pspec = get_spec(perm.op)
            if not pspec.permutes_elements or pspec.aliases_input or len(perm.inputs) != 1:
                continue
            shape = tuple(out.info.shape)
            if sum(1 for n in shape[:-2] if n > 1) > 1:
                continue
            idx = pspec.reference(perm, [np.arange(out.info.size, dtype=np.int64).reshape((1,) + shape)])[0]
            inverse = np.empty(idx.size, dtype=np.int64)
            inverse[idx.reshape(-1)] = np.arange(idx.size)
            strides = _affine_strides(inverse.reshape(shape))
            if strides is None:
                continue
            final = perm.outputs[0]
            node.attrs["out_view"] = {"shape": list(final.info.shape), "strides": strides,
                                      "base": int(inverse[0])}
            graph.absorb_consumer(node, perm)
            modified = True
        return PassResult(graph, modified)
