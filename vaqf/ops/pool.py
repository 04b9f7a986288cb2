"""pool: max or average pooling over 2-D windows of an NCHW tensor (global average pooling included).

Max pooling takes the largest integer of the window's in-bounds elements (same type and scale). Average
pooling (no padding) is  q = saturate(round(sum(x - zp) * m / 2**s) + zp)  with m / 2**s the dyadic 1 / window
size, so the output keeps the input's type, scale and zero point; or, with the optional ``rounding``, ``qtype``
and ``scale`` (a QONNX Trunc after Brevitas's TruncAvgPool2d), m / 2**s = 1 / 2**t rounded as given into the
narrower ``qtype`` at ``scale``: the window's sum truncated to its top bits.
"""

from __future__ import annotations

import numpy as np

from vaqf.errors import VaqfError
from vaqf.ir import IntType, Node, TensorInfo
from vaqf.ir.qarith import Dyadic, Rounding, rshift_round, saturate
from vaqf.ops.attrs import Attr, array, choice, int_list, integer, qtype, rounding
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
              lo: int, hi: int, mantissa: int = 0, shift: int = 0, mode: str = "HALF_EVEN") -> np.ndarray:
    """Pooling of x [B, 1, C, H, W] over kh x kw windows at stride (sh, sw), in int64.

    max: the largest in-bounds element (the padding reads ``lo``, which never beats an in-bounds element).
    avg (no padding): saturate(round(sum(x - zp) * mantissa / 2**shift) + zp, lo, hi), rounded by ``mode``
    (``lo``/``hi`` the output type's bounds).
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
    q = rshift_round(s * int(mantissa), int(shift), Rounding(mode)) + int(zero_point)
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
        Attr("rounding", rounding, "average pooling: how the shift rounds (default HALF_EVEN)", required=False),
        Attr("qtype", qtype(IntType), "average pooling: the output's type (default the input's; a truncation)",
             required=False),
        Attr("scale", array("float", 1), "average pooling: the output's scale, [1] (default the input's)",
             required=False),
    )

    def infer(self, node: Node, inputs: list[TensorInfo]) -> list[TensorInfo]:
        (x,) = inputs
        if x.per_channel:
            raise VaqfError(f"{node.name}: pooling needs a per-tensor scale")
        c, _, _, ho, wo = conv_geometry(x.shape, node.attrs)
        a = node.attrs
        if a["kind"] != "avg" and any(k in a for k in ("rounding", "qtype", "scale")):
            raise VaqfError(f"{node.name}: only average pooling takes rounding, qtype and scale")
        out_type = a.get("qtype") or x.qtype
        if not out_type.min <= x.zero_point <= out_type.max:
            raise VaqfError(f"{node.name}: zero point {x.zero_point} outside the output type {out_type}")
        scale = np.asarray(a["scale"], dtype=np.float64) if a.get("scale") is not None else x.scale
        return [TensorInfo((1, c, ho, wo), out_type, scale, x.zero_point)]

    def reference(self, node: Node, inputs: list[np.ndarray]) -> list[np.ndarray]:
        a = node.attrs
        info = node.inputs[0].info
        out = node.outputs[0].info.qtype
        lo, hi = (int(info.qtype.min), int(info.qtype.max)) if a["kind"] == "max" else (int(out.min), int(out.max))
        return [reference(inputs[0], a["kind"], a["kernel"], a["stride"], a["pads"], info.zero_point, lo, hi,
                          a.get("mantissa", 0), a.get("shift", 0), a.get("rounding") or "HALF_EVEN")]

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
