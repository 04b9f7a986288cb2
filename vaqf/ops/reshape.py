"""reshape: the same integers under a new shape (Flatten, Reshape). Row-major data does not move."""

from __future__ import annotations

from typing import Any

import numpy as np

from vaqf.errors import VaqfError
from vaqf.hw.board import Board
from vaqf.hw.cost import Cost
from vaqf.ir import Node, TensorInfo
from vaqf.ops.base import EmitContext, OpSpec, register


@register
class Reshape(OpSpec):
    name = "reshape"
    moves_elements = True
    aliases_input = True
    permutes_elements = True

    def infer(self, node: Node, inputs: list[TensorInfo]) -> list[TensorInfo]:
        (x,) = inputs
        shape = tuple(int(d) for d in node.attrs["shape"])
        if int(np.prod(shape, dtype=np.int64)) != x.size:
            raise VaqfError(f"{node.name}: cannot reshape {list(x.shape)} to {list(shape)}")
        if x.per_channel and shape[-1] != x.shape[-1]:
            raise VaqfError(f"{node.name}: reshaping a per-channel tensor must keep its last axis")
        return [TensorInfo(shape, x.qtype, x.scale, x.zero_point)]

    def reference(self, node: Node, inputs: list[np.ndarray]) -> list[np.ndarray]:
        x = inputs[0]
        return [x.reshape((x.shape[0],) + tuple(node.attrs["shape"]))]

    def unit(self, node: Node) -> str:
        return "none"

    def knobs(self, node: Node) -> dict[str, list[int]]:
        return {}

    def cost(self, node: Node, knobs: dict[str, int], board: Board) -> Cost:
        """Zero by construction, not by default: the output aliases the input's row-major buffer,
        so no hardware is generated and no cycle is spent (see aliases_input)."""
        return Cost()

    def unit_params(self, unit: str, nodes: list[Node], knobs: dict[str, int], word_bits: int) -> dict[str, Any]:
        return {}

    def buffer_kinds(self, node: Node, in_kinds: list[str]) -> list[str]:
        return list(in_kinds)

    def merge_with_consumer(self, node: Node, consumer: Node) -> dict[str, Any] | None:
        if consumer.op != node.op:
            return None
        return {"shape": list(consumer.attrs["shape"])}

    def is_identity(self, node: Node) -> bool:
        return tuple(node.attrs["shape"]) == node.inputs[0].info.shape

    def template_params(self, node: Node, ctx: EmitContext) -> dict[str, Any]:
        return {"ident": ctx.ident[node.name]}
