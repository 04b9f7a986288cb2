"""On-chip activation buffers: which buffer holds each value (liveness-based reuse).

Buffers come in two kinds: "act" (activation precision, read by the GEMM unit) and "acc"
(accumulators), each kind with one container width. Every buffer is ``lanes`` banks of words
(:mod:`vaqf.hw.layout`): a value occupies ``rows x ceil(row / lanes)`` words. A value takes the smallest
free buffer of its kind that holds it (best fit), or a buffer of its own size when none does; an
elementwise op whose input dies at that op writes over its input (``Unit.in_place``). Values of
aliasing ops (reshape) share their input's buffer when both shapes put every element in the same word
and lane (:func:`vaqf.hw.layout.same_layout`); otherwise the op copies. Each buffer is as large as the
largest value it ever holds.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from vaqf.hw.cost import Cost, memory_cost
from vaqf.hw.layout import same_layout, value_words
from vaqf.ir import Graph, IntType, Node, Value
from vaqf.ops import get_spec
from vaqf.units import unit_of


@dataclass
class BufferPlan:
    kind_of: dict[str, str] = field(default_factory=dict)     # value name -> kind
    buffer_of: dict[str, int] = field(default_factory=dict)   # value name -> buffer index within kind
    count: dict[str, int] = field(default_factory=dict)       # kind -> number of buffers
    sizes: dict[tuple[str, int], int] = field(default_factory=dict)  # (kind, buffer) -> elements
    bits: dict[str, int] = field(default_factory=dict)        # kind -> container bits (signed)
    lanes: int = 1                                             # banks of every buffer (lanes per word)
    words: dict[tuple[str, int], int] = field(default_factory=dict)  # (kind, buffer) -> words

    def name(self, value: str) -> str:
        return f"{self.kind_of[value]}_buf{self.buffer_of[value]}"

    def cost(self) -> Cost:
        """On-chip memory of every buffer: ``lanes`` banks (one per lane) of ``words`` entries each, every
        bank one memory (:func:`vaqf.hw.cost.memory_cost`: BRAM18s, or LUTRAM when under 1 Kb)."""
        total = Cost()
        for key, words in self.words.items():
            bank = memory_cost(words, self.bits[key[0]])
            total = total + Cost(lut=self.lanes * bank.lut, bram18=self.lanes * bank.bram18)
        return total

    def buffers(self) -> list[tuple[str, str, int, int]]:
        """(kind, name, elements, words) of every buffer, in a stable order."""
        return [(k, f"{k}_buf{i}", self.sizes[(k, i)], self.words[(k, i)]) for k, i in sorted(self.sizes)]

    def bram18(self) -> int:
        return self.cost().bram18

    def to_json(self) -> dict:
        """The plan as the Design records it: lanes, each value's kind and buffer, each buffer's elements and
        words, each kind's container bits."""
        return {"lanes": self.lanes, "bits": dict(self.bits),
                "values": {v: [self.kind_of[v], self.buffer_of[v]] for v in sorted(self.buffer_of)},
                "buffers": [[k, i, self.sizes[(k, i)], self.words[(k, i)]] for k, i in sorted(self.sizes)]}

    @classmethod
    def from_json(cls, d: dict) -> BufferPlan:
        plan = cls(lanes=int(d["lanes"]), bits={str(k): int(v) for k, v in d["bits"].items()})
        for v, (kind, idx) in d["values"].items():
            plan.kind_of[v], plan.buffer_of[v] = str(kind), int(idx)
        for kind, idx, size, words in d["buffers"]:
            plan.sizes[(kind, int(idx))], plan.words[(kind, int(idx))] = int(size), int(words)
            plan.count[kind] = max(plan.count.get(kind, 0), int(idx) + 1)
        return plan


def signed_bits(v: Value) -> int:
    qt = v.info.qtype
    if isinstance(qt, IntType):
        return qt.bits + (0 if qt.signed else 1)
    return 2


def aliases(node: Node, lanes: int) -> bool:
    """Whether the node's output shares its input's buffer at this lane count (a free reshape)."""
    return bool(get_spec(node.op).aliases_input) and same_layout(node.inputs[0].info, node.outputs[0].info, lanes)


