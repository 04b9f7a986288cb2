"""im2col: the patches of a 2-D convolution as rows of a matrix, so the GEMM unit computes the conv.

Input [1, C, H, W] (NCHW); output [1, Ho*Wo, C*kh*kw], row (ho, wo), column (c, i, j) — the layout of an
ONNX Conv weight flattened to [Co, C*kh*kw]. Padding reads the input's zero point (real zero).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from vaqf.errors import VaqfError
from vaqf.hw.board import Board
from vaqf.hw.cost import Cost
from vaqf.ir import Node, TensorInfo
from vaqf.ops.base import EmitContext, OpSpec, register
from vaqf.ops.strided import COPY_LATENCY


def conv_geometry(shape: tuple[int, ...], attrs: dict[str, Any]) -> tuple[int, int, int, int, int]:
    """(C, H, W, Ho, Wo) of a convolution window sweep over an NCHW input."""
    if len(shape) != 4:
        raise VaqfError(f"im2col needs an NCHW input, got {list(shape)}")
    _, c, h, w = shape
    kh, kw = attrs["kernel"]
    sh, sw = attrs["stride"]
    pt, pl, pb, pr = attrs["pads"]
    ho = (h + pt + pb - kh) // sh + 1
    wo = (w + pl + pr - kw) // sw + 1
    if ho <= 0 or wo <= 0:
        raise VaqfError(f"a {kh}x{kw} window does not fit a {h}x{w} input")
    return c, h, w, ho, wo


def im2col_reference(x: np.ndarray, attrs: dict[str, Any], zero_point: int) -> np.ndarray:
    kh, kw = attrs["kernel"]
    sh, sw = attrs["stride"]
    pt, pl, pb, pr = attrs["pads"]
    b, _, c, h, w = x.shape
    xp = np.pad(x, ((0, 0), (0, 0), (0, 0), (pt, pb), (pl, pr)), constant_values=zero_point)
    win = np.lib.stride_tricks.sliding_window_view(xp, (kh, kw), axis=(3, 4))[:, :, :, ::sh, ::sw]
    # win: [B, 1, C, Ho, Wo, kh, kw] -> [B, 1, Ho, Wo, C, kh, kw]
    ho, wo = win.shape[3], win.shape[4]
    return np.ascontiguousarray(win.transpose(0, 1, 3, 4, 2, 5, 6)).reshape(b, 1, ho * wo, c * kh * kw)


@register
class Im2Col(OpSpec):
    name = "im2col"

    def infer(self, node: Node, inputs: list[TensorInfo]) -> list[TensorInfo]:
        (x,) = inputs
        if x.per_channel:
            raise VaqfError(f"{node.name}: im2col needs a per-tensor scale")
        c, _, _, ho, wo = conv_geometry(x.shape, node.attrs)
        kh, kw = node.attrs["kernel"]
        return [TensorInfo((1, ho * wo, c * kh * kw), x.qtype, x.scale, x.zero_point)]

    def reference(self, node: Node, inputs: list[np.ndarray]) -> list[np.ndarray]:
        return [im2col_reference(inputs[0], node.attrs, node.inputs[0].info.zero_point)]

    def unit(self, node: Node) -> str:
        return "mover"

    def knobs(self, node: Node) -> dict[str, list[int]]:
        return {}

    def cost(self, node: Node, knobs: dict[str, int], board: Board) -> Cost:
        """One output element per cycle (one BRAM read and write), plus the address pipeline.
        LUT/FF: the six nested window counters and the bounds check for padding."""
        return Cost(node.outputs[0].info.size + COPY_LATENCY, lut=500, ff=750)

    def unit_params(self, unit: str, nodes: list[Node], knobs: dict[str, int], word_bits: int) -> dict[str, Any]:
        return {}

    def buffer_kinds(self, node: Node, in_kinds: list[str]) -> list[str]:
        return list(in_kinds)

    def template_params(self, node: Node, ctx: EmitContext) -> dict[str, Any]:
        x = node.inputs[0].info
        c, h, w, ho, wo = conv_geometry(x.shape, node.attrs)
        kh, kw = node.attrs["kernel"]
        sh, sw = node.attrs["stride"]
        pt, pl, _, _ = node.attrs["pads"]
        return {"ident": ctx.ident[node.name], "unit": self.unit(node), "c": c, "h": h, "w": w, "ho": ho, "wo": wo,
                "kh": kh, "kw": kw, "sh": sh, "sw": sw, "pt": pt, "pl": pl, "zp": x.zero_point,
                "in_buf": ctx.buffer(node.inputs[0].name), "out_buf": ctx.buffer(node.outputs[0].name)}
