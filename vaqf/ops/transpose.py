"""transpose: permute axes (head split/merge in attention, patch extraction). Data moves on chip."""

from __future__ import annotations

from typing import Any

import numpy as np

from vaqf.errors import VaqfError
from vaqf.hw.board import Board
from vaqf.hw.cost import Cost
from vaqf.ir import Node, TensorInfo
from vaqf.ops.base import EmitContext, OpSpec, register
from vaqf.ops.strided import MoverSpec, contiguous_strides, copy_cost, copy_desc


@register
class Transpose(MoverSpec, OpSpec):
    name = "transpose"
    moves_elements = True
    permutes_elements = True

    def infer(self, node: Node, inputs: list[TensorInfo]) -> list[TensorInfo]:
        (x,) = inputs
        perm = [int(p) for p in node.attrs["perm"]]
        if sorted(perm) != list(range(len(x.shape))):
            raise VaqfError(f"{node.name}: {perm} is not a permutation of {len(x.shape)} axes")
        if x.per_channel and perm[-1] != len(perm) - 1:
            raise VaqfError(f"{node.name}: a per-channel tensor must keep its last axis")
        return [TensorInfo(tuple(x.shape[p] for p in perm), x.qtype, x.scale, x.zero_point)]

    def reference(self, node: Node, inputs: list[np.ndarray]) -> list[np.ndarray]:
        perm = [int(p) for p in node.attrs["perm"]]
        return [np.ascontiguousarray(np.transpose(inputs[0], [0] + [p + 1 for p in perm]))]

    def cost(self, node: Node, knobs: dict[str, int], board: Board) -> Cost:
        """See ops.strided.copy_cost: one element per cycle."""
        return copy_cost(node.inputs[0].info.size)

    def template_params(self, node: Node, ctx: EmitContext) -> dict[str, Any]:
        x = node.inputs[0].info
        perm = [int(p) for p in node.attrs["perm"]]
        out_shape = [x.shape[p] for p in perm]
        in_strides = contiguous_strides(x.shape)
        desc = copy_desc(out_shape, [in_strides[p] for p in perm], contiguous_strides(tuple(out_shape)))
        return {"ident": ctx.ident[node.name], "unit": self.unit(node), "copies": [desc],
                "in_bufs": [ctx.buffer(node.inputs[0].name)], "out_buf": ctx.buffer(node.outputs[0].name)}

    def merge_with_consumer(self, node: Node, consumer: Node) -> dict[str, Any] | None:
        if consumer.op != node.op:
            return None
        p1 = [int(p) for p in node.attrs["perm"]]
        p2 = [int(p) for p in consumer.attrs["perm"]]
        return {"perm": [p1[p] for p in p2]}

    def is_identity(self, node: Node) -> bool:
        return [int(p) for p in node.attrs["perm"]] == list(range(len(node.attrs["perm"])))
