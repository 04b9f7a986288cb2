"""Structured sparsity: constant channels folded away downstream, unused input columns removed, dense
blocks of group-sparse weights found (docs/pruning.md, issue 9).

A pruned output channel (all-zero weight row) of a GEMM is a constant: the epilogue of its bias. That
constant travels through ReLU, requantization, pooling, data movement and residual adds (an add's
element is constant only where both inputs' are) — each op says which of its output elements are known
(``OpSpec.known_outputs``), and nothing is claimed that is not exact. A downstream GEMM whose input
column holds the same known integer in every row folds that column's contribution into its bias
(``OpSpec.fold_known_inputs``), and its zero weight columns (those, and the consumer's own pruned input
channels) are no longer read: the producer stops producing them where it can (im2col sweeps fewer
channels, ``OpSpec.select_output_columns``) and the GEMM's K shrinks. What stays zero is left to the
block finder: a GEMM whose non-zeros lie in dense blocks records them (``OpSpec.find_blocks``) and the
cost model runs it block by block over gathered columns when that is faster.
"""

from __future__ import annotations

import copy
import logging

import numpy as np

from vaqf.ir import Graph
from vaqf.ops import get_spec
from vaqf.ops.base import Known
from vaqf.passes.base import Pass, PassResult
from vaqf.units import unit_of

log = logging.getLogger(__name__)


def known_elements(graph: Graph) -> dict[str, Known]:
    """Every value's elements that hold the same integer for every input, by value name (values with
    none are absent). Unknown elements hold the value's zero point, so references see valid integers."""
    known: dict[str, Known] = {}
    for node in graph.topo():
        ins = [known.get(v.name) for v in node.inputs]
        outs = get_spec(node.op).known_outputs(node, ins)
        for v, k in zip(node.outputs, outs, strict=True):
            if k is None or not k.mask.any():
                continue
            shape = (1,) + tuple(v.info.shape)
            values = np.asarray(k.values, dtype=np.int64).reshape(shape).copy()
            mask = np.asarray(k.mask, dtype=bool).reshape(shape)
            values[~mask] = v.info.zero_point
            known[v.name] = Known(mask, values)
    return known


def reinfer(graph: Graph) -> None:
    """Update stored output types after constants changed (a narrower accumulator, fewer columns)."""
    for node in graph.topo():
        inferred = get_spec(node.op).infer(node, [v.info for v in node.inputs])
        for v, info in zip(node.outputs, inferred, strict=True):
            if not v.info.same_meaning(info):
                v.info = info


class FoldConstantChannels(Pass):
    """Fold known-constant input columns of GEMMs into their biases and stop producing columns no
    consumer reads (see the module docstring). Exact: the graph computes the same integers."""

    def call(self, graph: Graph) -> PassResult:
        modified = False
        known = known_elements(graph)
        for node in graph.topo():
            if get_spec(node.op).fold_known_inputs(node, [known.get(v.name) for v in node.inputs]):
                log.debug("%s: constant input columns folded into the bias", node.name)
                modified = True
        if modified:
            reinfer(graph)
        for node in list(graph.topo()):
            spec = get_spec(node.op)
            needed = spec.needed_input_columns(node)
            if needed is None or not node.inputs:
                continue
            src = node.inputs[0]
            producer = graph.producer(src)
            if producer is None or len(graph.consumers(src)) != 1 or any(o is src for o in graph.outputs):
                continue
            pspec = get_spec(producer.op)
            selection = pspec.select_output_columns(producer, needed)
            if selection is None:
                continue
            attrs, kept = selection
            if not np.all(np.isin(np.flatnonzero(needed), kept)):  # pragma: no cover - an OpSpec bug
                raise AssertionError(f"{producer.name} would drop columns {node.name} reads")
            producer.attrs = attrs
            src.info = pspec.infer(producer, [v.info for v in producer.inputs])[0]
            spec.keep_input_columns(node, kept)
            log.debug("%s: reads %d of %d input columns", node.name, kept.size, needed.size)
            modified = True
        if modified:
            reinfer(graph)
        return PassResult(graph, modified)


class FindDenseBlocks(Pass):
    """Record the dense blocks of group-sparse weights (``OpSpec.find_blocks``) where the node's unit can
    run them faster (``Unit.blocks_pay_off``), or drop stale ones."""

    ensures = ("blocks_current",)

    def call(self, graph: Graph) -> PassResult:
        modified = False
        for node in graph.topo():
            unit = unit_of(node)
            modified |= get_spec(node.op).find_blocks(node, lambda n, u=unit: u is not None and u.blocks_pay_off(n))
        return PassResult(graph, modified)


def has_sparsity(graph: Graph) -> bool:
    """Whether any node computes less than its dense form (``OpSpec.densified_attrs``)."""
    return any(get_spec(n.op).densified_attrs(n) is not None for n in graph.nodes)


def densified(graph: Graph) -> Graph:
    """A copy of the graph with its structured sparsity ignored: the same layers computing every row over
    every column. The baseline for "savings against the dense model" in reports."""
    g = copy.deepcopy(graph)
    for node in g.topo():
        attrs = get_spec(node.op).densified_attrs(node)
        if attrs is not None:
            node.attrs = attrs
    reinfer(g)
    g.verify()
    return g
