"""Graph, Node and Value: the vaqf IR.

The graph is a DAG of nodes connected by values. Constants (weights, biases, requantization multipliers)
are node attributes, never values: every value is a runtime integer tensor. networkx holds the node
order privately; callers use ``producer``, ``consumers``, ``topo`` and the editing methods.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import networkx as nx

from vaqf.errors import IRError
from vaqf.ir.opset import op_definition
from vaqf.ir.tensor import TensorInfo


@dataclass(eq=False)
class Value:
    name: str
    info: TensorInfo

    def __repr__(self) -> str:
        return f"Value({self.name!r}, {self.info})"


@dataclass(eq=False)
class Node:
    name: str
    op: str
    inputs: list[Value]
    outputs: list[Value]
    attrs: dict[str, Any] = field(default_factory=dict)
    source: str = ""  # the ONNX node(s) this came from, for messages and reports

    def __repr__(self) -> str:
        return f"Node({self.name!r}, {self.op}, in={[v.name for v in self.inputs]}, " \
               f"out={[v.name for v in self.outputs]})"


class Graph:
    def __init__(self, name: str = "model") -> None:
        self.name = name
        self.inputs: list[Value] = []
        self.outputs: list[Value] = []
        self.metadata: dict[str, Any] = {}
        self._nodes: dict[str, Node] = {}
        self._values: dict[str, Value] = {}
        self._producer: dict[str, Node] = {}
        self._g = nx.DiGraph()
        self._counter = itertools.count()
        self._seq: dict[str, int] = {}
        # value name -> names of the nodes linked as reading it (an ordered set), and each node's linked inputs:
        # a new producer finds its readers here instead of scanning every node (import stays linear in nodes)
        self._readers: dict[str, dict[str, None]] = {}
        self._linked_inputs: dict[str, list[str]] = {}

    # ---- construction -------------------------------------------------------------------------
    def unique_name(self, base: str, kind: str = "value") -> str:
        taken = self._values if kind == "value" else self._nodes
        name = base
        while name in taken:
            name = f"{base}_{next(self._counter)}"
        return name

    def add_input(self, name: str, info: TensorInfo) -> Value:
        v = self._new_value(name, info)
        self.inputs.append(v)
        return v

    def _new_value(self, name: str, info: TensorInfo) -> Value:
        if name in self._values:
            raise IRError(f"value name {name!r} already exists")
        v = Value(name, info)
        self._values[name] = v
        return v

    def new_value(self, base: str, info: TensorInfo) -> Value:
        return self._new_value(self.unique_name(base), info)

    def add_node(self, op: str, inputs: list[Value], outputs: list[Value], attrs: dict[str, Any] | None = None,
                 name: str | None = None, source: str = "") -> Node:
        node = Node(self.unique_name(name or op, "node"), op, list(inputs), list(outputs), dict(attrs or {}), source)
        for v in outputs:
            if v.name in self._producer:
                raise IRError(f"value {v.name!r} already has a producer")
            self._producer[v.name] = node
        self._nodes[node.name] = node
        self._seq[node.name] = len(self._seq)
        self._g.add_node(node.name)
        self._link(node)
        return node

    def _link(self, node: Node) -> None:
        names = [v.name for v in node.inputs]
        self._linked_inputs[node.name] = names
        for v in node.inputs:
            self._readers.setdefault(v.name, {})[node.name] = None
            p = self._producer.get(v.name)
            if p is not None:
                self._g.add_edge(p.name, node.name)
        for v in node.outputs:  # readers linked before this producer (rewiring) get their edges now
            for c_name in self._readers.get(v.name, ()):
                c = self._nodes.get(c_name)
                if c is not None and any(i is v for i in c.inputs):
                    self._g.add_edge(node.name, c.name)

    def _unlink_inputs(self, name: str) -> None:
        for v_name in self._linked_inputs.pop(name, ()):
            readers = self._readers.get(v_name)
            if readers is not None:
                readers.pop(name, None)
                if not readers:
                    del self._readers[v_name]

    # ---- queries --------------------------------------------------------------------------------
    @property
    def nodes(self) -> list[Node]:
        return list(self._nodes.values())

    def node(self, name: str) -> Node:
        return self._nodes[name]

    def value(self, name: str) -> Value:
        return self._values[name]

    def values(self) -> list[Value]:
        return list(self._values.values())

    def producer(self, v: Value) -> Node | None:
        return self._producer.get(v.name)

    def consumers(self, v: Value) -> list[Node]:
        p = self._producer.get(v.name)
        if p is None or p.name not in self._g:  # graph inputs (and values being rewired): scan
            cands = self._nodes.values()
        else:
            cands = (self._nodes[c] for c in self._g.successors(p.name))
        found = [n for n in cands if any(i is v for i in n.inputs)]
        return sorted(found, key=lambda n: self._seq.get(n.name, -1))

    def sole_consumer(self, node: Node) -> Node | None:
        """The one node reading ``node``'s single output, when nothing else (nor the graph) uses it."""
        if len(node.outputs) != 1:
            return None
        out = node.outputs[0]
        users = self.consumers(out)
        if len(users) != 1 or any(o is out for o in self.outputs):
            return None
        return users[0]

    def topo(self) -> Iterator[Node]:
        """Nodes in a deterministic topological order; nodes removed while iterating are skipped."""
        order = list(nx.lexicographical_topological_sort(self._g, key=self._order_key))
        for name in order:
            node = self._nodes.get(name)
            if node is not None:
                yield node

    def _order_key(self, name: str) -> tuple[int, str]:
        # insertion order first keeps the order stable and close to the source model
        return (self._seq.get(name, -1), name)

    # ---- editing --------------------------------------------------------------------------------
    def replace_all_uses_with(self, old: Value, new: Value) -> None:
        for n in self.consumers(old):
            n.inputs = [new if i is old else i for i in n.inputs]
            self._relink(n)
        self.outputs = [new if o is old else o for o in self.outputs]

    def set_input(self, node: Node, index: int, value: Value) -> None:
        """Make ``node`` read ``value`` as its input ``index``."""
        node.inputs[index] = value
        self._relink(node)

    def remove(self, node: Node) -> None:
        """Remove a node; its outputs must be unused."""
        for v in node.outputs:
            if self.consumers(v) or any(o is v for o in self.outputs):
                raise IRError(f"cannot remove {node.name}: output {v.name} is still used")
            self._producer.pop(v.name, None)
            self._values.pop(v.name, None)
        del self._nodes[node.name]
        self._g.remove_node(node.name)
        self._unlink_inputs(node.name)

    def absorb_consumer(self, node: Node, consumer: Node) -> None:
        """Make ``node`` produce ``consumer``'s outputs and drop ``consumer`` (fusion of a 1-in op)."""
        if len(node.outputs) != 1 or len(consumer.inputs) != 1 or consumer.inputs[0] is not node.outputs[0]:
            raise IRError(f"{consumer.name} is not a single-input consumer of {node.name}")
        inner = node.outputs[0]
        if len(self.consumers(inner)) != 1 or any(o is inner for o in self.outputs):
            raise IRError(f"{inner.name} has other uses; cannot fuse {consumer.name} into {node.name}")
        del self._nodes[consumer.name]
        self._g.remove_node(consumer.name)
        self._unlink_inputs(consumer.name)
        self._producer.pop(inner.name)
        self._values.pop(inner.name)
        node.outputs = list(consumer.outputs)
        for v in node.outputs:
            self._producer[v.name] = node
        self._relink(node)
        if consumer.source:
            node.source = f"{node.source}+{consumer.source}" if node.source else consumer.source

    def _relink(self, node: Node) -> None:
        self._g.remove_edges_from(list(self._g.in_edges(node.name)) + list(self._g.out_edges(node.name)))
        self._unlink_inputs(node.name)
        self._link(node)

    # ---- checks ---------------------------------------------------------------------------------
    def verify(self) -> None:
        """Check structure, every node's attributes against its op's attribute record, and that every node's
        stored output types match its op's inference (ops are looked up in :mod:`vaqf.ir.opset`)."""
        defined = {v.name for v in self.inputs}
        for v in self.inputs:
            if v.name in self._producer:
                raise IRError(f"graph input {v.name} has a producer")
        if not nx.is_directed_acyclic_graph(self._g):
            raise IRError("graph has a cycle")
        for node in self.topo():
            for v in node.inputs:
                if v.name not in defined:
                    raise IRError(f"{node.name} reads {v.name}, which is not defined before it")
                if self._values.get(v.name) is not v:
                    raise IRError(f"{node.name} reads a value {v.name} that is not in the graph")
            spec = op_definition(node.op)
            spec.check_attrs(node)
            inferred = spec.infer(node, [v.info for v in node.inputs])
            if len(inferred) != len(node.outputs):
                raise IRError(f"{node.name}: {len(node.outputs)} outputs, op infers {len(inferred)}")
            for v, info in zip(node.outputs, inferred, strict=True):
                if not v.info.same_meaning(info):
                    raise IRError(f"{node.name}: output {v.name} is {v.info}, op infers {info}")
                if self._producer.get(v.name) is not node:
                    raise IRError(f"{v.name} producer mismatch")
                defined.add(v.name)
        for v in self.outputs:
            if v.name not in defined:
                raise IRError(f"graph output {v.name} is never computed")

    def __repr__(self) -> str:
        lines = [f"Graph {self.name}: inputs {[str(v) for v in self.inputs]}"]
        for n in self.topo():
            lines.append(f"  {n.name} = {n.op}({', '.join(v.name for v in n.inputs)}) -> "
                         f"{', '.join(f'{v.name}: {v.info}' for v in n.outputs)}")
        lines.append(f"  outputs {[v.name for v in self.outputs]}")
        return "\n".join(lines)
