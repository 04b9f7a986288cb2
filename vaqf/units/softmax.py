"""The softmax unit (hls/vaqf/softmax.h, templates/units/softmax.j2): rows through a three-stage row pipeline
(HLS DATAFLOW: max and exponentials / one reciprocal per row / normalize), one whole L-lane word per cycle in
each pass; the integer arithmetic is the op's (vaqf/ops/softmax.py).

Knob ``rom``: 0 fills the layer's exponential table from DDR on every call (T cycles a layer, one table array
sized for the largest); 1 holds every distinct table of the unit's layers in a ROM of the generated project
(no fill, no DDR traffic; BRAM for all the tables). The search weighs the two: a classifier's one softmax
takes the ROM, a transformer's twelve different tables the fill."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from vaqf.errors import VaqfError
from vaqf.hw.board import Board
from vaqf.hw.cost import (
    DDR_LATENCY,
    Cost,
    adder_tree_luts,
    barrel_luts,
    bram18_for,
    dsp48e2_per_product,
    memory_cost,
    signed_bits_for_range,
    tree_depth,
)
from vaqf.hw.layout import LANE_CHOICES, row_words
from vaqf.ir import Node, TensorInfo
from vaqf.ops.packing import pack_int32
from vaqf.ops.softmax import ENTRY_BITS, EXP_BITS, MANT_BITS
from vaqf.units.base import Descriptor, Unit, register_unit
from vaqf.units.rowpipe import row_pipeline_cycles

if TYPE_CHECKING:
    from vaqf.units.base import EmitContext

#: bits of floor(2**32 / sum(e)) <= 2**16: the kernel's reciprocal and its divider's iterations
RECIP_BITS = 17


@dataclass(frozen=True)
class SoftmaxDesc(Descriptor):
    """``vaqf::softmax_desc``: one softmax layer."""

    cpp = "vaqf::softmax_desc"
    rows: int
    n: int
    words: int
    table_offset: int
    table_size: int
    mant: int
    shift: int
    out_bits: int


def softmax_depths(lanes: int) -> dict[str, int]:
    """Pipeline depths of the kernel's loops (hls/vaqf/softmax.h), which the config struct carries to the
    counters: fill (stream read, table write), max (word read 2, compare tree 2 levels a cycle), exp (word
    read 2, subtract 1, index product on a DSP 3, rounding 1, clamp + table read 2, then the lane sum tree 2
    levels a cycle and the stream write), divider (a compare-subtract per cycle, read + write), normalize
    (stream read, DSP product 3, rounding 1, clamp + word write 2)."""
    t = -(-tree_depth(lanes) // 2)
    return {"depth_fill": 3, "depth_max": 2 + t, "depth_exp": 9 + t, "depth_div": 2, "depth_norm": 7}


@register_unit
class SoftmaxUnit(Unit):
    kind = "softmax"
    header = "softmax.h"
    template = "softmax.j2"
    descriptors = (SoftmaxDesc,)
    lane_knob = "lanes"
    # a DATAFLOW region: stage 1 reads the input while stage 3 writes the output, so they must be different
    # buffers (canonical form; HLS-REVIEW H7)
    in_place = False
    desc_fields = 8

    def knobs(self, node: Node) -> dict[str, list[int]]:
        # every lane count: the design's L may exceed the row (idle lanes are padding); the table filled from
        # DDR per call (rom 0) or held in a ROM (rom 1)
        return {"lanes": list(LANE_CHOICES), "rom": [0, 1]}

    def cost(self, node: Node, knobs: dict[str, int], board: Board) -> Cost:
        """The kernel (hls/vaqf/softmax.h) is a row pipeline (HLS DATAFLOW) of three processes, W =
        ceil(n/L) words per row, every loop at II=1 (one whole word per cycle, lane l in bank l):

        - lead: the table fill, DDR_LATENCY + T + depth (one entry per cycle from the reader stage), before
          stage 1's first row; none with the ROM (knob ``rom``);
        - stage 1 per row: the max pass and the exponential pass, 2W + two depths;
        - stage 2 per row: a restoring divider, 17 quotient bits at one a cycle, + depth;
        - stage 3 per row: the normalizing pass, W + depth.

        Cycles: the row pipeline's finish time (:func:`vaqf.units.rowpipe.row_pipeline_cycles`), exactly
        what the counters (VAQF_ROW, VAQF_REGION_END) count.

        Resources, per lane: a table copy (BRAM18s of T x 17 bits; with the ROM, :meth:`shared_cost` charges
        the ROM of all the unit's tables instead, and no DDR bytes); the index product diff x mant
        ((in_bits+1) x 25 signed: dsp48e2_per_product) and the normalizing product e x R (18 x 18: 1 DSP);
        LUTs for the max compare (in_bits), the subtract (in_bits + 1), the two run-time rounding shifters
        (barrel_luts), the index clamp (10) and the output clamp (34); the lane sum tree (adder_tree_luts
        over 17-bit entries) and the row accumulator (sum bits). Once: the divider (a 33-bit compare-subtract
        and a 17-bit quotient register, ~70 LUT), the exponential FIFO of two rows (memory_cost(2W, 17 L)),
        ~200 LUT and ~300 FF of stream handshakes and loop control. FF: the pipeline registers of the lane
        datapath (~6 stages of its widths).
        """
        lanes = int(knobs["lanes"])
        rom = bool(knobs.get("rom", 0))
        x = node.inputs[0].info
        n = x.shape[-1]
        rows = x.size // n
        words = row_words(n, lanes)
        table = int(node.attrs["table"].size)
        dep = softmax_depths(lanes)
        lead = [0 if rom else DDR_LATENCY + table + dep["depth_fill"], 0, 0]
        times = [2 * words + dep["depth_max"] + dep["depth_exp"], RECIP_BITS + dep["depth_div"],
                 words + dep["depth_norm"]]
        cycles = row_pipeline_cycles(rows, times, lead)
        in_bits = _in_bits(x)
        prod_bits = in_bits + MANT_BITS
        sum_bits = _sum_bits(n)
        y_bits = ENTRY_BITS + RECIP_BITS
        lane_lut = (in_bits + (in_bits + 1) + barrel_luts(prod_bits, prod_bits + 1) + 10
                    + barrel_luts(y_bits, y_bits) + y_bits)
        fifo = memory_cost(2 * words, lanes * ENTRY_BITS)
        lut = lanes * lane_lut + adder_tree_luts(lanes, ENTRY_BITS) + sum_bits + 70 + 200 + fifo.lut
        ff = lanes * 6 * (in_bits + prod_bits + ENTRY_BITS + y_bits) // 2 + 300 + 33 + 17
        dsp = lanes * (dsp48e2_per_product(in_bits + 1, MANT_BITS + 1) + dsp48e2_per_product(ENTRY_BITS + 1,
                                                                                           RECIP_BITS + 1))
        bram = (0 if rom else lanes * bram18_for(table, ENTRY_BITS)) + fifo.bram18
        return Cost(cycles, lut=lut, ff=ff, dsp=dsp, bram18=bram, ddr_bytes=0 if rom else 4 * table)

    def shared_cost(self, nodes: list[Node], knobs: dict[str, int]) -> Cost | None:
        """With the ROM: per lane a copy of every distinct table (BRAM18s of R x 17 bits, R their entries)
        and the adder of the layer's first entry to the index (one LUT per address bit)."""
        if not knobs.get("rom", 0):
            return None
        lanes = int(knobs["lanes"])
        size = rom_layout(nodes)[1]
        return Cost(0, lut=lanes * max(1, (size - 1).bit_length()), bram18=lanes * bram18_for(size, ENTRY_BITS))

    def config(self, instance: str, nodes: list[Node], knobs: dict[str, int], word_bits: int) -> dict[str, Any]:
        lanes = int(knobs["lanes"])
        rows = [n.inputs[0].info for n in nodes]
        return {"lanes": lanes, "in_bits": max(_in_bits(x) for x in rows),
                "mant_bits": MANT_BITS, "sum_bits": max(_sum_bits(x.shape[-1]) for x in rows),
                "max_rows": max(x.size // x.shape[-1] for x in rows),
                "max_words": max(row_words(x.shape[-1], lanes) for x in rows),
                "max_table": max(n.attrs["table"].size for n in nodes), **softmax_depths(lanes),
                **self._rom_config(nodes, knobs)}

    @staticmethod
    def _rom_config(nodes: list[Node], knobs: dict[str, int]) -> dict[str, Any]:
        """The template's ROM: its entries (every distinct table once, first use first) as C++ text."""
        if not knobs.get("rom", 0):
            return {"rom": 0}
        tables, size, _ = rom_layout(nodes)
        return {"rom": 1, "rom_size": size, "rom_text": ", ".join(str(int(v)) for t in tables for v in t)}

    def buffer_kinds(self, node: Node, in_kinds: list[str]) -> list[str]:
        if in_kinds != ["act"]:
            raise VaqfError(f"{node.name}: softmax reads an activation buffer, not accumulators; requantize its input")
        return ["act"]

    def ddr_blobs(self, node: Node, word_bits: int, knobs: dict[str, int],
                  board: Board | None) -> dict[str, np.ndarray]:
        if knobs.get("rom", 0):
            return {}  # the table is in the unit's ROM
        return {"table": pack_int32(node.attrs["table"], word_bits)}

    def describe(self, node: Node, ctx: EmitContext) -> dict[str, Any]:
        x = node.inputs[0].info
        a = node.attrs
        if ctx.knobs.get(self.instance(node), {}).get("rom", 0):
            first = rom_layout(ctx.units[self.instance(node)])[2][node.name]  # its first entry in the ROM
        else:
            first = ctx.offset(node, "table")
        desc = SoftmaxDesc(rows=x.size // x.shape[-1], n=x.shape[-1], words=row_words(x.shape[-1], ctx.lanes),
                           table_offset=first, table_size=int(a["table"].size),
                           mant=int(a["idx_mantissa"]), shift=int(a["idx_shift"]), out_bits=int(a["out_bits"]))
        return {"ident": ctx.ident[node.name], "unit": self.instance(node), "desc": desc,
                "in_buf": ctx.buffer(node.inputs[0].name), "out_buf": ctx.buffer(node.outputs[0].name)}


def rom_layout(nodes: list[Node]) -> tuple[list[np.ndarray], int, dict[str, int]]:
    """The ROM of a softmax unit's tables: the distinct tables in first-use order, their total entries, and
    each node's first entry (equal tables share one copy)."""
    tables: list[np.ndarray] = []
    where: dict[bytes, int] = {}
    first: dict[str, int] = {}
    size = 0
    for n in nodes:
        t = np.asarray(n.attrs["table"], dtype=np.int64)
        key = t.tobytes()
        if key not in where:
            where[key] = size
            tables.append(t)
            size += t.size
        first[n.name] = where[key]
    return tables, size, first


def _in_bits(x: TensorInfo) -> int:
    """Signed bits holding every input element (the kernel's compare and subtract width)."""
    return signed_bits_for_range(int(x.qtype.min), int(x.qtype.max))


def _sum_bits(n: int) -> int:
    """Unsigned bits of a row's sum of n entries of at most 2**16."""
    return max(1, (n * 2**EXP_BITS).bit_length())
