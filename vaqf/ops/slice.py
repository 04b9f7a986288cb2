"""slice: rows of a tensor along axes with start/stop/step (class-token readout, qkv split)."""

from __future__ import annotations

from typing import Any

import numpy as np

from vaqf.errors import VaqfError
from vaqf.ir import Node, TensorInfo
from vaqf.ops.base import OpSpec, register
from vaqf.ops.strided import MoverSpec, contiguous_strides, plan_copy


def _ranges(node: Node, shape: tuple[int, ...]) -> list[range]:
    """Per axis, the indices kept (attrs: starts/ends/steps already normalized to the shape)."""
    rs = [range(d) for d in shape]
    for a, s, e, st in zip(node.attrs["axes"], node.attrs["starts"], node.attrs["ends"], node.attrs["steps"],
                           strict=True):
        rs[int(a)] = range(int(s), int(e), int(st))
    return rs


@register
class Slice(MoverSpec, OpSpec):
    name = "slice"
    moves_elements = True

    def infer(self, node: Node, inputs: list[TensorInfo]) -> list[TensorInfo]:
        (x,) = inputs
        rs = _ranges(node, x.shape)
        if any(len(r) == 0 for r in rs):
            raise VaqfError(f"{node.name}: slice is empty")
        last = len(x.shape) - 1
        if x.per_channel and last in [int(a) for a in node.attrs["axes"]]:
            raise VaqfError(f"{node.name}: slicing the channel axis of a per-channel tensor")
        return [TensorInfo(tuple(len(r) for r in rs), x.qtype, x.scale, x.zero_point)]

    def reference(self, node: Node, inputs: list[np.ndarray]) -> list[np.ndarray]:
        rs = _ranges(node, inputs[0].shape[1:])
        idx = (slice(None),) + tuple(slice(r.start, r.stop, r.step) for r in rs)
        return [np.ascontiguousarray(inputs[0][idx])]

    def mover_descs(self, node: Node, lanes: int, word_bits: int) -> list[dict[str, Any]]:
        """One copy over the output box with scaled and offset input strides."""
        x = node.inputs[0].info
        rs = _ranges(node, x.shape)
        st = contiguous_strides(x.shape)
        out_shape = tuple(len(r) for r in rs)
        return [plan_copy(list(out_shape), [s * r.step for s, r in zip(st, rs, strict=True)],
                          contiguous_strides(out_shape), sum(s * r.start for s, r in zip(st, rs, strict=True)), 0,
                          x, node.outputs[0].info, lanes, name=node.name)]
