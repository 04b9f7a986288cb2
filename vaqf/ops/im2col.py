"""im2col: the patches of a 2-D convolution as rows of a matrix, so the GEMM unit computes the conv.

Input [1, C, H, W] (NCHW); output [1, Ho*Wo, C*kh*kw], row (ho, wo), column (c, i, j) — the layout of an
ONNX Conv weight flattened to [Co, C*kh*kw]. Padding reads the input's zero point (real zero).
With the optional attribute ``channels`` (input channel indices, set by passes.sparsity when the GEMM
reading the patches has no use for the other channels) only those channels are swept: C becomes
len(channels) in the output layout.

It runs on the mover (vaqf/units/mover.py, mode IM2COL): a channel table from DDR, then one output element
per cycle.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from vaqf.errors import VaqfError
from vaqf.ir import Node, TensorInfo
from vaqf.ops.attrs import Attr, array, int_list, maybe
from vaqf.ops.base import Known, OpSpec, register


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


def reference(x: np.ndarray, kernel: list[int], stride: list[int], pads: list[int], zero_point: int,
              channels: np.ndarray | None = None) -> np.ndarray:
    """The patches of x [B, 1, C, H, W] as rows [B, 1, Ho*Wo, C'*kh*kw]: row (ho, wo), column (c, i, j) holds
    x[c, ho*sh + i - pt, wo*sw + j - pl], or ``zero_point`` where that lies in the padding; C' sweeps
    ``channels`` (all channels when None)."""
    x = np.asarray(x)
    if channels is not None:
        x = x[:, :, np.asarray(channels, dtype=np.int64)]
    return im2col_reference(x, {"kernel": kernel, "stride": stride, "pads": pads}, zero_point)


def im2col_reference(x: np.ndarray, attrs: dict[str, Any], zero_point: int) -> np.ndarray:
    """:func:`reference` on already selected channels, the geometry read from ``attrs``."""
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
    unit_kind = "mover"  # vaqf/units/mover.py
    attributes = (
        Attr("kernel", int_list(2, lo=1), "[kh, kw]"),
        Attr("stride", int_list(2, lo=1), "[sh, sw]"),
        Attr("pads", int_list(4, lo=0), "[top, left, bottom, right], read as the input's zero point"),
        Attr("channels", maybe(array("int", 1)), "the input channels swept, increasing (passes.sparsity)",
             required=False),
    )

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
        a = node.attrs
        return [reference(inputs[0], a["kernel"], a["stride"], a["pads"], node.inputs[0].info.zero_point,
                          a.get("channels"))]

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
        chans = swept_channels(node)
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


def swept_channels(node: Node) -> np.ndarray:
    """The input channels the node sweeps, in order."""
    chans = node.attrs.get("channels")
    if chans is None:
        return np.arange(node.inputs[0].info.shape[1], dtype=np.int64)
    return np.asarray(chans, dtype=np.int64)


def _selected(node: Node, x: np.ndarray) -> np.ndarray:
    chans = node.attrs.get("channels")
    return x if chans is None else np.asarray(x)[:, :, np.asarray(chans, dtype=np.int64)]
