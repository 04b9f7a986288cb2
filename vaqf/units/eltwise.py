"""The elementwise unit (hls/vaqf/eltwise.h, templates/units/eltwise.j2) shared by relu, requant and add: one
datapath, one descriptor.

Every layer computes, per element (one L-lane word per cycle, lane l = bank l):

    out = clamp(round(((a - zp_a) * m + (b - zp_b) * mb) / 2**s) + zp_out, lo, hi)

relu is m = 1, s = 0, lo = its zero point; requant takes m and s per channel (the last axis, which maps to
the lanes of a row's words) from two on-chip tables that a sequential DDR reader fills first; add reads
b. The unit's config struct prunes the second product when no layer adds and the tables when no layer
requantizes, so the hardware is the union of what its layers need; each layer's cost charges what its own
op needs and the model's max over layers gives that union (docs/hls.md). The integer semantics are the
ops' (vaqf/ops/relu.py, requant.py, add.py).

Also here: the helpers the other units on activation buffers share (:func:`signed_bits`,
:func:`buffer_args`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from vaqf.errors import IRError, VaqfError
from vaqf.hw.board import Board
from vaqf.hw.cost import DDR_LATENCY, Cost, dsp48e2_per_product, memory_cost
from vaqf.hw.layout import LANE_CHOICES, lane_knob, last_dim, row_words, value_words
from vaqf.ir import IntType, Node, Value
from vaqf.ir.qarith import Rounding
from vaqf.units.base import Descriptor, Unit, register_unit

if TYPE_CHECKING:
    from vaqf.units.base import EmitContext

#: pipeline depth of the word loop: read, subtract, multiply (2 stages), add, round-shift, clamp, write
DEPTH = 8
#: pipeline depth of the channel-table fill after the DDR latency: read, lane select, write
FILL_DEPTH = 3
#: LUTs of loop control: the word counter, its compare, the table-word counter
CONTROL_LUTS = 150
#: per bit of the PW-bit sum (:func:`product_width`), rounded and shifted: a barrel shifter as three levels of
#: 4:1 muxes (3 LUT per bit), the remainder-versus-half compares (2 LUT per bit) and the rounding increment
#: (1 LUT per bit)
ROUND_SHIFT_LUTS_PER_BIT = 6
#: per bit of the sum, the clamp to [lo, hi]: two compares on the carry chain and a select of the output bits
CLAMP_LUTS_PER_BIT = 2


def product_width(a_bits: int) -> int:
    """PW of hls/vaqf/eltwise.h: the (A+1) x 32-bit products need A + 33 bits, the sum of two one more (charged
    whether or not the unit adds), at most the 64 bits of the reference arithmetic."""
    return min(64, int(a_bits) + 34)

#: products per lane each op needs, and whether it reads the channel tables
_PRODUCTS = {"relu": 1, "requant": 1, "add": 2}
_TABLE = {"relu": False, "requant": True, "add": False}


@dataclass(frozen=True)
class EltwiseDesc(Descriptor):
    """``vaqf::eltwise_desc``: one relu, requant or add layer."""

    cpp = "vaqf::eltwise_desc"
    words: int
    row_words: int
    a_acc: int
    b_used: int
    b_acc: int
    out_acc: int
    per_lane: int
    const_offset: int
    fill_words: int
    zp_a: int
    zp_b: int
    ma: int
    mb: int
    shift: int
    zp_out: int
    lo: int
    hi: int
    rounding: int


def signed_bits(v: Value) -> int:
    """Signed bits of a value's integers (the same rule as the buffer plan's container widths; not imported
    from vaqf.hw.memory, which imports the units)."""
    qt = v.info.qtype
    if isinstance(qt, IntType):
        return qt.bits + (0 if qt.signed else 1)
    return 2


def lanes_of(knobs: dict[str, int]) -> int:
    """The design's lanes from a unit's knobs (1 without a lane knob)."""
    v = lane_knob(knobs)
    return 1 if v is None else int(v)


def buffer_args(ctx: EmitContext, value: str) -> tuple[str, str, int]:
    """(act argument, acc argument, 1 if the value is in an accumulator buffer): a unit's wrapper takes
    both containers and the descriptor says which one holds the value; the other gets the dummy."""
    buf = ctx.buffer(value)
    if buf.split("_", 1)[0] == "acc":
        return ctx.dummy["act"], buf, 1
    return buf, ctx.dummy["acc"], 0


def table_fill_words(d: int, lanes: int, word_bits: int) -> int:
    """DDR words of a requant layer's two channel tables: each of ceil(d / L) table words takes
    Q = ceil(L / P) DDR words of P = word_bits / 32 lanes, for the mantissas and again for the shifts."""
    p = word_bits // 32
    return 2 * row_words(d, lanes) * math.ceil(lanes / p)


def requant_tables(mantissa: np.ndarray, shift: np.ndarray, d: int, lanes: int, word_bits: int) -> np.ndarray:
    """The two channel tables as DDR lanes (uint32), in the order the fill loop reads them: table word j's
    lanes 0..L-1 (channel j*L + l; a per-tensor constant repeated over the d channels, zeros past d),
    padded to Q whole DDR words, mantissas first, then shifts."""
    p = word_bits // 32
    j = row_words(d, lanes)
    q = math.ceil(lanes / p)
    out = []
    for v in (mantissa, shift):
        v = np.broadcast_to(np.asarray(v, dtype=np.int64).reshape(-1), (d,)) if np.size(v) == 1 else \
            np.asarray(v, dtype=np.int64).reshape(-1)
        t = np.zeros((j, q * p), dtype=np.int64)
        flat = np.zeros(j * lanes, dtype=np.int64)
        flat[:d] = v
        t[:, :lanes] = flat.reshape(j, lanes)
        out.append(t.reshape(-1))
    return (np.concatenate(out) & 0xFFFFFFFF).astype(np.uint32)


@register_unit
class EltwiseUnit(Unit):
    kind = "eltwise"
    header = "eltwise.h"
    template = "eltwise.j2"
    descriptors = (EltwiseDesc,)
    lane_knob = "lanes"
    # the unit reads and writes two different buffers (HLS-REVIEW M13, docs/hls.md)
    in_place = False
    desc_fields = 18

    def knobs(self, node: Node) -> dict[str, list[int]]:
        return {"lanes": list(LANE_CHOICES)}

    def cost(self, node: Node, knobs: dict[str, int], board: Board) -> Cost:
        """Cycles and hardware of one layer on the elementwise unit, at L = the design's lanes; relu runs
        as a clamp from below at the zero point (m = 1, s = 0), one product per lane; requant one product
        per lane and the channel tables filled from DDR before the word loop; add two products per lane
        and their 64-bit sum. A requantization with a sub-step offset (a folded BatchNormalization) runs only
        in a dense layer's epilogue: here it is an error.

        Cycles: the word loop, ``words x 1 + DEPTH`` (II=1: one whole word per cycle from each operand's
        buffer, one port per bank); requant first fills its channel tables, ``fill_words x 1 + DDR_LATENCY +
        FILL_DEPTH`` (one sequential burst).
        Per lane: the op's signed (A+1) x 32 products (A: the inputs' signed bits, +1 for the zero-point
        subtraction), each :func:`dsp48e2_per_product` slices (no packing); LUTs for the zero-point
        subtraction (A+1 per operand), the PW-bit sum of two products (add; :func:`product_width`), the
        rounding shift (ROUND_SHIFT_LUTS_PER_BIT per bit of PW, ``rshift_round_narrow``) and the clamp
        (CLAMP_LUTS_PER_BIT); FF: a PW-bit value per pipeline stage. The tables
        (requant): per lane a ceil(d / L)-word memory of 32-bit mantissas and one of 6-bit shifts.
        Plus CONTROL_LUTS of counters.
        """
        if node.op == "requant" and node.attrs.get("offset") is not None:
            raise VaqfError(f"{node.name}: a requantization with a sub-step offset runs only fused into the dense "
                            "layer it follows (the elementwise unit has no offset)")
        products, table = _op_needs(node)
        lanes = lanes_of(knobs)
        x = node.inputs[0].info
        words = value_words(x, lanes)
        cycles = words + DEPTH
        a = max(signed_bits(v) for v in node.inputs)
        pw = product_width(a)
        lut_lane = ((a + 1) * products + (pw if products > 1 else 0)
                    + (ROUND_SHIFT_LUTS_PER_BIT + CLAMP_LUTS_PER_BIT) * pw)
        ff_lane = pw * DEPTH
        dsp = lanes * products * dsp48e2_per_product(a + 1, 32)
        mem = Cost()
        ddr = 0
        if table:
            d = last_dim(x)
            fill = table_fill_words(d, lanes, board.axi_bits)
            cycles += fill + DDR_LATENCY + FILL_DEPTH
            j = row_words(d, lanes)
            bank = memory_cost(j, 32) + memory_cost(j, 6)
            mem = Cost(lut=lanes * bank.lut, bram18=lanes * bank.bram18)
            ddr = fill * board.axi_bits // 8
        return Cost(cycles, CONTROL_LUTS + lanes * lut_lane + mem.lut, 200 + lanes * ff_lane, dsp, mem.bram18, 0, ddr)

    def ddr_blobs(self, node: Node, word_bits: int, knobs: dict[str, int],
                  board: Board | None) -> dict[str, np.ndarray]:
        """requant's channel tables for L = the design's lanes, in fill order (:func:`requant_tables`)."""
        if node.op != "requant":
            return {}
        a = node.attrs
        return {"tables": requant_tables(a["mantissa"], a["shift"], last_dim(node.inputs[0].info), lanes_of(knobs),
                                         word_bits)}

    def config(self, instance: str, nodes: list[Node], knobs: dict[str, int], word_bits: int) -> dict[str, Any]:
        """The unit's config struct, sized for every layer it serves."""
        lanes = lanes_of(knobs)
        reqs = [n for n in nodes if n.op == "requant"]
        a_bits = max(signed_bits(v) for n in nodes for v in n.inputs)
        return {"a_bits": a_bits, "has_b": int(any(n.op == "add" for n in nodes)), "has_table": int(bool(reqs)),
                "max_row_words": max([row_words(last_dim(n.inputs[0].info), lanes) for n in reqs] or [1]),
                "max_words": max(value_words(n.inputs[0].info, lanes) for n in nodes),
                "max_fill": max([table_fill_words(last_dim(n.inputs[0].info), lanes, word_bits) for n in reqs]
                                or [1]),
                "depth": DEPTH, "fill_depth": FILL_DEPTH}

    def buffer_kinds(self, node: Node, in_kinds: list[str]) -> list[str]:
        # relu keeps its input's container; requant and add write activations
        return list(in_kinds) if node.op == "relu" else ["act"]

    def describe(self, node: Node, ctx: EmitContext) -> dict[str, Any]:
        """The layer's descriptor (the op's operands, multipliers and clamp) and the buffers its call binds:
        each operand as an (act, acc) pair, the one not holding it bound to the dummy."""
        _op_needs(node)
        x = node.inputs[0].info
        ia, ic, a_acc = buffer_args(ctx, node.inputs[0].name)
        if len(node.inputs) > 1:
            ib, ibc, b_acc = buffer_args(ctx, node.inputs[1].name)
            b_used = 1
        else:
            ib, ibc, b_acc, b_used = ctx.dummy["act"], ctx.dummy["acc"], 0, 0
        oa, oc, out_acc = buffer_args(ctx, node.outputs[0].name)
        fields: dict[str, int] = {"words": value_words(x, ctx.lanes), "row_words": row_words(last_dim(x), ctx.lanes),
                                  "a_acc": a_acc, "b_used": b_used, "b_acc": b_acc, "out_acc": out_acc,
                                  "per_lane": 0, "const_offset": 0, "fill_words": 0, "zp_a": 0, "zp_b": 0, "ma": 1,
                                  "mb": 0, "shift": 0, "zp_out": 0, "rounding": 0}
        a = node.attrs
        if node.op == "relu":
            fields.update(lo=int(x.zero_point), hi=int(x.qtype.max))
        elif node.op == "requant":
            fields.update(per_lane=1, const_offset=ctx.offset(node, "tables"),
                          fill_words=table_fill_words(last_dim(x), ctx.lanes, ctx.word_bits),
                          zp_a=int(x.zero_point), zp_out=int(a["zero_point"]), lo=int(a["qtype"].min),
                          hi=int(a["qtype"].max), rounding=Rounding(a["rounding"]).cpp_id)
        else:  # add
            b = node.inputs[1].info
            fields.update(zp_a=int(x.zero_point), zp_b=int(b.zero_point), ma=int(a["ma"]), mb=int(a["mb"]),
                          shift=int(a["shift"]), zp_out=int(a["zero_point"]), lo=int(a["qtype"].min),
                          hi=int(a["qtype"].max), rounding=0)
        return {"ident": ctx.ident[node.name], "unit": self.instance(node), "desc": EltwiseDesc(**fields),
                "ia": ia, "ic": ic, "ib": ib, "ibc": ibc, "oa": oa, "oc": oc}


def _op_needs(node: Node) -> tuple[int, bool]:
    """(products per lane, reads the channel tables) of the node's op on the unit."""
    if node.op not in _PRODUCTS:
        raise IRError(f"{node.name}: op {node.op} does not run on the elementwise unit")
    return _PRODUCTS[node.op], _TABLE[node.op]
