"""const: a quantized constant tensor (class token, position embedding) loaded from DDR on chip.

It runs on the mover (vaqf/units/mover.py, mode CONST), which owns the blob's DDR layout.
"""

from __future__ import annotations

import numpy as np

from vaqf.errors import VaqfError
from vaqf.ir import Node, TensorInfo
from vaqf.ops.base import OpSpec, register


@register
class Const(OpSpec):
    name = "const"
    unit_kind = "mover"  # vaqf/units/mover.py

    def infer(self, node: Node, inputs: list[TensorInfo]) -> list[TensorInfo]:
        if inputs:
            raise VaqfError(f"{node.name}: const takes no inputs")
        info: TensorInfo = node.attrs["info"]
        data = node.attrs["data"]
        if tuple(data.shape) != info.shape or not info.qtype.allowed(data):
            raise VaqfError(f"{node.name}: constant data does not match {info}")
        return [TensorInfo(info.shape, info.qtype, info.scale, info.zero_point)]

    def reference(self, node: Node, inputs: list[np.ndarray]) -> list[np.ndarray]:
        data = np.asarray(node.attrs["data"], dtype=np.int64)
        return [data[None]]  # one copy, broadcast over the samples by consumers
