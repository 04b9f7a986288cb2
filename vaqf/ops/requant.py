"""requant: y = saturate(round((q - zp_in) * m[c] / 2**s[c]) + zp_out), c the last axis.

Rescales an integer tensor to a new scale and bit width with a per-channel dyadic multiplier.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from vaqf.hw.board import Board
from vaqf.hw.cost import Cost
from vaqf.hw.layout import lane_knob, last_dim
from vaqf.ir import Node, TensorInfo
from vaqf.ops.base import EmitContext, Epilogue, OpSpec, register
from vaqf.ops.common import check_product_fits, requant_out_info
from vaqf.ops.eltwise import (
    LANE_CHOICES,
    eltwise_cost,
    eltwise_params,
    eltwise_unit_params,
    requant_tables,
    table_fill_words,
)
from vaqf.sim.qarith import Rounding

if TYPE_CHECKING:
    from vaqf.sim.plans import Scratch


@register
class Requant(OpSpec):
    name = "requant"
    in_place = False  # the unit reads and writes two different buffers (HLS-REVIEW M13, docs/hls-parts)
    elementwise = True

    def infer(self, node: Node, inputs: list[TensorInfo]) -> list[TensorInfo]:
        (x,) = inputs
        check_product_fits(x.qtype.bits + 1, node.attrs["mantissa"], node.name)
        return [requant_out_info(x.shape, node.attrs)]

    def reference(self, node: Node, inputs: list[np.ndarray]) -> list[np.ndarray]:
        from vaqf.sim.plans import reference_of

        return reference_of(self.sim_plan(node), inputs)

    def sim_plan(self, node: Node, scratch: Scratch | None = None) -> Callable[[list[np.ndarray]], list[np.ndarray]]:
        """The GEMM epilogue kernel on the input minus its zero point (the "bias"), channels on the last axis."""
        from vaqf.sim.kernels import epilogue_columns, epilogue_params, gemm_epilogue
        from vaqf.sim.plans import Scratch, storage_dtype

        scratch = scratch if scratch is not None else Scratch()
        a = node.attrs
        c = int(node.inputs[0].info.shape[-1]) if node.inputs[0].info.shape else 1
        cols = epilogue_columns(-int(node.inputs[0].info.zero_point), a["mantissa"], a["shift"], c)
        zp, lo, hi = int(a["zero_point"]), int(a["qtype"].min), int(a["qtype"].max)
        mode, out_dt = Rounding(a["rounding"]).cpp_id, storage_dtype(a["qtype"])
        params = epilogue_params(False, True, zp, lo, hi, mode)

        def run(inputs: list[np.ndarray]) -> list[np.ndarray]:
            x = np.asarray(inputs[0])
            out = scratch.new(x.shape, out_dt)
            gemm_epilogue(np.ascontiguousarray(x).reshape(-1, c), cols, params, out.reshape(-1, c))
            return [out]

        return run

    def unit(self, node: Node) -> str:
        return "eltwise"

    def knobs(self, node: Node) -> dict[str, list[int]]:
        return {"lanes": list(LANE_CHOICES)}

    def cost(self, node: Node, knobs: dict[str, int], board: Board) -> Cost:
        """See ops.eltwise.eltwise_cost: one (A+1) x 32 product per lane, and the channel tables filled
        from DDR before the word loop."""
        return eltwise_cost(node, knobs, board, products=1, table=True)

    def unit_params(self, unit: str, nodes: list[Node], knobs: dict[str, int], word_bits: int) -> dict[str, Any]:
        return eltwise_unit_params(nodes, knobs, word_bits)

    def ddr_blobs(self, node: Node, word_bits: int) -> dict[str, np.ndarray]:
        return self.ddr_blobs_for(node, word_bits, {"lanes": 1}, None)

    def ddr_blobs_for(self, node: Node, word_bits: int, knobs: dict[str, int],
                      board: Board | None) -> dict[str, np.ndarray]:
        """The channel tables for L = the design's lanes, in fill order (ops.eltwise.requant_tables)."""
        lanes = lane_knob(knobs) or 1
        a = node.attrs
        return {"tables": requant_tables(a["mantissa"], a["shift"], last_dim(node.inputs[0].info), lanes, word_bits)}

    def buffer_kinds(self, node: Node, in_kinds: list[str]) -> list[str]:
        return ["act"]

    def template_params(self, node: Node, ctx: EmitContext) -> dict[str, Any]:
        x = node.inputs[0].info
        a = node.attrs
        word_bits = ctx.word_bits
        return eltwise_params(node, ctx, per_lane=1, const_offset=ctx.offset(node, "tables"),
                              fill_words=table_fill_words(last_dim(x), ctx.lanes, word_bits),
                              zp_a=int(x.zero_point), zp_out=int(a["zero_point"]), lo=int(a["qtype"].min),
                              hi=int(a["qtype"].max), rounding=Rounding(a["rounding"]).cpp_id)

    def is_identity(self, node: Node) -> bool:
        x = node.inputs[0].info
        return (x.qtype == node.attrs["qtype"] and x.zero_point == int(node.attrs["zero_point"])
                and not x.per_channel and float(x.scale[0]) == float(node.attrs["scale"][0]))

    def as_epilogue(self, node: Node) -> Epilogue | None:
        if node.inputs[0].info.zero_point != 0:
            return None  # an accumulator has zero point 0; anything else is not a plain epilogue
        keys = ("mantissa", "shift", "zero_point", "qtype", "scale", "rounding")
        return Epilogue("requant", {k: node.attrs[k] for k in keys})
