"""add: elementwise sum of two integer tensors on different scales (residual connections).

  q = saturate(round(((a - zp_a) * m_a + (b - zp_b) * m_b) / 2**S) + zp_out)
with m_a = round(s_a / s_out * 2**S), m_b likewise; S is as large as keeps both multipliers below 2**31.
Inputs broadcast NumPy-style over leading axes (a constant position embedding over samples).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from vaqf.errors import VaqfError
from vaqf.ir import IntType, Node, TensorInfo
from vaqf.ops.base import OpSpec, register
from vaqf.sim.qarith import round_real

if TYPE_CHECKING:
    from vaqf.sim.plans import Scratch


def add_attrs(sa: float, sb: float, out_scale: float, out_qtype: IntType, out_zp: int, where: str) -> dict[str, Any]:
    ratio = max(sa, sb) / out_scale
    shift = 30 - max(0, math.ceil(math.log2(ratio)) + 1) if ratio > 0 else 30
    if shift < 0:
        raise VaqfError(f"{where}: output scale {out_scale:g} is too fine for its inputs")
    ma = int(round_real(np.float64(sa / out_scale * 2.0**shift)))
    mb = int(round_real(np.float64(sb / out_scale * 2.0**shift)))
    return {"ma": ma, "mb": mb, "shift": shift, "qtype": out_qtype, "scale": np.array([out_scale]),
            "zero_point": int(out_zp)}


@register
class Add(OpSpec):
    name = "add"
    unit_kind = "eltwise"  # vaqf/units/eltwise.py
    elementwise = True

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
        from vaqf.sim.plans import reference_of

        return reference_of(self.sim_plan(node), inputs)

    def sim_plan(self, node: Node, scratch: Scratch | None = None) -> Callable[[list[np.ndarray]], list[np.ndarray]]:
        """One compiled pass (:func:`vaqf.sim.loops.add_scaled`); a single-sample input (a constant)
        broadcasts over the samples."""
        from vaqf.sim.loops import add_scaled
        from vaqf.sim.plans import Scratch, storage_dtype

        scratch = scratch if scratch is not None else Scratch()
        at = node.attrs
        zpa, zpb = int(node.inputs[0].info.zero_point), int(node.inputs[1].info.zero_point)
        ma, mb, shift, zp = int(at["ma"]), int(at["mb"]), int(at["shift"]), int(at["zero_point"])
        lo, hi = int(at["qtype"].min), int(at["qtype"].max)
        out_dt = storage_dtype(at["qtype"])

        def run(inputs: list[np.ndarray]) -> list[np.ndarray]:
            a, b = (np.asarray(x) for x in inputs)
            shape = np.broadcast_shapes(a.shape, b.shape)
            if a.shape[1:] != shape[1:] or b.shape[1:] != shape[1:]:  # only the sample axis broadcasts cheaply
                a, b = np.broadcast_to(a, shape).copy(), np.broadcast_to(b, shape).copy()
            out = scratch.new(shape, out_dt)
            rows = shape[0]
            add_scaled(np.ascontiguousarray(a).reshape(a.shape[0], -1), np.ascontiguousarray(b).reshape(b.shape[0], -1),
                       zpa, zpb, ma, mb, shift, zp, lo, hi, out.reshape(rows, -1))
            return [out]

        return run
