"""requant: y = saturate(round((q - zp_in) * m[c] / 2**s[c]) + zp_out), c the last axis.

Rescales an integer tensor to a new scale and bit width with a per-channel dyadic multiplier.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from vaqf.hw.board import Board
from vaqf.hw.cost import Cost
from vaqf.ir import Node, TensorInfo
from vaqf.ops.base import EmitContext, Epilogue, OpSpec, register
from vaqf.ops.common import check_product_fits, requant_out_info
from vaqf.ops.eltwise import LANE_CHOICES, eltwise_cost
from vaqf.ops.packing import pack_int32
from vaqf.sim.qarith import Rounding

if TYPE_CHECKING:
    from vaqf.sim.plans import Scratch


@register
class Requant(OpSpec):
    name = "requant"
    in_place = True
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
        """See ops.eltwise.eltwise_cost: a 32x24 multiply (2 DSP48E2) and a rounding shift + clamp
        (~3 LUT per bit) per lane."""
        x = node.inputs[0].info
        c = eltwise_cost(x.size, int(knobs["lanes"]), x.qtype.bits, 3.0, 2)
        return Cost(c.cycles, c.lut, c.ff, c.dsp, c.bram18, c.uram, 8 * x.shape[-1])

    def unit_params(self, unit: str, nodes: list[Node], knobs: dict[str, int], word_bits: int) -> dict[str, Any]:
        return {"lanes": int(knobs["lanes"])}

    def ddr_blobs(self, node: Node, word_bits: int) -> dict[str, np.ndarray]:
        return {"mantissa": pack_int32(node.attrs["mantissa"], word_bits),
                "shift": pack_int32(node.attrs["shift"], word_bits)}

    def buffer_kinds(self, node: Node, in_kinds: list[str]) -> list[str]:
        return ["act"]

    def template_params(self, node: Node, ctx: EmitContext) -> dict[str, Any]:
        x = node.inputs[0].info
        a = node.attrs
        return {"ident": ctx.ident[node.name], "unit": self.unit(node), "n": x.size,
                "channels": int(a["mantissa"].size),
                "mant_offset": ctx.offset(node, "mantissa"), "shift_offset": ctx.offset(node, "shift"),
                "zp_in": x.zero_point, "zp_out": int(a["zero_point"]), "out_lo": int(a["qtype"].min),
                "out_hi": int(a["qtype"].max), "rounding": Rounding(a["rounding"]).cpp_id,
                "in_buf": ctx.buffer(node.inputs[0].name), "out_buf": ctx.buffer(node.outputs[0].name)}

    def is_identity(self, node: Node) -> bool:
        x = node.inputs[0].info
        return (x.qtype == node.attrs["qtype"] and x.zero_point == int(node.attrs["zero_point"])
                and not x.per_channel and float(x.scale[0]) == float(node.attrs["scale"][0]))

    def as_epilogue(self, node: Node) -> Epilogue | None:
        if node.inputs[0].info.zero_point != 0:
            return None  # an accumulator has zero point 0; anything else is not a plain epilogue
        keys = ("mantissa", "shift", "zero_point", "qtype", "scale", "rounding")
        return Epilogue("requant", {k: node.attrs[k] for k in keys})
