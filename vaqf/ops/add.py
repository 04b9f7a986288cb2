"""add: elementwise sum of two integer tensors on different scales (residual connections).

  q = saturate(round(((a - zp_a) * m_a + (b - zp_b) * m_b) / 2**S) + zp_out)
with m_a = round(s_a / s_out * 2**S), m_b likewise; S is as large as keeps both multipliers below 2**31.
Inputs broadcast NumPy-style over leading axes (a constant position embedding over samples).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from vaqf.errors import VaqfError
from vaqf.ir import IntType, Node, TensorInfo
from vaqf.ir.qarith import Rounding, round_real, rshift_round, saturate
from vaqf.ops.attrs import Attr, array, integer, qtype
from vaqf.ops.base import OpSpec, register


def add_attrs(sa: float, sb: float, out_scale: float, out_qtype: IntType, out_zp: int, where: str) -> dict[str, Any]:
    ratio = max(sa, sb) / out_scale
    shift = 30 - max(0, math.ceil(math.log2(ratio)) + 1) if ratio > 0 else 30
    if shift < 0:
        raise VaqfError(f"{where}: output scale {out_scale:g} is too fine for its inputs")
    ma = int(round_real(np.float64(sa / out_scale * 2.0**shift)))
    mb = int(round_real(np.float64(sb / out_scale * 2.0**shift)))
    return {"ma": ma, "mb": mb, "shift": shift, "qtype": out_qtype, "scale": np.array([out_scale]),
            "zero_point": int(out_zp)}


def reference(a: np.ndarray, b: np.ndarray, zp_a: int, zp_b: int, ma: int, mb: int, shift: int, zero_point: int,
              lo: int, hi: int) -> np.ndarray:
    """``saturate(round(((a - zp_a) * ma + (b - zp_b) * mb) / 2**shift) + zero_point, lo, hi)``, half to even,
    in int64 (exact: inputs of at most 30 bits times multipliers below 2**31); NumPy broadcasting."""
    s = (np.asarray(a, dtype=np.int64) - int(zp_a)) * int(ma) + (np.asarray(b, dtype=np.int64) - int(zp_b)) * int(mb)
    return saturate(rshift_round(s, int(shift), Rounding.HALF_EVEN) + int(zero_point), int(lo), int(hi))


@register
class Add(OpSpec):
    name = "add"
    unit_kind = "eltwise"  # vaqf/units/eltwise.py
    elementwise = True
    attributes = (
        Attr("ma", integer(lo=0, hi=2**31 - 1), "m_a = round(s_a / s_out * 2**S)"),
        Attr("mb", integer(lo=0, hi=2**31 - 1), "m_b = round(s_b / s_out * 2**S)"),
        Attr("shift", integer(lo=0, hi=62), "S"),
        Attr("qtype", qtype(IntType), "the output's integer type"),
        Attr("scale", array("float", 1), "the output's scale, [1]"),
        Attr("zero_point", integer(), "the output's zero point"),
    )

    def infer(self, node: Node, inputs: list[TensorInfo]) -> list[TensorInfo]:
        a, b = inputs
        if a.shape != b.shape:
            raise VaqfError(f"{node.name}: cannot add {list(a.shape)} and {list(b.shape)}")
        if a.per_channel or b.per_channel:
            raise VaqfError(f"{node.name}: adding per-channel tensors is not supported")
        for x in (a, b):
            if (x.qtype.bits + 1) + 32 > 63:
                raise VaqfError(f"{node.name}: {x.qtype} input too wide to add")
        at = node.attrs
        return [TensorInfo(a.shape, at["qtype"], at["scale"], at["zero_point"])]

    def reference(self, node: Node, inputs: list[np.ndarray]) -> list[np.ndarray]:
        at = node.attrs
        return [reference(inputs[0], inputs[1], node.inputs[0].info.zero_point, node.inputs[1].info.zero_point,
                          at["ma"], at["mb"], at["shift"], at["zero_point"], at["qtype"].min, at["qtype"].max)]
