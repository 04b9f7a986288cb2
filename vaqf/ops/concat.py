"""concat: join tensors of identical type and scale along an axis (class token + patch tokens)."""

from __future__ import annotations

import numpy as np

from vaqf.errors import VaqfError
from vaqf.ir import Node, TensorInfo
from vaqf.ops.attrs import Attr, integer
from vaqf.ops.base import OpSpec, register


def reference(inputs: list[np.ndarray], axis: int) -> np.ndarray:
    """The inputs joined along IR axis ``axis`` (array axis ``axis + 1``: the samples come first); a constant
    (one sample) broadcasts over the samples."""
    b = max(a.shape[0] for a in inputs)
    return np.concatenate([np.broadcast_to(a, (b,) + a.shape[1:]) for a in inputs], axis=int(axis) + 1)


@register
class Concat(OpSpec):
    name = "concat"
    unit_kind = "mover"  # vaqf/units/mover.py
    attributes = (Attr("axis", integer(lo=0), "the IR axis joined along"),)

    def infer(self, node: Node, inputs: list[TensorInfo]) -> list[TensorInfo]:
        axis = int(node.attrs["axis"])
        first = inputs[0]
        if axis < 0 or axis >= len(first.shape):
            raise VaqfError(f"{node.name}: concat axis {axis} out of range")
        for x in inputs[1:]:
            if len(x.shape) != len(first.shape) or any(a != b for i, (a, b) in enumerate(
                    zip(x.shape, first.shape, strict=True)) if i != axis):
                raise VaqfError(f"{node.name}: shapes {[list(i.shape) for i in inputs]} do not concatenate")
            if x.qtype != first.qtype or x.zero_point != first.zero_point or not np.array_equal(x.scale, first.scale):
                raise VaqfError(f"{node.name}: concatenated tensors must share type, scale and zero point")
        shape = list(first.shape)
        shape[axis] = sum(x.shape[axis] for x in inputs)
        return [TensorInfo(tuple(shape), first.qtype, first.scale, first.zero_point)]

    def reference(self, node: Node, inputs: list[np.ndarray]) -> list[np.ndarray]:
        return [reference(inputs, node.attrs["axis"])]
