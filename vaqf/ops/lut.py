"""lut: an elementwise function of a narrow integer as a table (GELU, erf or tanh form).

``y = table[x - x_min]``: the table holds the already-requantized output for every input integer, so
any elementwise non-linearity is exact by construction. Inputs are at most 12 bits (4,096 entries).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from vaqf.errors import VaqfError
from vaqf.hw.board import Board
from vaqf.hw.cost import DDR_LATENCY, Cost, memory_cost, mux_luts
from vaqf.hw.layout import lane_knob, value_words
from vaqf.ir import IntType, Node, TensorInfo
from vaqf.ops.base import EmitContext, OpSpec, register
from vaqf.ops.eltwise import LANE_CHOICES, buffer_args, signed_bits
from vaqf.ops.packing import pack_int32
from vaqf.sim.qarith import round_real, saturate

if TYPE_CHECKING:
    from vaqf.sim.plans import Scratch

MAX_INPUT_BITS = 12
#: pipeline depth of the lookup loop: read, index, table read (2), select, write
DEPTH = 4
#: pipeline depth of the table fill after the DDR latency
FILL_DEPTH = 3


def _idx_bits(table_size: int) -> int:
    return max(1, math.ceil(math.log2(max(2, table_size))))


def gelu_erf(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + np.vectorize(math.erf)(x / math.sqrt(2.0)))


def gelu_tanh(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


FUNCTIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {"gelu": gelu_erf, "gelu_tanh": gelu_tanh}


def lut_attrs(fn: str, in_info: TensorInfo, out_qtype: IntType, out_scale: float, out_zp: int) -> dict[str, Any]:
    lo, hi = int(in_info.qtype.min), int(in_info.qtype.max)
    if hi - lo + 1 > 2**MAX_INPUT_BITS:
        raise VaqfError(f"a table needs an input of at most {MAX_INPUT_BITS} bits, got {in_info.qtype}")
    q = np.arange(lo, hi + 1, dtype=np.int64)
    real = FUNCTIONS[fn](in_info.scale[0] * (q - in_info.zero_point).astype(np.float64))
    table = saturate(round_real(real / out_scale) + out_zp, int(out_qtype.min), int(out_qtype.max))
    return {"fn": fn, "table": table, "in_min": lo, "qtype": out_qtype, "scale": np.array([out_scale]),
            "zero_point": int(out_zp)}


@register
class Lut(OpSpec):
    name = "lut"
    in_place = False  # the unit reads and writes two different buffers (HLS-REVIEW M13, docs/hls-parts)
    elementwise = True

    def infer(self, node: Node, inputs: list[TensorInfo]) -> list[TensorInfo]:
        (x,) = inputs
        a = node.attrs
        if int(x.qtype.min) != int(a["in_min"]) or int(x.qtype.max) - int(x.qtype.min) + 1 != a["table"].size:
            raise VaqfError(f"{node.name}: table of {a['table'].size} entries does not cover {x.qtype}")
        return [TensorInfo(x.shape, a["qtype"], a["scale"], a["zero_point"])]

    def reference(self, node: Node, inputs: list[np.ndarray]) -> list[np.ndarray]:
        from vaqf.sim.plans import reference_of

        return reference_of(self.sim_plan(node), inputs)

    def sim_plan(self, node: Node, scratch: Scratch | None = None) -> Callable[[list[np.ndarray]], list[np.ndarray]]:
        """One compiled pass (:func:`vaqf.sim.kernels.table_lookup`)."""
        from vaqf.sim.kernels import table_lookup
        from vaqf.sim.plans import Scratch, storage_dtype

        scratch = scratch if scratch is not None else Scratch()
        a = node.attrs
        table, in_min, out_dt = np.asarray(a["table"], dtype=np.int64), int(a["in_min"]), storage_dtype(a["qtype"])

        def run(inputs: list[np.ndarray]) -> list[np.ndarray]:
            x = np.asarray(inputs[0])
            out = scratch.new(x.shape, out_dt)
            table_lookup(np.ascontiguousarray(x).reshape(-1), table, in_min, out.reshape(-1))
            return [out]

        return run

    def unit(self, node: Node) -> str:
        return "lut"

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
        lanes = lane_knob(knobs) or 1
        p = board.axi_bits // 32
        t = int(node.attrs["table"].size)
        idx = _idx_bits(t)
        bits = signed_bits(node.outputs[0])
        words = value_words(node.inputs[0].info, lanes)
        fill = math.ceil(t / p)
        bank = memory_cost(math.ceil(2**idx / p), bits)
        lut = 150 + lanes * (p * bank.lut + mux_luts(p) * bits + idx)
        return Cost(fill + DDR_LATENCY + FILL_DEPTH + words + DEPTH, lut=lut, ff=200 + lanes * DEPTH * (bits + idx),
                    dsp=0, bram18=lanes * p * bank.bram18, ddr_bytes=fill * board.axi_bits // 8)

    def unit_params(self, unit: str, nodes: list[Node], knobs: dict[str, int], word_bits: int) -> dict[str, Any]:
        lanes = lane_knob(knobs) or 1
        p = word_bits // 32
        return {"a_bits": max(signed_bits(n.inputs[0]) for n in nodes),
                "t_bits": max(signed_bits(n.outputs[0]) for n in nodes),
                "idx_bits": max(_idx_bits(int(n.attrs["table"].size)) for n in nodes),
                "max_words": max(value_words(n.inputs[0].info, lanes) for n in nodes),
                "max_table_words": max(math.ceil(int(n.attrs["table"].size) / p) for n in nodes),
                "depth": DEPTH, "fill_depth": FILL_DEPTH}

    def buffer_kinds(self, node: Node, in_kinds: list[str]) -> list[str]:
        return ["act"]

    def ddr_blobs(self, node: Node, word_bits: int) -> dict[str, np.ndarray]:
        return {"table": pack_int32(node.attrs["table"], word_bits)}

    def template_params(self, node: Node, ctx: EmitContext) -> dict[str, Any]:
        a = node.attrs
        word_bits = ctx.word_bits
        ia, ic, a_acc = buffer_args(ctx, node.inputs[0].name)
        return {"ident": ctx.ident[node.name], "unit": self.unit(node),
                "words": value_words(node.inputs[0].info, ctx.lanes), "a_acc": a_acc,
                "table_offset": ctx.offset(node, "table"),
                "table_words": math.ceil(int(a["table"].size) / (word_bits // 32)), "in_min": int(a["in_min"]),
                "ia": ia, "ic": ic, "oa": ctx.buffer(node.outputs[0].name)}
