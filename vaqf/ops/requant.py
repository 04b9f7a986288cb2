"""requant: y = saturate(round(((q - zp_in) * m[c] + o[c]) / 2**s[c]) + zp_out), c the last axis.

Rescales an integer tensor to a new scale and bit width with a per-channel dyadic multiplier; the optional
offset o (default 0) is a bias finer than one input step, which a BatchNormalization folded into the dense
layer before it leaves (fused into that layer's epilogue only). A bipolar requantization (QONNX BipolarQuant)
is m = 2, s = 0, zp_out = 1 into [-1, 1]: the sign, with output zero point 0.
"""

from __future__ import annotations

import numpy as np

from vaqf.ir import Node, TensorInfo
from vaqf.ir.qarith import Rounding, requantize
from vaqf.ops.attrs import requant_fields
from vaqf.ops.base import Epilogue, OpSpec, register
from vaqf.ops.common import check_product_fits, requant_out_info


def reference(x: np.ndarray, zp_in: int, mantissa: np.ndarray, shift: np.ndarray, zero_point: int, lo: int, hi: int,
              rounding: str, offset: np.ndarray | None = None) -> np.ndarray:
    """``saturate(round(((x - zp_in) * m[c] + o[c]) / 2**s[c]) + zero_point, lo, hi)`` with c the last axis (one
    multiplier broadcasts; the offset o, a bias finer than one input step, defaults to 0), rounding as named
    (vaqf.ir.qarith.Rounding), in int64 (the product is checked to fit 64 bits when the node is typed)."""
    return requantize(np.asarray(x, dtype=np.int64) - int(zp_in), mantissa, shift, int(zero_point), int(lo), int(hi),
                      Rounding(rounding), offset=offset)


@register
class Requant(OpSpec):
    name = "requant"
    unit_kind = "eltwise"  # vaqf/units/eltwise.py
    elementwise = True
    attributes = requant_fields()

    def infer(self, node: Node, inputs: list[TensorInfo]) -> list[TensorInfo]:
        (x,) = inputs
        check_product_fits(x.qtype.bits + 1, node.attrs["mantissa"], node.name)
        return [requant_out_info(x.shape, node.attrs)]

    def reference(self, node: Node, inputs: list[np.ndarray]) -> list[np.ndarray]:
        a = node.attrs
        return [reference(inputs[0], node.inputs[0].info.zero_point, a["mantissa"], a["shift"], a["zero_point"],
                          a["qtype"].min, a["qtype"].max, a["rounding"], a.get("offset"))]

    def is_identity(self, node: Node) -> bool:
        x = node.inputs[0].info
        return (not node.attrs.get("bipolar") and node.attrs.get("offset") is None and x.qtype == node.attrs["qtype"]
                and x.zero_point == int(node.attrs["zero_point"])
                and not x.per_channel and float(x.scale[0]) == float(node.attrs["scale"][0]))

    def as_epilogue(self, node: Node) -> Epilogue | None:
        if node.inputs[0].info.zero_point != 0:
            return None  # an accumulator has zero point 0; anything else is not a plain epilogue
        keys = ("mantissa", "shift", "zero_point", "qtype", "scale", "rounding", "bipolar", "offset")
        return Epilogue("requant", {k: node.attrs[k] for k in keys if k in node.attrs})
