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
from vaqf.hw.cost import Cost, bram18_for, memory_cost
from vaqf.ir import IntType, Node, TensorInfo
from vaqf.ops.base import EmitContext, OpSpec, register
from vaqf.ops.eltwise import LANE_CHOICES
from vaqf.ops.packing import pack_int32
from vaqf.sim.qarith import Dyadic

if TYPE_CHECKING:
    from vaqf.sim.plans import Scratch

TABLE_SIZE = 1024
EXP_RANGE = 12.0   # exp(-12) * 2**16 < 0.5: entries beyond are zero
EXP_BITS = 16
RECIP_BITS = 32


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
    in_place = True

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
        return [TensorInfo(x.shape, IntType(b, signed=False), np.array([2.0**-b]), 0)]

    def reference(self, node: Node, inputs: list[np.ndarray]) -> list[np.ndarray]:
        from vaqf.sim.plans import reference_of

        return reference_of(softmax_plan(node), inputs)

    def sim_plan(self, node: Node, scratch: Scratch) -> Callable[[list[np.ndarray]], list[np.ndarray]]:
        return softmax_plan(node, scratch)

    def unit(self, node: Node) -> str:
        return "softmax"

    def knobs(self, node: Node) -> dict[str, list[int]]:
        return {"lanes": [v for v in LANE_CHOICES if v <= node.inputs[0].info.shape[-1]]}

    def cost(self, node: Node, knobs: dict[str, int], board: Board) -> Cost:
        """The kernel (hls/vaqf/softmax.h) is a three-stage row pipeline (HLS DATAFLOW): stage 1 takes
        two passes over a row at ``lanes`` elements per cycle (max; exponentials and their sum), stage 2
        one 32-bit reciprocal per row (a sequential radix-2 divider, ~36 cycles), stage 3 one normalizing
        pass. Rows overlap, so a row costs the slowest stage: max(2 ceil(n/L) + 8, 38, ceil(n/L) + 4),
        each pass paying its ~4-cycle pipeline fill; plus one row's stages 2 and 3 to drain, and the table
        load (one entry per cycle). Resources: a table copy (BRAM) and a 17x17 multiplier (1 DSP) per
        lane; ~120 LUT of compare/add/round per lane; the divider ~1,100 LUT; the FIFO holding two rows of
        exponentials (LANES x 17 bits wide) and ~200 LUT of stream handshakes.
        """
        lanes = int(knobs["lanes"])
        x = node.inputs[0].info
        n = x.shape[-1]
        rows = x.size // n
        steps = math.ceil(n / lanes)
        table = node.attrs["table"].size
        per_row = max(2 * steps + 8, 36 + 2, steps + 4)
        cycles = table + rows * per_row + 36 + 2 + steps + 4
        fifo = memory_cost(2 * steps, lanes * (EXP_BITS + 1))
        bram = lanes * bram18_for(table, EXP_BITS + 1) + fifo.bram18
        return Cost(cycles, lut=1_100 + 120 * lanes + 300 + 200 + fifo.lut, ff=1_400 + 150 * lanes + 100,
                    dsp=lanes, bram18=bram, ddr_bytes=4 * table)

    def unit_params(self, unit: str, nodes: list[Node], knobs: dict[str, int], word_bits: int) -> dict[str, Any]:
        return {"lanes": int(knobs["lanes"]), "max_row": max(n.inputs[0].info.shape[-1] for n in nodes),
                "max_table": max(n.attrs["table"].size for n in nodes)}

    def buffer_kinds(self, node: Node, in_kinds: list[str]) -> list[str]:
        return ["act"]

    def ddr_blobs(self, node: Node, word_bits: int) -> dict[str, np.ndarray]:
        return {"table": pack_int32(node.attrs["table"], word_bits)}

    def template_params(self, node: Node, ctx: EmitContext) -> dict[str, Any]:
        x = node.inputs[0].info
        a = node.attrs
        return {"ident": ctx.ident[node.name], "unit": self.unit(node), "rows": x.size // x.shape[-1],
                "n": x.shape[-1], "table_offset": ctx.offset(node, "table"), "table_size": int(a["table"].size),
                "mant": int(a["idx_mantissa"]), "shift": int(a["idx_shift"]), "out_bits": int(a["out_bits"]),
                "in_buf": ctx.buffer(node.inputs[0].name), "out_buf": ctx.buffer(node.outputs[0].name)}
