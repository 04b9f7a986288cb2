"""slice: rows of a tensor along axes with start/stop/step (class-token readout, qkv split)."""

from __future__ import annotations

import numpy as np

from vaqf.errors import VaqfError
from vaqf.ir import Node, TensorInfo
from vaqf.ops.base import OpSpec, register


def slice_ranges(node: Node, shape: tuple[int, ...]) -> list[range]:
    """Per axis, the indices kept (attrs: starts/ends/steps already normalized to the shape)."""
    rs = [range(d) for d in shape]
    for a, s, e, st in zip(node.attrs["axes"], node.attrs["starts"], node.attrs["ends"], node.attrs["steps"],
                           strict=True):
        rs[int(a)] = range(int(s), int(e), int(st))
    return rs


@register
class Slice(OpSpec):
    name = "slice"
    unit_kind = "mover"  # vaqf/units/mover.py
    moves_elements = True

    def infer(self, node: Node, inputs: list[TensorInfo]) -> list[TensorInfo]:
        (x,) = inputs
        rs = slice_ranges(node, x.shape)
        if any(len(r) == 0 for r in rs):
            raise VaqfError(f"{node.name}: slice is empty")
        last = len(x.shape) - 1
        if x.per_channel and last in [int(a) for a in node.attrs["axes"]]:
            raise VaqfError(f"{node.name}: slicing the channel axis of a per-channel tensor")
        return [TensorInfo(tuple(len(r) for r in rs), x.qtype, x.scale, x.zero_point)]

    def reference(self, node: Node, inputs: list[np.ndarray]) -> list[np.ndarray]:
        rs = slice_ranges(node, inputs[0].shape[1:])
        idx = (slice(None),) + tuple(slice(r.start, r.stop, r.step) for r in rs)
        return [np.ascontiguousarray(inputs[0][idx])]