def plan_buffers(graph: Graph, lanes: int = 1) -> BufferPlan:
    """The buffer plan of ``graph`` for words of ``lanes`` lanes."""
    plan = BufferPlan(lanes=int(lanes))
    order = list(graph.topo())
    for v in graph.inputs:
        plan.kind_of[v.name] = "act"
    for node in order:
        unit = unit_of(node)
        in_kinds = [plan.kind_of[v.name] for v in node.inputs]
        kinds = in_kinds[:len(node.outputs)] if unit is None else unit.buffer_kinds(node, in_kinds)
        for v, k in zip(node.outputs, kinds, strict=True):
            plan.kind_of[v.name] = k
    # container widths per kind
    for name, kind in plan.kind_of.items():
        plan.bits[kind] = max(plan.bits.get(kind, 2), signed_bits(graph.value(name)))
    for node in order:  # the GEMM units write accumulators of their own width
        if "acc_bits" in node.attrs:
            plan.bits["acc"] = max(plan.bits.get("acc", 2), int(node.attrs["acc_bits"]))
    # liveness: last use index of each value (graph outputs live to the end)
    last_use: dict[str, int] = {}
    alias_root: dict[str, str] = {}
    for i, node in enumerate(order):
        for v in node.inputs:
            last_use[alias_root.get(v.name, v.name)] = i
        if aliases(node, lanes):
            for v in node.outputs:
                alias_root[v.name] = alias_root.get(node.inputs[0].name, node.inputs[0].name)
    for v in graph.outputs:
        last_use[alias_root.get(v.name, v.name)] = len(order)
    free: dict[str, list[int]] = {}
    busy: dict[str, int] = {}   # root value -> buffer index
    for v in graph.inputs:
        plan.buffer_of[v.name] = _take(plan, free, "act", v.info.size, value_words(v.info, lanes))
        busy[v.name] = plan.buffer_of[v.name]
    for i, node in enumerate(order):
        unit = unit_of(node)
        alias = aliases(node, lanes)
        for v in node.outputs:
            if alias:
                plan.buffer_of[v.name] = plan.buffer_of[node.inputs[0].name]
                _grow(plan, plan.kind_of[v.name], plan.buffer_of[v.name], v.info.size, value_words(v.info, lanes))
                continue
            src = node.inputs[0] if unit is not None and unit.in_place and node.inputs else None
            root = alias_root.get(src.name, src.name) if src is not None else None
            if (src is not None and plan.kind_of[src.name] == plan.kind_of[v.name] and root in busy
                    and last_use.get(root, -1) <= i and src.info.size == v.info.size
                    and same_layout(src.info, v.info, lanes)
                    and all(alias_root.get(x.name, x.name) != root for x in node.inputs[1:])):
                plan.buffer_of[v.name] = busy.pop(root)  # write over the dying input
            else:
                plan.buffer_of[v.name] = _take(plan, free, plan.kind_of[v.name], v.info.size,
                                               value_words(v.info, lanes))
            busy[v.name] = plan.buffer_of[v.name]
        # release buffers whose root value is dead after this node
        for root in list(busy):
            if last_use.get(root, -1) <= i and root not in {o.name for o in node.outputs}:
                free.setdefault(plan.kind_of[root], []).append(busy.pop(root))
    return plan


def _grow(plan: BufferPlan, kind: str, idx: int, size: int, words: int) -> None:
    plan.sizes[(kind, idx)] = max(plan.sizes.get((kind, idx), 1), size)
    plan.words[(kind, idx)] = max(plan.words.get((kind, idx), 1), words)


def _take(plan: BufferPlan, free: dict[str, list[int]], kind: str, size: int, words: int) -> int:
    """The smallest free buffer holding ``words`` words, else the largest free one grown to it, else a new one."""
    pool = free.setdefault(kind, [])
    if pool:
        fitting = [b for b in pool if plan.words[(kind, b)] >= words]
        pick = min(fitting, key=lambda b: (plan.words[(kind, b)], b)) if fitting else \
            max(pool, key=lambda b: (plan.words[(kind, b)], -b))
        pool.remove(pick)
        _grow(plan, kind, pick, size, words)
        return pick
    idx = plan.count.get(kind, 0)
    plan.count[kind] = idx + 1
    _grow(plan, kind, idx, size, words)
    return idx
