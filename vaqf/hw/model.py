"""The accelerator cost model: a layer-sequential engine of shared units.

Resources = sum over units of (max over the layers a unit runs of what each needs) + what sharing one
instance per unit costs (:func:`sharing_cost`: the multiplexers in front of every buffer bank and every
unit argument, and of the per-layer descriptors) + activation buffers + the fixed shell (AXI masters,
AXI-lite control). Latency = sum over layers of each layer's cycles (op cost models, which already take
max(compute, memory) where the kernel overlaps them) + moving the input in and the output out. Frame
rate = clock / latency. The C-simulation's cycle counters (hls/vaqf/cycles.h) count the same loops.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vaqf.errors import VaqfError
from vaqf.hw.board import Board
from vaqf.hw.cost import DDR_LATENCY, RESOURCE_KEYS, Cost, lutram_luts, mux_luts
from vaqf.hw.layout import design_lanes, last_dim
from vaqf.hw.memory import BufferPlan, plan_buffers
from vaqf.ir import Graph, Node, Value
from vaqf.units import instance_of, unit_of

#: two AXI4 masters with burst logic plus the AXI4-Lite control slave, as reported for small HLS
#: designs on Zynq UltraScale+ (order of magnitude: ~1.5k LUT / 2k FF per master)
SHELL = Cost(0, lut=3_500, ff=4_500, dsp=0, bram18=4, uram=0)
#: address bits of a buffer bank (depth up to 64k words) and its write enable
BANK_ADDR_BITS = 17


@dataclass
class LayerEstimate:
    node: str
    op: str
    unit: str
    cycles: int
    ddr_bytes: int
    mode: Any = None  # the unit's per-layer decision at these knobs (Unit.mode), which the backend follows

    def to_json(self) -> dict:
        d = {"node": self.node, "op": self.op, "unit": self.unit, "cycles": self.cycles, "ddr_bytes": self.ddr_bytes}
        if self.mode is not None:
            d["mode"] = self.mode
        return d


@dataclass
class Estimate:
    cycles: int
    fps: float
    resources: dict[str, int]
    utilization: dict[str, float]
    layers: list[LayerEstimate] = field(default_factory=list)
    units: dict[str, dict[str, int]] = field(default_factory=dict)  # unit -> its resources

    def to_json(self, layers: bool = True) -> dict:
        d = {"fps": round(self.fps, 3), "cycles": self.cycles, "resources": dict(self.resources),
             "utilization": {k: round(v, 4) for k, v in self.utilization.items()}}
        if layers:
            d["layers"] = [layer.to_json() for layer in self.layers]
            d["units"] = self.units
        return d


def units_of(graph: Graph) -> dict[str, list[Node]]:
    units: dict[str, list[Node]] = {}
    for node in graph.topo():
        u = instance_of(node)
        if u != "none":
            units.setdefault(u, []).append(node)
    return units


def unit_knob_space(nodes: list[Node]) -> dict[str, list[int]]:
    """Knob values legal for every layer of a unit: the union, since the kernels pad partial blocks."""
    space: dict[str, set[int]] = {}
    for n in nodes:
        for k, vals in unit_of(n).knobs(n).items():
            space.setdefault(k, set()).update(vals)
    return {k: sorted(v) for k, v in space.items()}


def unit_cost(nodes: list[Node], knobs: dict[str, int], board: Board) -> tuple[int, Cost, list[LayerEstimate]]:
    """Total cycles of a unit's layers, the unit's hardware (max over layers), and per-layer figures."""
    hw = Cost()
    cycles = 0
    layers = []
    for n in nodes:
        unit = unit_of(n)
        c = unit.cost(n, knobs, board)
        if c is None:
            raise VaqfError(f"op {n.op} of node {n.name} has no cost model")
        hw = hw.max(c.hardware_only())
        cycles += c.cycles
        layers.append(LayerEstimate(n.name, n.op, unit.instance(n), c.cycles, c.ddr_bytes, unit.mode(n, knobs, board)))
    return cycles, _with_shared(hw, nodes, knobs), layers


def _with_shared(hw: Cost, nodes: list[Node], knobs: dict[str, int]) -> Cost:
    """A unit's hardware (the max over its layers) plus what it holds for all of them (Unit.shared_cost)."""
    shared = unit_of(nodes[0]).shared_cost(nodes, knobs) if nodes else None
    return hw if shared is None else hw + shared.hardware_only()


