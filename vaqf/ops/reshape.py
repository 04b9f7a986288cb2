"""reshape: the same integers under a new shape (Flatten, Reshape).

On the mover (vaqf/units/mover.py): when both shapes put every element at the same (word, lane)
(vaqf.hw.layout.same_layout: the same row length, or both rows whole words) the output shares the input's
buffer (vaqf.hw.memory.aliases), costs no cycle and emits no call; otherwise the padded rows differ and the
reshape is a copy on the mover. The unit is "mover" either way, so it does not depend on the lane count.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from vaqf.errors import VaqfError
from vaqf.ir import Node, TensorInfo
from vaqf.ops.attrs import Attr, int_list
from vaqf.ops.base import OpSpec, register


def reference(x: np.ndarray, shape: list[int]) -> np.ndarray:
    """The same integers in row-major order under the IR shape ``shape`` (per sample)."""
    return x.reshape((x.shape[0],) + tuple(int(d) for d in shape))


@register
class Reshape(OpSpec):
    name = "reshape"
    unit_kind = "mover"  # vaqf/units/mover.py
    moves_elements = True
    aliases_input = True
    permutes_elements = True
    attributes = (Attr("shape", int_list(lo=1), "the output's IR shape"),)

    def infer(self, node: Node, inputs: list[TensorInfo]) -> list[TensorInfo]:
        (x,) = inputs
        shape = tuple(int(d) for d in node.attrs["shape"])
        if int(np.prod(shape, dtype=np.int64)) != x.size:
            raise VaqfError(f"{node.name}: cannot reshape {list(x.shape)} to {list(shape)}")
        if x.per_channel and shape[-1] != x.shape[-1]:
            raise VaqfError(f"{node.name}: reshaping a per-channel tensor must keep its last axis")
        return [TensorInfo(shape, x.qtype, x.scale, x.zero_point)]

    def reference(self, node: Node, inputs: list[np.ndarray]) -> list[np.ndarray]:
        return [reference(inputs[0], node.attrs["shape"])]

    def merge_with_consumer(self, node: Node, consumer: Node) -> dict[str, Any] | None:
        if consumer.op != node.op:
            return None
        return {"shape": list(consumer.attrs["shape"])}

    def is_identity(self, node: Node) -> bool:
        return tuple(node.attrs["shape"]) == node.inputs[0].info.shape
