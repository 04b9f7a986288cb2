"""pool: max or average pooling over 2-D windows of an NCHW tensor (global average pooling included).

Max pooling takes the largest integer of the window's in-bounds elements (same type and scale). Average
pooling (no padding) is  q = round(sum(x - zp) * m / 2**s) + zp  with m / 2**s the dyadic 1 / window
size, so the output keeps the input's type, scale and zero point.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from vaqf.errors import VaqfError
from vaqf.hw.board import Board
from vaqf.hw.cost import Cost, dsp48e2_per_product, mux_luts
from vaqf.hw.layout import lane_knob, row_words
from vaqf.ir import Node, TensorInfo
from vaqf.ops.base import EmitContext, Known, OpSpec, register
from vaqf.ops.eltwise import LANE_CHOICES, buffer_args, signed_bits
from vaqf.ops.im2col import conv_geometry
from vaqf.sim.qarith import Dyadic, Rounding, rshift_round, saturate

#: pipeline depth of the sweep: address, read, lane select, max / sum, requantize (2), write
DEPTH = 6


def _sum_bits(node: Node) -> int:
    kh, kw = node.attrs["kernel"]
    return signed_bits(node.inputs[0]) + 1 + math.ceil(math.log2(kh * kw + 1))


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


@register
class Pool(OpSpec):
    name = "pool"

    def infer(self, node: Node, inputs: list[TensorInfo]) -> list[TensorInfo]:
        (x,) = inputs
        if x.per_channel:
            raise VaqfError(f"{node.name}: pooling needs a per-tensor scale")
        c, _, _, ho, wo = conv_geometry(x.shape, node.attrs)
        return [TensorInfo((1, c, ho, wo), x.qtype, x.scale, x.zero_point)]

    def reference(self, node: Node, inputs: list[np.ndarray]) -> list[np.ndarray]:
        a = node.attrs
        x = np.asarray(inputs[0], dtype=np.int64)
        info = node.inputs[0].info
        kh, kw = a["kernel"]
        sh, sw = a["stride"]
        pt, pl, pb, pr = a["pads"]
        if a["kind"] == "max":
            pad = int(info.qtype.min)  # never wins against an in-bounds element
            xp = np.pad(x, ((0, 0), (0, 0), (0, 0), (pt, pb), (pl, pr)), constant_values=pad)
            win = np.lib.stride_tricks.sliding_window_view(xp, (kh, kw), axis=(3, 4))[:, :, :, ::sh, ::sw]
            return [win.max(axis=(-2, -1))]
        win = np.lib.stride_tricks.sliding_window_view(x, (kh, kw), axis=(3, 4))[:, :, :, ::sh, ::sw]
        s = (win - info.zero_point).sum(axis=(-2, -1))
        q = rshift_round(s * int(a["mantissa"]), int(a["shift"]), Rounding.HALF_EVEN) + info.zero_point
        return [saturate(q, int(info.qtype.min), int(info.qtype.max))]

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

    def unit(self, node: Node) -> str:
        return "pool"

    def knobs(self, node: Node) -> dict[str, list[int]]:
        return {"lanes": list(LANE_CHOICES)}

    def cost(self, node: Node, knobs: dict[str, int], board: Board) -> Cost:
        """One flattened loop over c x ho x wo x kh x kw at II=1 (one element read per cycle), plus DEPTH.

        Hardware: the element read at a run-time lane, an L:1 multiplexer on the input bits
        (:func:`mux_luts`); the running max (compare + select) and sum (an adder), S LUTs each (S the sum
        bits); the output store's lane decode (L LUTs); six 32-bit address counters (192 LUTs); average
        pooling adds one S x 25 product (:func:`dsp48e2_per_product`, the mantissa of 1/window is under
        2^24) and the 64-bit rounding shift and clamp (8 LUTs per bit). FF: S bits per pipeline stage.
        """
        lanes = lane_knob(knobs) or 1
        kh, kw = node.attrs["kernel"]
        c, _, _, ho, wo = conv_geometry(node.inputs[0].info.shape, node.attrs)
        trips = c * ho * wo * kh * kw
        bits = signed_bits(node.inputs[0])
        s = _sum_bits(node)
        avg = node.attrs["kind"] == "avg"
        lut = 192 + mux_luts(lanes) * bits + 2 * s + lanes + (8 * 64 if avg else 0)
        dsp = dsp48e2_per_product(s, 25) if avg else 0
        return Cost(trips + DEPTH, lut=lut, ff=200 + DEPTH * s, dsp=dsp)

    def unit_params(self, unit: str, nodes: list[Node], knobs: dict[str, int], word_bits: int) -> dict[str, Any]:
        trips = []
        for n in nodes:
            kh, kw = n.attrs["kernel"]
            c, _, _, ho, wo = conv_geometry(n.inputs[0].info.shape, n.attrs)
            trips.append(c * ho * wo * kh * kw)
        return {"sum_bits": max(_sum_bits(n) for n in nodes), "max_trips": max(trips), "depth": DEPTH}

    def buffer_kinds(self, node: Node, in_kinds: list[str]) -> list[str]:
        return list(in_kinds)

    def template_params(self, node: Node, ctx: EmitContext) -> dict[str, Any]:
        x = node.inputs[0].info
        a = node.attrs
        c, h, w, ho, wo = conv_geometry(x.shape, a)
        kh, kw = a["kernel"]
        rw = row_words(w, ctx.lanes)
        ia, ic, in_acc = buffer_args(ctx, node.inputs[0].name)
        oa, oc, out_acc = buffer_args(ctx, node.outputs[0].name)
        return {"ident": ctx.ident[node.name], "unit": self.unit(node), "trips": c * ho * wo * kh * kw,
                "c": c, "h": h, "w": w, "ho": ho, "wo": wo, "kh": kh, "kw": kw, "sh": a["stride"][0],
                "sw": a["stride"][1], "pt": a["pads"][0], "pl": a["pads"][1], "row_words": rw,
                "out_row_words": row_words(wo, ctx.lanes), "sh_rw": a["stride"][0] * rw, "plane_words": h * rw,
                "pt_rw": a["pads"][0] * rw, "in_acc": in_acc, "out_acc": out_acc, "avg": int(a["kind"] == "avg"),
                "mant": int(a.get("mantissa", 0)), "shift": int(a.get("shift", 0)), "zp": x.zero_point,
                "lo": int(x.qtype.min), "hi": int(x.qtype.max), "ia": ia, "ic": ic, "oa": oa, "oc": oc}
