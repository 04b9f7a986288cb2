"""const: a quantized constant tensor (class token, position embedding) loaded from DDR on chip."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from vaqf.errors import VaqfError
from vaqf.hw.board import Board
from vaqf.hw.cost import Cost
from vaqf.ir import Node, TensorInfo
from vaqf.ops.base import EmitContext, OpSpec, register
from vaqf.ops.packing import pack_int32


@register
class Const(OpSpec):
    name = "const"

    def infer(self, node: Node, inputs: list[TensorInfo]) -> list[TensorInfo]:
        if inputs:
            raise VaqfError(f"{node.name}: const takes no inputs")
        info: TensorInfo = node.attrs["info"]
        data = node.attrs["data"]
        if tuple(data.shape) != info.shape or not info.qtype.allowed(data):
            raise VaqfError(f"{node.name}: constant data does not match {info}")
        return [TensorInfo(info.shape, info.qtype, info.scale, info.zero_point)]

    def reference(self, node: Node, inputs: list[np.ndarray]) -> list[np.ndarray]:
        data = np.asarray(node.attrs["data"], dtype=np.int64)
        return [data[None]]  # one copy, broadcast over the samples by consumers

    def unit(self, node: Node) -> str:
        return "mover"

    def knobs(self, node: Node) -> dict[str, list[int]]:
        return {}

    def cost(self, node: Node, knobs: dict[str, int], board: Board) -> Cost:
        """DDR burst of 4 bytes per element at the board's DDR rate, plus the AXI round trip."""
        n = node.attrs["data"].size
        return Cost(64 + math.ceil(4 * n / board.ddr_bytes_per_cycle), lut=450, ff=700, ddr_bytes=4 * n)

    def unit_params(self, unit: str, nodes: list[Node], knobs: dict[str, int], word_bits: int) -> dict[str, Any]:
        return {}

    def buffer_kinds(self, node: Node, in_kinds: list[str]) -> list[str]:
        return ["act"]

    def ddr_blobs(self, node: Node, word_bits: int) -> dict[str, np.ndarray]:
        return {"data": pack_int32(node.attrs["data"].reshape(-1), word_bits)}

    def template_params(self, node: Node, ctx: EmitContext) -> dict[str, Any]:
        return {"ident": ctx.ident[node.name], "offset": ctx.offset(node, "data"), "n": int(node.attrs["data"].size),
                "out_buf": ctx.buffer(node.outputs[0].name)}
