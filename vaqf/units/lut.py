"""The table unit (``vaqf::lut`` in hls/vaqf/eltwise.h, templates/units/lut.j2): ``y = table[x - x_min]``,
one L-lane word per cycle, after the table is filled from DDR into every lane's copy. What the table holds
is the op's (vaqf/ops/lut.py)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from vaqf.hw.board import Board
from vaqf.hw.cost import DDR_LATENCY, Cost, memory_cost, mux_luts
from vaqf.hw.layout import LANE_CHOICES, value_words
from vaqf.ir import Node
from vaqf.ops.packing import pack_int32
from vaqf.units.base import Descriptor, Unit, register_unit
from vaqf.units.eltwise import buffer_args, lanes_of, signed_bits

if TYPE_CHECKING:
    from vaqf.units.base import EmitContext

#: pipeline depth of the lookup loop: read, index, table read (2), select, write
DEPTH = 4
#: pipeline depth of the table fill after the DDR latency
FILL_DEPTH = 3


@dataclass(frozen=True)
class LutDesc(Descriptor):
    """``vaqf::lut_desc``: one table layer."""

    cpp = "vaqf::lut_desc"
    words: int
    a_acc: int
    table_offset: int
    table_words: int
    in_min: int


def idx_bits(table_size: int) -> int:
    """Index bits of a table of ``table_size`` entries (at least 1)."""
    return max(1, math.ceil(math.log2(max(2, table_size))))


@register_unit
class LutUnit(Unit):
    kind = "lut"
    header = "eltwise.h"
    template = "lut.j2"
    descriptors = (LutDesc,)
    lane_knob = "lanes"
    # the unit reads and writes two different buffers (HLS-REVIEW M13, docs/hls.md)
    in_place = False
    desc_fields = 5

    def knobs(self, node: Node) -> dict[str, list[int]]:
        return {"lanes": list(LANE_CHOICES)}

    def cost(self, node: Node, knobs: dict[str, int], board: Board) -> Cost:
        """The table fill, ``ceil(T / P) + DDR_LATENCY + FILL_DEPTH`` cycles (P = axi_bits / 32 entries per
        DDR word, one word per cycle), then the lookup loop, ``words + DEPTH`` (II=1, whole words).

        Hardware: per lane a copy of the table in P sub-banks of ceil(2^IDX / P) entries (IDX the index
        bits of the table), each a memory (:func:`memory_cost`); per lane a P:1 multiplexer on the entry
        bits (:func:`mux_luts`) and the index subtraction (IDX LUTs); 150 LUTs of counters. FF: the entry
        and index per pipeline stage and lane. No DSP.
        """
        lanes = lanes_of(knobs)
        p = board.axi_bits // 32
        t = int(node.attrs["table"].size)
        idx = idx_bits(t)
        bits = signed_bits(node.outputs[0])
        words = value_words(node.inputs[0].info, lanes)
        fill = math.ceil(t / p)
        bank = memory_cost(math.ceil(2**idx / p), bits)
        lut = 150 + lanes * (p * bank.lut + mux_luts(p) * bits + idx)
        return Cost(fill + DDR_LATENCY + FILL_DEPTH + words + DEPTH, lut=lut, ff=200 + lanes * DEPTH * (bits + idx),
                    dsp=0, bram18=lanes * p * bank.bram18, ddr_bytes=fill * board.axi_bits // 8)

    def config(self, instance: str, nodes: list[Node], knobs: dict[str, int], word_bits: int) -> dict[str, Any]:
        lanes = lanes_of(knobs)
        p = word_bits // 32
        return {"a_bits": max(signed_bits(n.inputs[0]) for n in nodes),
                "t_bits": max(signed_bits(n.outputs[0]) for n in nodes),
                "idx_bits": max(idx_bits(int(n.attrs["table"].size)) for n in nodes),
                "max_words": max(value_words(n.inputs[0].info, lanes) for n in nodes),
                "max_table_words": max(math.ceil(int(n.attrs["table"].size) / p) for n in nodes),
                "depth": DEPTH, "fill_depth": FILL_DEPTH}

    def buffer_kinds(self, node: Node, in_kinds: list[str]) -> list[str]:
        return ["act"]

    def ddr_blobs(self, node: Node, word_bits: int, knobs: dict[str, int],
                  board: Board | None) -> dict[str, np.ndarray]:
        """The table, one int32 entry per DDR lane, P = word_bits / 32 entries a word."""
        return {"table": pack_int32(node.attrs["table"], word_bits)}

    def describe(self, node: Node, ctx: EmitContext) -> dict[str, Any]:
        a = node.attrs
        ia, ic, a_acc = buffer_args(ctx, node.inputs[0].name)
        desc = LutDesc(words=value_words(node.inputs[0].info, ctx.lanes), a_acc=a_acc,
                       table_offset=ctx.offset(node, "table"),
                       table_words=math.ceil(int(a["table"].size) / (ctx.word_bits // 32)), in_min=int(a["in_min"]))
        return {"ident": ctx.ident[node.name], "unit": self.instance(node), "desc": desc,
                "ia": ia, "ic": ic, "oa": ctx.buffer(node.outputs[0].name)}
