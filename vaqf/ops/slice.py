"""slice: rows of a tensor along axes with start/stop/step (class-token readout, qkv split)."""

from __future__ import annotations

from typing import Any

import numpy as np

from vaqf.errors import VaqfError
from vaqf.hw.board import Board
from vaqf.hw.cost import Cost
from vaqf.ir import Node, TensorInfo
from vaqf.ops.base import EmitContext, OpSpec, register
from vaqf.ops.strided import MoverSpec, contiguous_strides, copy_cost, copy_desc


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

    def cost(self, node: Node, knobs: dict[str, int], board: Board) -> Cost:
        """See ops.strided.copy_cost: one element per cycle of the output."""
        return copy_cost(node.outputs[0].info.size)

    def template_params(self, node: Node, ctx: EmitContext) -> dict[str, Any]:
        x = node.inputs[0].info
        rs = _ranges(node, x.shape)
        st = contiguous_strides(x.shape)
        out_shape = tuple(len(r) for r in rs)
        desc = copy_desc(list(out_shape), [s * r.step for s, r in zip(st, rs, strict=True)],
                         contiguous_strides(out_shape), sum(s * r.start for s, r in zip(st, rs, strict=True)))
        return {"ident": ctx.ident[node.name], "unit": self.unit(node), "copies": [desc],
                "in_bufs": [ctx.buffer(node.inputs[0].name)], "out_buf": ctx.buffer(node.outputs[0].name)}
