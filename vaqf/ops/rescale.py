"""rescale: the same integers with the scale multiplied by a positive constant (x * c, x / c).

Pure relabelling: no data moves and no hardware exists, like reshape.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from vaqf.errors import VaqfError
from vaqf.ir import Node, TensorInfo
from vaqf.ops.attrs import Attr, real
from vaqf.ops.base import OpSpec, register


def reference(x: np.ndarray) -> np.ndarray:
    """The same integers (only the scale, a compile-time number, changes)."""
    return x


@register
class Rescale(OpSpec):
    name = "rescale"
    unit_kind = None  # no unit: no call, no cycle, no hardware (only the scale, a compile-time number, changes)
    aliases_input = True
    attributes = (Attr("factor", real(positive=True), "the scale is multiplied by it"),)

    def infer(self, node: Node, inputs: list[TensorInfo]) -> list[TensorInfo]:
        (x,) = inputs
        f = float(node.attrs["factor"])
        if not f > 0:
            raise VaqfError(f"{node.name}: rescale factor must be positive, got {f}")
        return [TensorInfo(x.shape, x.qtype, x.scale * f, x.zero_point)]

    def reference(self, node: Node, inputs: list[np.ndarray]) -> list[np.ndarray]:
        return [reference(inputs[0])]

    def is_identity(self, node: Node) -> bool:
        return float(node.attrs["factor"]) == 1.0

    def merge_with_consumer(self, node: Node, consumer: Node) -> dict[str, Any] | None:
        if consumer.op != node.op:
            return None
        return {"factor": float(node.attrs["factor"]) * float(consumer.attrs["factor"])}
