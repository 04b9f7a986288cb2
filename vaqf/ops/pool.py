"""pool: max or average pooling over 2-D windows of an NCHW tensor (global average pooling included).

Max pooling takes the largest integer of the window's in-bounds elements (same type and scale). Average
pooling (no padding) is  q = round(sum(x - zp) * m / 2**s) + zp  with m / 2**s the dyadic 1 / window
size, so the output keeps the input's type, scale and zero point.
"""

from __future__ import annotations

import numpy as np

from vaqf.errors import VaqfError
from vaqf.ir import Node, TensorInfo
from vaqf.ir.qarith import Dyadic, Rounding, rshift_round, saturate
from vaqf.ops.attrs import Attr, choice, int_list, integer
from vaqf.ops.base import Known, OpSpec, register
from vaqf.ops.im2col import conv_geometry


def pool_attrs(kind: str, kernel: tuple[int, int], stride: tuple[int, int], pads: tuple[int, int, int, int]) -> dict:
    attrs = {"kind": kind, "kernel": list(kernel), "stride": list(stride), "pads": list(pads)}
    if kind == "avg":
        if any(pads):
            raise VaqfError("average pooling with padding is not supported")
        d = Dyadic.from_float(1.0 / (kernel[0] * kernel[1]), 24)
        attrs.update({"mantissa": d.mantissa, "shift": d.shift})
    elif kind != "max":
        raise VaqfError(f"unknown pooling {kind!r}")
    return attrs


def reference(x: np.ndarray, kind: str, kernel: list[int], stride: list[int], pads: list[int], zero_point: int,
              lo: int, hi: int, mantissa: int = 0, shift: int = 0) -> np.ndarray:
    """Pooling of x [B, 1, C, H, W] over kh x kw windows at stride (sh, sw), in int64.

    max: the largest in-bounds element (the padding reads ``lo``, which never beats an in-bounds element).
    avg (no padding): saturate(round(sum(x - zp) * mantissa / 2**shift) + zp, lo, hi), half to even.
    """
    x = np.asarray(x, dtype=np.int64)
    kh, kw = kernel
    sh, sw = stride
    pt, pl, pb, pr = pads
    if kind == "max":
        xp = np.pad(x, ((0, 0), (0, 0), (0, 0), (pt, pb), (pl, pr)), constant_values=int(lo))
        win = np.lib.stride_tricks.sliding_window_view(xp, (kh, kw), axis=(3, 4))[:, :, :, ::sh, ::sw]
        return win.max(axis=(-2, -1))
    win = np.lib.stride_tricks.sliding_window_view(x, (kh, kw), axis=(3, 4))[:, :, :, ::sh, ::sw]
    s = (win - int(zero_point)).sum(axis=(-2, -1))
    q = rshift_round(s * int(mantissa), int(shift), Rounding.HALF_EVEN) + int(zero_point)
    return saturate(q, int(lo), int(hi))


@register
class Pool(OpSpec):
    name = "pool"
    unit_kind = "pool"  # vaqf/units/pool.py
    attributes = (
        Attr("kind", choice("max", "avg"), "max or average pooling"),
        Attr("kernel", int_list(2, lo=1), "[kh, kw]"),
        Attr("stride", int_list(2, lo=1), "[sh, sw]"),
        Attr("pads", int_list(4, lo=0), "[top, left, bottom, right] (max pooling only)"),
        Attr("mantissa", integer(lo=0), "average pooling: m of the dyadic 1 / (kh * kw)", required=False),
        Attr("shift", integer(lo=0, hi=62), "average pooling: s of the dyadic 1 / (kh * kw)", required=False),
    )

    def infer(self, node: Node, inputs: list[TensorInfo]) -> list[TensorInfo]:
        (x,) = inputs
        if x.per_channel:
            raise VaqfError(f"{node.name}: pooling needs a per-tensor scale")
        c, _, _, ho, wo = conv_geometry(x.shape, node.attrs)
        return [TensorInfo((1, c, ho, wo), x.qtype, x.scale, x.zero_point)]

    def reference(self, node: Node, inputs: list[np.ndarray]) -> list[np.ndarray]:
        a = node.attrs
        info = node.inputs[0].info
        return [reference(inputs[0], a["kind"], a["kernel"], a["stride"], a["pads"], info.zero_point,
                          int(info.qtype.min), int(info.qtype.max), a.get("mantissa", 0), a.get("shift", 0))]

    def known_outputs(self, node: Node, known: list[Known | None]) -> list[Known | None]:
        """An output is known when every in-bounds element of its window is (max pooling's padding never
        wins, average pooling has none); its value is the pooling of the known values."""
        (k,) = known
        if k is None:
            return [None]
        a = node.attrs
        kh, kw = a["kernel"]
        sh, sw = a["stride"]
        pt, pl, pb, pr = a["pads"]
        unknown = np.pad((~k.mask).astype(np.int8), ((0, 0), (0, 0), (0, 0), (pt, pb), (pl, pr)))
        win = np.lib.stride_tricks.sliding_window_view(unknown, (kh, kw), axis=(3, 4))[:, :, :, ::sh, ::sw]
        mask = win.max(axis=(-2, -1)) == 0
        if not mask.any():
            return [None]
        return [Known(mask, np.asarray(self.reference(node, [k.values])[0], dtype=np.int64))]
