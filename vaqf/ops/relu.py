"""relu: y = max(q, zero_point), elementwise, same type and scale."""

from __future__ import annotations

import numpy as np

from vaqf.ir import Node, TensorInfo
from vaqf.ops.base import Epilogue, OpSpec, register


def reference(x: np.ndarray, zero_point: int) -> np.ndarray:
    """``max(x, zero_point)``: the real zero is the zero point."""
    return np.maximum(x, int(zero_point))


@register
class Relu(OpSpec):
    name = "relu"
    unit_kind = "eltwise"  # vaqf/units/eltwise.py
    elementwise = True

    def infer(self, node: Node, inputs: list[TensorInfo]) -> list[TensorInfo]:
        (x,) = inputs
        return [TensorInfo(x.shape, x.qtype, x.scale, x.zero_point)]

    def reference(self, node: Node, inputs: list[np.ndarray]) -> list[np.ndarray]:
        return [reference(inputs[0], node.inputs[0].info.zero_point)]

    def as_epilogue(self, node: Node) -> Epilogue | None:
        return Epilogue("relu")