def _attr_key(name: str, value: Any) -> Hashable:
    """An attribute as it can matter to a cost: arrays by shape and dtype (a cost reads sizes, not
    values), except a ``weight``, whose zero pattern also counts (pruned rows, columns and blocks are
    skipped by the kernels and credited by their costs)."""
    if isinstance(value, np.ndarray):
        key: tuple = ("array", value.shape, value.dtype.str)
        if name == "weight":
            key += (hashlib.blake2b(np.packbits(value != 0).tobytes(), digest_size=16).digest(),)
        return key
    if isinstance(value, dict):
        return ("dict", tuple((k, _attr_key(k, v)) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))))
    if isinstance(value, list | tuple):
        return ("seq", tuple(_attr_key(name, v) for v in value))
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return (type(value).__name__, tuple((f.name, _attr_key(f.name, getattr(value, f.name)))
                                            for f in dataclasses.fields(value)))
    try:
        hash(value)
    except TypeError:
        return ("repr", repr(value))
    return value


def cost_key(node: Node) -> Hashable:
    """What a node's cost depends on besides the knobs and the board: nodes with equal keys cost the same
    (the repeated blocks of a transformer), so a unit's options are costed once per distinct key.

    The op, the shapes, types and zero points of its inputs and outputs, its attributes (see
    :func:`_attr_key`), and whatever else the unit's cost reads, as its ``cost_key(node)`` says
    (e.g. the steps of a dense layer's blocks). tests/hw/test_cost.py checks the grouping against costing
    every node.
    """
    unit = unit_of(node)
    own = None if unit is None else unit.cost_key
    infos = tuple((v.info.shape, v.info.qtype, v.info.zero_point, v.info.scale.size)
                  for v in (*node.inputs, *node.outputs))
    attrs = tuple((k, _attr_key(k, v)) for k, v in sorted(node.attrs.items()))
    return (node.op, infos, len(node.inputs), attrs, None if own is None else own(node))


def cost_groups(nodes: list[Node]) -> list[tuple[Any, Node, int]]:
    """(unit, representative, count) per distinct :func:`cost_key` of a unit's nodes."""
    groups: dict[Hashable, list[Node]] = {}
    for n in nodes:
        groups.setdefault(cost_key(n), []).append(n)
    return [(unit_of(g[0]), g[0], len(g)) for g in groups.values()]


def unit_options(nodes: list[Node], combos: Sequence[dict[str, int]], board: Board,
                 groups: list[tuple[Any, Node, int]] | None = None) -> tuple[list[int], list[Cost], list[int]]:
    """Cycles, hardware and DDR bytes per frame of a unit for each knob combination: the figures of
    :func:`unit_cost`, with each distinct :func:`cost_key` costed once and counted as often as it occurs
    (``groups``: :func:`cost_groups` of the nodes, when already known)."""
    reps = groups if groups is not None else cost_groups(nodes)
    cycles, hws, ddr = [], [], []
    for kn in combos:
        hw, cyc, dd = Cost(), 0, 0
        for unit, n, count in reps:
            c = unit.cost(n, kn, board)
            if c is None:
                raise VaqfError(f"op {n.op} of node {n.name} has no cost model")
            hw = hw.max(c.hardware_only())
            cyc += count * c.cycles
            dd += count * c.ddr_bytes
        cycles.append(cyc)
        hws.append(_with_shared(hw, nodes, kn))
        ddr.append(dd)
    return cycles, hws, ddr


