"""concat: join tensors of identical type and scale along an axis (class token + patch tokens)."""

from __future__ import annotations

from typing import Any

import numpy as np

from vaqf.errors import VaqfError
from vaqf.hw.board import Board
from vaqf.hw.cost import Cost
from vaqf.ir import Node, TensorInfo
from vaqf.ops.base import EmitContext, OpSpec, register
from vaqf.ops.strided import contiguous_strides, copy_cost, copy_desc


@register
class Concat(OpSpec):
    name = "concat"

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
        b = max(a.shape[0] for a in inputs)  # constants carry a single sample
        arrays = [np.broadcast_to(a, (b,) + a.shape[1:]) for a in inputs]
        return [np.concatenate(arrays, axis=int(node.attrs["axis"]) + 1)]

    def unit(self, node: Node) -> str:
        return "mover"

    def knobs(self, node: Node) -> dict[str, list[int]]:
        return {}

    def cost(self, node: Node, knobs: dict[str, int], board: Board) -> Cost:
        """See ops.strided.copy_cost: every input element copied once, one copy per input."""
        return copy_cost(node.outputs[0].info.size, len(node.inputs))

    def unit_params(self, unit: str, nodes: list[Node], knobs: dict[str, int], word_bits: int) -> dict[str, Any]:
        return {}

    def buffer_kinds(self, node: Node, in_kinds: list[str]) -> list[str]:
        if len(set(in_kinds)) != 1:
            raise VaqfError(f"{node.name}: concatenating activations with accumulators")
        return [in_kinds[0]]

    def template_params(self, node: Node, ctx: EmitContext) -> dict[str, Any]:
        axis = int(node.attrs["axis"])
        out = node.outputs[0].info
        ost = contiguous_strides(out.shape)
        copies, pos = [], 0
        for v in node.inputs:
            s = v.info.shape
            copies.append(copy_desc(list(s), contiguous_strides(s), ost, 0, pos * ost[axis]))
            pos += s[axis]
        return {"ident": ctx.ident[node.name], "unit": self.unit(node), "copies": copies,
                "in_bufs": [ctx.buffer(v.name) for v in node.inputs], "out_buf": ctx.buffer(node.outputs[0].name)}
