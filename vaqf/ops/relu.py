"""relu: y = max(q, zero_point), elementwise, same type and scale."""

from __future__ import annotations

from typing import Any

import numpy as np

from vaqf.hw.board import Board
from vaqf.hw.cost import Cost
from vaqf.ir import Node, TensorInfo
from vaqf.ops.base import EmitContext, Epilogue, OpSpec, register
from vaqf.ops.eltwise import LANE_CHOICES, eltwise_cost, eltwise_params, eltwise_unit_params


@register
class Relu(OpSpec):
    name = "relu"
    in_place = False  # the unit reads and writes two different buffers (HLS-REVIEW M13, docs/hls-parts)
    elementwise = True

    def infer(self, node: Node, inputs: list[TensorInfo]) -> list[TensorInfo]:
        (x,) = inputs
        return [TensorInfo(x.shape, x.qtype, x.scale, x.zero_point)]

    def reference(self, node: Node, inputs: list[np.ndarray]) -> list[np.ndarray]:
        return [np.maximum(inputs[0], node.inputs[0].info.zero_point)]

    def unit(self, node: Node) -> str:
        return "eltwise"

    def knobs(self, node: Node) -> dict[str, list[int]]:
        return {"lanes": list(LANE_CHOICES)}

    def cost(self, node: Node, knobs: dict[str, int], board: Board) -> Cost:
        """See ops.eltwise.eltwise_cost: relu runs on the shared datapath as a clamp from below at the zero
        point (m = 1, s = 0), one product per lane."""
        return eltwise_cost(node, knobs, board, products=1, table=False)

    def unit_params(self, unit: str, nodes: list[Node], knobs: dict[str, int], word_bits: int) -> dict[str, Any]:
        return eltwise_unit_params(nodes, knobs, word_bits)

    def buffer_kinds(self, node: Node, in_kinds: list[str]) -> list[str]:
        return list(in_kinds)

    def template_params(self, node: Node, ctx: EmitContext) -> dict[str, Any]:
        x = node.inputs[0].info
        return eltwise_params(node, ctx, lo=int(x.zero_point), hi=int(x.qtype.max))

    def as_epilogue(self, node: Node) -> Epilogue | None:
        return Epilogue("relu")
