"""softmax over the last axis in integer arithmetic (table exponential, one reciprocal per row).

For input integers x (scale s) and a row r:
  d    = max(r) - x                                   (>= 0, exact)
  idx  = min(round(d * m / 2**sh), T - 1)             (m / 2**sh = s / s_t, the table step s_t >= s)
  e    = E[idx],  E[i] = round(2**16 * exp(-i * s_t)) (E[0] = 65536; 17-bit entries)
  R    = floor(2**32 / sum(e))                        (sum >= 65536, so R <= 2**16)
  y    = min(round(e * R / 2**(32 - b)), 2**b - 1)    (unsigned b-bit output, scale 2**-b)
All roundings are half-to-even. Error against float softmax (measured in docs/numerics.md): the table
step adds a relative error of at most s_t / 2 to each exponential; the output step is 2**-b.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from vaqf.errors import VaqfError
from vaqf.hw.board import Board
from vaqf.hw.cost import (
    DDR_LATENCY,
    Cost,
    adder_tree_luts,
    bram18_for,
    dsp48e2_per_product,
    memory_cost,
    signed_bits_for_range,
    tree_depth,
)
from vaqf.hw.layout import LANE_CHOICES, row_words
from vaqf.ir import IntType, Node, TensorInfo
from vaqf.ops.base import EmitContext, OpSpec, register
from vaqf.ops.packing import pack_int32
from vaqf.ops.rowpipe import row_pipeline_cycles
from vaqf.sim.qarith import Dyadic

if TYPE_CHECKING:
    from vaqf.sim.plans import Scratch

TABLE_SIZE = 1024
EXP_RANGE = 12.0   # exp(-12) * 2**16 < 0.5: entries beyond are zero
EXP_BITS = 16
RECIP_BITS = 17   # floor(2**32 / sum(e)) <= 2**16: the kernel's reciprocal and its divider iterations
ENTRY_BITS = EXP_BITS + 1
MANT_BITS = 24    # Dyadic.from_float(..., 24): the index multiplier is below 2**24


def softmax_depths(lanes: int) -> dict[str, int]:
    """Pipeline depths of the kernel's loops (hls/vaqf/softmax.h), which the config struct carries to the
    counters: fill (stream read, table write), max (word read 2, compare tree 2 levels a cycle), exp (word
    read 2, subtract 1, index product on a DSP 3, rounding 1, clamp + table read 2, then the lane sum tree 2
    levels a cycle and the stream write), divider (a compare-subtract per cycle, read + write), normalize
    (stream read, DSP product 3, rounding 1, clamp + word write 2)."""
    t = -(-tree_depth(lanes) // 2)
    return {"depth_fill": 3, "depth_max": 2 + t, "depth_exp": 9 + t, "depth_div": 2, "depth_norm": 7}


def barrel_luts(bits: int, shifts: int) -> int:
    """LUT6s of a run-time right shifter of ``bits`` bits over ``shifts`` positions: one 4:1 mux (a LUT6)
    per bit per two shift stages (UG574)."""
    stages = max(1, (max(shifts, 2) - 1).bit_length())
    return bits * -(-stages // 2)


def softmax_attrs(in_scale: float, out_bits: int) -> dict[str, Any]:
    """Table and index multiplier for an input of scale ``in_scale``."""
    step = max(float(in_scale), EXP_RANGE / (TABLE_SIZE - 1))
    size = min(TABLE_SIZE, int(math.ceil(EXP_RANGE / step)) + 1)
    d = Dyadic.from_float(float(in_scale) / step, 24)
    table = np.array([round(math.ldexp(math.exp(-i * step), EXP_BITS)) for i in range(size)], dtype=np.int64)
    return {"table": table, "idx_mantissa": d.mantissa, "idx_shift": d.shift, "out_bits": int(out_bits),
            "step": step}


def softmax_reference(x: np.ndarray, table: np.ndarray, mant: int, shift: int, out_bits: int,
                      out: np.ndarray | None = None) -> np.ndarray:
    """Softmax over the last axis (compiled, :func:`vaqf.sim.kernels.softmax_rows`); int64 unless ``out``
    (an array of x's shape, any integer dtype holding b bits) is given."""
    from vaqf.sim.kernels import softmax_rows

    xi = np.asarray(x)
    if out is None:
        out = np.empty(xi.shape, np.int64)
    n = xi.shape[-1]
    softmax_rows(np.ascontiguousarray(xi).reshape(-1, n), np.asarray(table, dtype=np.int64), int(mant), int(shift),
                 int(out_bits), out.reshape(-1, n))
    return out


def softmax_plan(node: Node, scratch: Scratch | None = None) -> Callable[[list[np.ndarray]], list[np.ndarray]]:
    from vaqf.sim.plans import Scratch, storage_dtype

    scratch = scratch if scratch is not None else Scratch()
    a = node.attrs
    table, mant, shift, bits = np.asarray(a["table"], dtype=np.int64), int(a["idx_mantissa"]), int(a["idx_shift"]), \
        int(a["out_bits"])
    out_dt = storage_dtype(IntType(bits, signed=False))

    def run(inputs: list[np.ndarray]) -> list[np.ndarray]:
        x = inputs[0]
        return [softmax_reference(x, table, mant, shift, bits, scratch.new(x.shape, out_dt))]

    return run


@register
class Softmax(OpSpec):
    name = "softmax"
    # the kernel is a DATAFLOW region: stage 1 reads the input while stage 3 writes the output, so they must
    # be different buffers (canonical form; HLS-REVIEW H7)
    in_place = False

    def infer(self, node: Node, inputs: list[TensorInfo]) -> list[TensorInfo]:
        (x,) = inputs
        if x.per_channel:
            raise VaqfError(f"{node.name}: softmax needs a per-tensor input scale")
        span = int(x.qtype.max) - int(x.qtype.min)
        if span * int(node.attrs["idx_mantissa"]) >= 2**62:
            raise VaqfError(f"{node.name}: input range too wide for the table index")
        if x.shape[-1] > 2**15:  # keeps sum(e) < 2**32 so the reciprocal is at least 1
            raise VaqfError(f"{node.name}: rows of {x.shape[-1]} are too long")
        b = int(node.attrs["out_bits"])
        if not 1 <= b <= 31:
            raise VaqfError(f"{node.name}: softmax outputs of {b} bits (the kernel makes 1 to 31)")
        if int(node.attrs["idx_mantissa"]) >= 2**MANT_BITS:
            raise VaqfError(f"{node.name}: table index multiplier wider than {MANT_BITS} bits")
        return [TensorInfo(x.shape, IntType(b, signed=False), np.array([2.0**-b]), 0)]

    def reference(self, node: Node, inputs: list[np.ndarray]) -> list[np.ndarray]:
        from vaqf.sim.plans import reference_of

        return reference_of(softmax_plan(node), inputs)

    def sim_plan(self, node: Node, scratch: Scratch) -> Callable[[list[np.ndarray]], list[np.ndarray]]:
        return softmax_plan(node, scratch)

    def unit(self, node: Node) -> str:
        return "softmax"

    def knobs(self, node: Node) -> dict[str, list[int]]:
        # every lane count: the design's L may exceed the row (idle lanes are padding)
        return {"lanes": list(LANE_CHOICES)}

    def cost(self, node: Node, knobs: dict[str, int], board: Board) -> Cost:
        """The kernel (hls/vaqf/softmax.h) is a row pipeline (HLS DATAFLOW) of three processes, W =
        ceil(n/L) words per row, every loop at II=1 (one whole word per cycle, lane l in bank l):

        - lead: the table fill, DDR_LATENCY + T + depth (one entry per cycle from the reader stage), before
          stage 1's first row;
        - stage 1 per row: the max pass and the exponential pass, 2W + two depths;
        - stage 2 per row: a restoring divider, 17 quotient bits at one a cycle, + depth;
        - stage 3 per row: the normalizing pass, W + depth.

        Cycles: the row pipeline's finish time (:func:`vaqf.ops.rowpipe.row_pipeline_cycles`), exactly
        what the counters (VAQF_ROW, VAQF_REGION_END) count.

        Resources, per lane: a table copy (BRAM18s of T x 17 bits); the index product diff x mant
        ((in_bits+1) x 25 signed: dsp48e2_per_product) and the normalizing product e x R (18 x 18: 1 DSP);
        LUTs for the max compare (in_bits), the subtract (in_bits + 1), the two run-time rounding shifters
        (barrel_luts), the index clamp (10) and the output clamp (34); the lane sum tree (adder_tree_luts
        over 17-bit entries) and the row accumulator (sum bits). Once: the divider (a 33-bit compare-subtract
        and a 17-bit quotient register, ~70 LUT), the exponential FIFO of two rows (memory_cost(2W, 17 L)),
        ~200 LUT and ~300 FF of stream handshakes and loop control. FF: the pipeline registers of the lane
        datapath (~6 stages of its widths).
        """
        lanes = int(knobs["lanes"])
        x = node.inputs[0].info
        n = x.shape[-1]
        rows = x.size // n
        words = row_words(n, lanes)
        table = int(node.attrs["table"].size)
        dep = softmax_depths(lanes)
        lead = [DDR_LATENCY + table + dep["depth_fill"], 0, 0]
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
        bram = lanes * bram18_for(table, ENTRY_BITS) + fifo.bram18
        return Cost(cycles, lut=lut, ff=ff, dsp=dsp, bram18=bram, ddr_bytes=4 * table)

    def unit_params(self, unit: str, nodes: list[Node], knobs: dict[str, int], word_bits: int) -> dict[str, Any]:
        lanes = int(knobs["lanes"])
        rows = [n.inputs[0].info for n in nodes]
        return {"lanes": lanes, "in_bits": max(_in_bits(x) for x in rows),
                "mant_bits": MANT_BITS, "sum_bits": max(_sum_bits(x.shape[-1]) for x in rows),
                "max_rows": max(x.size // x.shape[-1] for x in rows),
                "max_words": max(row_words(x.shape[-1], lanes) for x in rows),
                "max_table": max(n.attrs["table"].size for n in nodes), **softmax_depths(lanes)}

    def buffer_kinds(self, node: Node, in_kinds: list[str]) -> list[str]:
        if in_kinds != ["act"]:
            raise VaqfError(f"{node.name}: softmax reads an activation buffer, not accumulators; requantize its input")
        return ["act"]

    def ddr_blobs(self, node: Node, word_bits: int) -> dict[str, np.ndarray]:
        return {"table": pack_int32(node.attrs["table"], word_bits)}

    def template_params(self, node: Node, ctx: EmitContext) -> dict[str, Any]:
        x = node.inputs[0].info
        a = node.attrs
        table = int(a["table"].size)
        return {"ident": ctx.ident[node.name], "unit": self.unit(node), "rows": x.size // x.shape[-1],
                "n": x.shape[-1], "words": row_words(x.shape[-1], ctx.lanes),
                "table_offset": ctx.offset(node, "table"), "table_size": table,
                "mant": int(a["idx_mantissa"]), "shift": int(a["idx_shift"]), "out_bits": int(a["out_bits"]),
                "in_buf": ctx.buffer(node.inputs[0].name), "out_buf": ctx.buffer(node.outputs[0].name)}


def _in_bits(x: TensorInfo) -> int:
    """Signed bits holding every input element (the kernel's compare and subtract width)."""
    return signed_bits_for_range(int(x.qtype.min), int(x.qtype.max))


def _sum_bits(n: int) -> int:
    """Unsigned bits of a row's sum of n entries of at most 2**16."""
    return max(1, (n * 2**EXP_BITS).bit_length())
