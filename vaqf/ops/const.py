"""const: a quantized constant tensor (class token, position embedding) loaded from DDR on chip.

The DDR blob is laid out in the on-chip word layout (vaqf.hw.layout at the design's lanes L): every on-chip
word of L lanes is ceil(L / G) DDR words of G = WORD_BITS/32 int32 fields, so the mover reads one burst of
consecutive whole DDR words, one per cycle, and writes each into its word's lanes (HLS-REVIEW M17).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from vaqf.errors import VaqfError
from vaqf.hw.board import Board
from vaqf.hw.layout import lane_knob, last_dim, row_words, rows_of
from vaqf.ir import Node, TensorInfo
from vaqf.ops.base import EmitContext, OpSpec, register
from vaqf.ops.strided import MODE_CONST, MoverSpec, empty_desc


@register
class Const(MoverSpec, OpSpec):
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

    def buffer_kinds(self, node: Node, in_kinds: list[str]) -> list[str]:
        return ["act"]

    def mover_descs(self, node: Node, lanes: int, word_bits: int) -> list[dict[str, Any]]:
        """One load of the whole blob (offset filled in by template_params)."""
        info = node.outputs[0].info
        g = max(1, word_bits // 32)
        parts = -(-lanes // g)
        d = empty_desc(MODE_CONST)
        d.update({"ddr_words": rows_of(info) * row_words(last_dim(info), lanes) * parts, "parts": parts})
        return [d]

    def ddr_blobs(self, node: Node, word_bits: int) -> dict[str, np.ndarray]:
        return self.ddr_blobs_for(node, word_bits, {}, None)

    def ddr_blobs_for(self, node: Node, word_bits: int, knobs: dict[str, int],
                      board: Board | None) -> dict[str, np.ndarray]:
        """The constant as on-chip words (padded rows of L lanes), each word ceil(L/G) DDR words of int32."""
        lanes = lane_knob(knobs) or 1
        info = node.outputs[0].info
        data = np.asarray(node.attrs["data"], dtype=np.int64).reshape(rows_of(info), last_dim(info))
        g = max(1, word_bits // 32)
        parts = -(-lanes // g)
        rw = row_words(last_dim(info), lanes)
        img = np.zeros((data.shape[0], rw, parts * g), dtype=np.int64)
        k = np.arange(data.shape[1])
        img[:, k // lanes, k % lanes] = data
        return {"data": (img.reshape(-1) & 0xFFFFFFFF).astype(np.uint32)}

    def template_params(self, node: Node, ctx: EmitContext) -> dict[str, Any]:
        descs = self.mover_descs(node, ctx.lanes, self.word_bits(ctx))
        descs[0]["offset"] = ctx.offset(node, "data")
        return self.copy_params(node, ctx, descs)
