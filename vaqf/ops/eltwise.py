"""The elementwise unit shared by relu, requant and add: one datapath (hls/vaqf/eltwise.h), one descriptor.

Every layer computes, per element (one L-lane word per cycle, lane l = bank l):

    out = clamp(round(((a - zp_a) * m + (b - zp_b) * mb) / 2**s) + zp_out, lo, hi)

relu is m = 1, s = 0, lo = its zero point; requant takes m and s per channel (the last axis, which maps to
the lanes of a row's words) from two on-chip tables that a sequential DDR reader fills first; add reads
b. The unit's config struct prunes the second product when no layer adds and the tables when no layer
requantizes, so the hardware is the union of what its layers need; each op's cost charges what its own
layer needs and the model's max over layers gives that union (docs/hls-parts/eltwise-lut-pool.md).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from vaqf.hw.board import Board
from vaqf.hw.cost import DDR_LATENCY, Cost, dsp48e2_per_product, memory_cost
from vaqf.hw.layout import LANE_CHOICES, lane_knob, last_dim, row_words, value_words
from vaqf.ir import IntType, Node, Value
from vaqf.ops.base import EmitContext

#: pipeline depth of the word loop: read, subtract, multiply (2 stages), add, round-shift, clamp, write
DEPTH = 8
#: pipeline depth of the channel-table fill after the DDR latency: read, lane select, write
FILL_DEPTH = 3
#: LUTs of loop control: the word counter, its compare, the table-word counter
CONTROL_LUTS = 150
#: the 64-bit sum is rounded and shifted: a 64-bit barrel shifter as three levels of 4:1 muxes (3 LUT per
#: bit), the remainder-versus-half compares (2 LUT per bit) and the rounding increment (1 LUT per bit)
ROUND_SHIFT_LUTS = 6 * 64
#: the clamp to [lo, hi]: two 64-bit compares on the carry chain and a select of the output bits
CLAMP_LUTS = 2 * 64

__all__ = ["DEPTH", "FILL_DEPTH", "LANE_CHOICES", "buffer_args", "eltwise_cost", "eltwise_params",
           "eltwise_unit_params", "requant_tables", "signed_bits", "table_fill_words"]


def signed_bits(v: Value) -> int:
    """Signed bits of a value's integers (the same rule as the buffer plan's container widths; not imported
    from vaqf.hw.memory, which imports the ops)."""
    qt = v.info.qtype
    if isinstance(qt, IntType):
        return qt.bits + (0 if qt.signed else 1)
    return 2


def _lanes(knobs: dict[str, int]) -> int:
    v = lane_knob(knobs)
    return 1 if v is None else int(v)


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


def _words(v: Value, lanes: int) -> int:
    return value_words(v.info, lanes)


def eltwise_unit_params(nodes: list[Node], knobs: dict[str, int], word_bits: int) -> dict[str, Any]:
    """The unit's config struct, sized for every layer it serves."""
    lanes = _lanes(knobs)
    reqs = [n for n in nodes if n.op == "requant"]
    a_bits = max(signed_bits(v) for n in nodes for v in n.inputs)
    return {"a_bits": a_bits, "has_b": int(any(n.op == "add" for n in nodes)), "has_table": int(bool(reqs)),
            "max_row_words": max([row_words(last_dim(n.inputs[0].info), lanes) for n in reqs] or [1]),
            "max_words": max(_words(n.inputs[0], lanes) for n in nodes),
            "max_fill": max([table_fill_words(last_dim(n.inputs[0].info), lanes, word_bits) for n in reqs] or [1]),
            "depth": DEPTH, "fill_depth": FILL_DEPTH}


def eltwise_cost(node: Node, knobs: dict[str, int], board: Board, products: int, table: bool) -> Cost:
    """Cycles and hardware of one layer on the elementwise unit, at L = the design's lanes.

    Cycles: the word loop, ``words x 1 + DEPTH`` (II=1: one whole word per cycle from each operand's
    buffer, one port per bank); requant first fills its channel tables, ``fill_words x 1 + DDR_LATENCY +
    FILL_DEPTH`` (one sequential burst).
    Per lane: ``products`` signed (A+1) x 32 products (A: the inputs' signed bits, +1 for the zero-point
    subtraction), each :func:`dsp48e2_per_product` slices (no packing); LUTs for the zero-point
    subtraction (A+1 per operand), the 64-bit sum of two products (add), the rounding shift
    (ROUND_SHIFT_LUTS) and clamp (CLAMP_LUTS); FF: a 64-bit value per pipeline stage. The tables
    (requant): per lane a ceil(d / L)-word memory of 32-bit mantissas and one of 6-bit shifts.
    Plus CONTROL_LUTS of counters.
    """
    lanes = _lanes(knobs)
    x = node.inputs[0].info
    words = value_words(x, lanes)
    cycles = words + DEPTH
    a = max(signed_bits(v) for v in node.inputs)
    lut_lane = (a + 1) * products + (64 if products > 1 else 0) + ROUND_SHIFT_LUTS + CLAMP_LUTS
    ff_lane = 64 * DEPTH
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


def buffer_args(ctx: EmitContext, value: str) -> tuple[str, str, int]:
    """(act argument, acc argument, 1 if the value is in an accumulator buffer): the unit's wrapper takes
    both containers and the descriptor says which one holds the value; the other gets the dummy."""
    buf = ctx.buffer(value)
    if buf.split("_", 1)[0] == "acc":
        return ctx.dummy["act"], buf, 1
    return buf, ctx.dummy["acc"], 0


def eltwise_params(node: Node, ctx: EmitContext, **fields: int) -> dict[str, Any]:
    """Template parameters of one layer: buffers, word counts, and the descriptor ``fields`` the op gives."""
    lanes = ctx.lanes
    x = node.inputs[0].info
    ia, ic, a_acc = buffer_args(ctx, node.inputs[0].name)
    if len(node.inputs) > 1:
        ib, ibc, b_acc = buffer_args(ctx, node.inputs[1].name)
        b_used = 1
    else:
        ib, ibc, b_acc, b_used = ctx.dummy["act"], ctx.dummy["acc"], 0, 0
    oa, oc, out_acc = buffer_args(ctx, node.outputs[0].name)
    p: dict[str, Any] = {"ident": ctx.ident[node.name], "unit": "eltwise", "words": value_words(x, lanes),
                         "row_words": row_words(last_dim(x), lanes), "a_acc": a_acc, "b_used": b_used, "b_acc": b_acc,
                         "out_acc": out_acc, "per_lane": 0, "const_offset": 0, "fill_words": 0, "zp_a": 0, "zp_b": 0,
                         "ma": 1, "mb": 0, "shift": 0, "zp_out": 0, "rounding": 0,
                         "ia": ia, "ic": ic, "ib": ib, "ibc": ibc, "oa": oa, "oc": oc}
    p.update(fields)
    return p
