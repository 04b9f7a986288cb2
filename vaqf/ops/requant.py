"""requant: y = saturate(round((q - zp_in) * m[c] / 2**s[c]) + zp_out), c the last axis.

Rescales an integer tensor to a new scale and bit width with a per-channel dyadic multiplier.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from vaqf.ir import Node, TensorInfo
from vaqf.ops.base import Epilogue, OpSpec, register
from vaqf.ops.common import check_product_fits, requant_out_info
from vaqf.sim.qarith import Rounding

if TYPE_CHECKING:
    from vaqf.sim.plans import Scratch


@register
class Requant(OpSpec):
    name = "requant"
    unit_kind = "eltwise"  # vaqf/units/eltwise.py
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
        from vaqf.sim.loops import epilogue_columns, epilogue_params, gemm_epilogue
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

    def is_identity(self, node: Node) -> bool:
        x = node.inputs[0].info
        return (x.qtype == node.attrs["qtype"] and x.zero_point == int(node.attrs["zero_point"])
                and not x.per_channel and float(x.scale[0]) == float(node.attrs["scale"][0]))

    def as_epilogue(self, node: Node) -> Epilogue | None:
        if node.inputs[0].info.zero_point != 0:
            return None  # an accumulator has zero point 0; anything else is not a plain epilogue
        keys = ("mantissa", "shift", "zero_point", "qtype", "scale", "rounding")
        return Epilogue("requant", {k: node.attrs[k] for k in keys})