def io_port(value: Value, lanes: int, word_bits: int, bits: int) -> dict[str, int]:
    """How the top function (templates/project/vaqf_top.cpp.j2) moves a graph input (``bits`` 32: int32
    elements on the host) or output (``bits`` 64: int64 elements) through its AXI port of ``word_bits``.

    - ``per_word``: elements in one DDR word (``word_bits / bits``); the host buffer is padded to whole words.
      Ports of 32-bit words carry one element (``io_t``/``out_t`` ports, no packing).
    - ``whole``: 1 when each cycle moves a whole DDR word: the row length and the lane count are multiples
      of ``per_word``, so the word's elements are lanes ``k % L .. k % L + per_word - 1`` of one on-chip word
      (a multiple of ``per_word`` apart from lane 0: bank l takes or gives field ``l % per_word``, a
      compile-time wire, under a decoded enable); else one element a cycle, the word assembled or taken
      apart in a register.
    - ``words``: the port's DDR words; ``trips``: iterations of the copy loop at II = 1.
    """
    size = int(value.info.size)
    if word_bits < 64:
        return {"per_word": 1, "whole": 0, "words": size, "trips": size}
    per = int(word_bits) // int(bits)
    whole = int(lanes % per == 0 and last_dim(value.info) % per == 0)
    words = -(-size // per)
    return {"per_word": per, "whole": whole, "words": words, "trips": words if whole else size}


def io_cycles(graph: Graph, lanes: int = 1, word_bits: int = 32) -> int:
    """The top function copies each input in and each output out (:func:`io_port`: a whole DDR word a cycle
    where the rows and lanes allow it, else one element a cycle), each loop after a DDR round trip; counted
    the same way in the C-simulation."""
    return (sum(io_port(v, lanes, word_bits, 32)["trips"] + DDR_LATENCY for v in graph.inputs)
            + sum(io_port(v, lanes, word_bits, 64)["trips"] + DDR_LATENCY for v in graph.outputs))


def sharing_cost(graph: Graph, plan: BufferPlan) -> Cost:
    """What one instance per unit costs on top of the units themselves (HLS-REVIEW H9).

    - Every buffer bank is driven by each (unit, argument) that reads or writes the buffer: per bank an
      accessors:1 multiplexer on its address, write data and write enable.
    - Every unit argument bound to several buffers reads through a buffers:1 multiplexer per lane.
    - Every unit reads its layers' descriptors from a ROM inside its one instance
      (templates/units/_desc.j2 ``rom``, BIND_STORAGE rom_1p lutram) at the slot its call site passes:
      the ROM, one entry per call of 32 bits per descriptor field (the unit's ``desc_fields``) in LUTRAM
      (``lutram_luts``), and a calls:1 multiplexer on the slot index's bits; a unit called once holds its
      descriptor as a constant (nothing charged).
    The top's own I/O loops count as one accessor of the buffers they fill and drain; a reshape that shares
    its input's words (:func:`vaqf.hw.memory.aliases`) makes no call and touches nothing.
    """
    from vaqf.hw.memory import aliases

    accessors: dict[str, set] = {}
    bound: dict[tuple, set] = {}
    calls: dict[str, int] = {}
    entries: dict[str, int] = {}
    fields: dict[str, int] = {}
    for node in graph.topo():
        unit = unit_of(node)
        if unit is None or aliases(node, plan.lanes):
            continue
        u = unit.instance(node)
        calls[u] = calls.get(u, 0) + 1
        entries[u] = entries.get(u, 0) + unit.calls(node, plan.lanes)
        fields[u] = max(fields.get(u, 0), int(unit.desc_fields))
        for role, values in (("in", node.inputs), ("out", node.outputs)):
            for i, v in enumerate(values):
                if v.name not in plan.buffer_of:
                    continue
                buf = plan.name(v.name)
                accessors.setdefault(buf, set()).add((u, role, i))
                bound.setdefault((u, role, i), set()).add(buf)
    for v in (*graph.inputs, *graph.outputs):
        accessors.setdefault(plan.name(v.name), set()).add(("top", "io", 0))
    lut = 0
    for buf, acc in accessors.items():
        kind = buf.split("_", 1)[0]
        lut += plan.lanes * (BANK_ADDR_BITS + plan.bits.get(kind, 32) + 1) * mux_luts(len(acc))
    for (_, _, _), bufs in bound.items():
        width = max(plan.bits.get(b.split("_", 1)[0], 32) for b in bufs)
        lut += plan.lanes * width * mux_luts(len(bufs))
    for u, n in calls.items():
        rows = entries[u]
        if rows > 1:  # one entry is a constant in the unit (templates/units/_desc.j2): no table
            lut += lutram_luts(rows, 32 * fields[u]) + (rows - 1).bit_length() * mux_luts(n)
    return Cost(lut=lut)


def buffers_cost(plan: BufferPlan, graph: Graph) -> Cost:
    """The activation buffers and the multiplexers that sharing them across units needs."""
    return plan.cost() + sharing_cost(graph, plan)


def combine(board: Board, unit_hw: dict[str, Cost], unit_cycles: dict[str, int], buffers: Cost,
            fixed_cycles: int) -> tuple[int, Cost]:
    total = SHELL + buffers
    for c in unit_hw.values():
        total = total + c
    cycles = fixed_cycles + sum(unit_cycles.values())
    return cycles, total


def utilization(res: Cost, board: Board) -> dict[str, float]:
    cap = board.resources()
    return {k: (getattr(res, k) / cap[k] if cap[k] else (0.0 if getattr(res, k) == 0 else float("inf")))
            for k in RESOURCE_KEYS}


def estimate(graph: Graph, board: Board, knobs: dict[str, dict[str, int]]) -> Estimate:
    """Cycles, frame rate and resources of ``graph`` on ``board`` with the given unit knobs."""
    units = units_of(graph)
    missing = [u for u in units if u not in knobs]
    if missing:
        raise VaqfError(f"the design gives no knobs for unit(s) {', '.join(missing)}")
    hw: dict[str, Cost] = {}
    cyc: dict[str, int] = {}
    layers: list[LayerEstimate] = []
    for u, nodes in units.items():
        cyc[u], hw[u], ls = unit_cost(nodes, knobs[u], board)
        layers.extend(ls)
    order = {n.name: i for i, n in enumerate(graph.topo())}
    layers.sort(key=lambda layer: order[layer.node])
    plan = plan_buffers(graph, design_lanes(knobs))
    cycles, total = combine(board, hw, cyc, buffers_cost(plan, graph),
                           io_cycles(graph, design_lanes(knobs), board.axi_bits))
    res = total.resources()
    return Estimate(cycles, board.clock_hz / max(cycles, 1), res, utilization(total, board), layers,
                    {u: c.resources() for u, c in hw.items()})
