"""const: a quantized constant tensor (class token, position embedding) loaded from DDR on chip.

It runs on the mover (vaqf/units/mover.py, mode CONST), which owns the blob's DDR layout.
"""

from __future__ import annotations

import numpy as np

from vaqf.errors import VaqfError
from vaqf.ir import Node, TensorInfo
from vaqf.ops.attrs import Attr, array, tensor_info
from vaqf.ops.base import OpSpec, register


def reference(data: np.ndarray) -> np.ndarray:
    """The constant's integers as one sample [1, *shape] (int64); consumers broadcast it over the samples."""
    return np.asarray(data, dtype=np.int64)[None]


@register
class Const(OpSpec):
    name = "const"
    unit_kind = "mover"  # vaqf/units/mover.py
    attributes = (
        Attr("data", array("int"), "the constant's integers, shaped as info says"),
        Attr("info", tensor_info, "the constant's shape, type, scale and zero point"),
    )

    def infer(self, node: Node, inputs: list[TensorInfo]) -> list[TensorInfo]:
        if inputs:
            raise VaqfError(f"{node.name}: const takes no inputs")
        info: TensorInfo = node.attrs["info"]
        data = node.attrs["data"]
        if tuple(data.shape) != info.shape or not info.qtype.allowed(data):
            raise VaqfError(f"{node.name}: constant data does not match {info}")
        return [TensorInfo(info.shape, info.qtype, info.scale, info.zero_point)]

    def reference(self, node: Node, inputs: list[np.ndarray]) -> list[np.ndarray]:
        return [reference(node.attrs["data"])]
