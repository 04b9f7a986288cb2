"""im2col: the patches of a 2-D convolution as rows of a matrix, so the GEMM unit computes the conv.

Input [1, C, H, W] (NCHW); output [1, Ho*Wo, C*kh*kw], row (ho, wo), column (c, i, j) — the layout of an
ONNX Conv weight flattened to [Co, C*kh*kw]. Padding reads the input's zero point (real zero).
With the optional attribute ``channels`` (input channel indices, set by passes.sparsity when the GEMM
reading the patches has no use for the other channels) only those channels are swept: C becomes
len(channels) in the output layout.

On the mover (mode IM2COL): the first word of every swept channel (chans[c] * H * ceil(W/L)) is a DDR blob
read by one burst into a table of WORD_BITS/32 banks; the window loop then moves one output element per
cycle (an L:1 lane multiplexer on the read, a lane decode on the write), the padding giving the zero point.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from vaqf.errors import VaqfError
from vaqf.hw.board import Board
from vaqf.hw.layout import row_words
from vaqf.ir import Node, TensorInfo
from vaqf.ops.base import EmitContext, Known, OpSpec, register
from vaqf.ops.packing import pack_int32
from vaqf.ops.strided import MODE_IM2COL, MoverSpec, empty_desc


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
class Im2Col(MoverSpec, OpSpec):
    name = "im2col"

    def infer(self, node: Node, inputs: list[TensorInfo]) -> list[TensorInfo]:
        (x,) = inputs
        if x.per_channel:
            raise VaqfError(f"{node.name}: im2col needs a per-tensor scale")
        c, _, _, ho, wo = conv_geometry(x.shape, node.attrs)
        kh, kw = node.attrs["kernel"]
        chans = node.attrs.get("channels")
        if chans is not None:
            chans = np.asarray(chans)
            if chans.size == 0 or chans.min() < 0 or chans.max() >= c or np.any(np.diff(chans) <= 0):
                raise VaqfError(f"{node.name}: channel table {chans.tolist()} is not increasing within 0..{c - 1}")
            c = chans.size
        return [TensorInfo((1, ho * wo, c * kh * kw), x.qtype, x.scale, x.zero_point)]

    def reference(self, node: Node, inputs: list[np.ndarray]) -> list[np.ndarray]:
        return [im2col_reference(_selected(node, inputs[0]), node.attrs, node.inputs[0].info.zero_point)]

    def known_outputs(self, node: Node, known: list[Known | None]) -> list[Known | None]:
        """Each patch element is one input element, or the zero point (known) in the padding."""
        (k,) = known
        if k is None:
            return [None]
        mask = im2col_reference(_selected(node, k.mask.astype(np.int8)), node.attrs, 1).astype(bool)
        values = im2col_reference(_selected(node, k.values), node.attrs, node.inputs[0].info.zero_point)
        return [Known(mask, values)]

    def select_output_columns(self, node: Node, needed: np.ndarray) -> tuple[dict[str, Any], np.ndarray] | None:
        """Sweep only the input channels with a needed column (a channel's kh*kw taps go together)."""
        kh, kw = node.attrs["kernel"]
        taps = kh * kw
        chans = _channels(node)
        used = needed.reshape(chans.size, taps).any(axis=1)
        if used.all() or not used.any():
            return None  # nothing to drop, or a GEMM with no live column (its rows are constant anyway)
        attrs = dict(node.attrs)
        attrs["channels"] = chans[used].astype(np.int64)
        kept = (np.flatnonzero(used)[:, None] * taps + np.arange(taps)[None, :]).reshape(-1)
        return attrs, kept

    def densified_attrs(self, node: Node) -> dict[str, Any] | None:
        if node.attrs.get("channels") is None:
            return None
        return {k: v for k, v in node.attrs.items() if k != "channels"}

    def buffer_kinds(self, node: Node, in_kinds: list[str]) -> list[str]:
        return list(in_kinds)

    def mover_descs(self, node: Node, lanes: int, word_bits: int) -> list[dict[str, Any]]:
        """The window sweep; the channel table's DDR offset is filled in by template_params."""
        x = node.inputs[0].info
        _, h, w, ho, wo = conv_geometry(x.shape, node.attrs)
        kh, kw = node.attrs["kernel"]
        sh, sw = node.attrs["stride"]
        pt, pl, _, _ = node.attrs["pads"]
        c = int(_channels(node).size)
        rw_in = row_words(w, lanes)
        cols = c * kh * kw
        g = max(1, word_bits // 32)
        d = empty_desc(MODE_IM2COL)
        d.update({"n": ho * wo * cols, "ddr_words": -(-c // g), "in_rw": rw_in, "out_rw": row_words(cols, lanes),
                  "in_w0": sh * rw_in, "in_c0": -pt * rw_in,  # the kernel's running sums (no multiplier)
                  "c": c, "h": h, "w": w, "ho": ho, "wo": wo, "kh": kh, "kw": kw, "sh": sh, "sw": sw, "pt": pt,
                  "pl": pl, "zp": x.zero_point})
        return [d]

    def ddr_blobs_for(self, node: Node, word_bits: int, knobs: dict[str, int],
                      board: Board | None) -> dict[str, np.ndarray]:
        """The first word of every swept channel in the input buffer, at the design's lanes."""
        lanes = int(knobs.get("lanes", 1))
        _, h, w, _, _ = conv_geometry(node.inputs[0].info.shape, node.attrs)
        return {"chans": pack_int32(_channels(node) * h * row_words(w, lanes), word_bits)}

    def ddr_blobs(self, node: Node, word_bits: int) -> dict[str, np.ndarray]:
        return self.ddr_blobs_for(node, word_bits, {}, None)

    def template_params(self, node: Node, ctx: EmitContext) -> dict[str, Any]:
        descs = self.mover_descs(node, ctx.lanes, self.word_bits(ctx))
        descs[0]["offset"] = ctx.offset(node, "chans")
        return self.copy_params(node, ctx, descs)


def _channels(node: Node) -> np.ndarray:
    """The input channels the node sweeps, in order."""
    chans = node.attrs.get("channels")
    if chans is None:
        return np.arange(node.inputs[0].info.shape[1], dtype=np.int64)
    return np.asarray(chans, dtype=np.int64)


def _selected(node: Node, x: np.ndarray) -> np.ndarray:
    chans = node.attrs.get("channels")
    return x if chans is None else np.asarray(x)[:, :, np.asarray(chans, dtype=np.int64)]
