"""The pooling unit (hls/vaqf/pool.h, templates/units/pool.j2): max or average pooling as one flattened
sweep over every window element of every output, one element per cycle. What a window computes is the
op's (vaqf/ops/pool.py)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from vaqf.hw.board import Board
from vaqf.hw.cost import Cost, dsp48e2_per_product, mux_luts
from vaqf.hw.layout import LANE_CHOICES, row_words
from vaqf.ir import Node
from vaqf.ir.qarith import Rounding
from vaqf.ops.im2col import conv_geometry
from vaqf.units.base import Descriptor, Unit, register_unit
from vaqf.units.eltwise import buffer_args, lanes_of, signed_bits

if TYPE_CHECKING:
    from vaqf.units.base import EmitContext

#: pipeline depth of the sweep: address, read, lane select, max / sum, requantize (2), write
DEPTH = 6


@dataclass(frozen=True)
class PoolDesc(Descriptor):
    """``vaqf::pool_desc``: one pooling layer (NCHW, rows of ``row_words`` words)."""

    cpp = "vaqf::pool_desc"
    trips: int
    c: int
    h: int
    w: int
    ho: int
    wo: int
    kh: int
    kw: int
    sh: int
    sw: int
    pt: int
    pl: int
    row_words: int
    out_row_words: int
    sh_rw: int
    plane_words: int
    pt_rw: int
    in_acc: int
    out_acc: int
    avg: int
    mant: int
    shift: int
    zp: int
    lo: int
    hi: int
    rnd: int


def sum_bits(node: Node) -> int:
    """Signed bits of a window's sum (and of its elements): the kernel's running max and sum."""
    kh, kw = node.attrs["kernel"]
    return signed_bits(node.inputs[0]) + 1 + math.ceil(math.log2(kh * kw + 1))


def _trips(node: Node) -> int:
    kh, kw = node.attrs["kernel"]
    c, _, _, ho, wo = conv_geometry(node.inputs[0].info.shape, node.attrs)
    return c * ho * wo * kh * kw


@register_unit
class PoolUnit(Unit):
    kind = "pool"
    header = "pool.h"
    template = "pool.j2"
    descriptors = (PoolDesc,)
    lane_knob = "lanes"
    in_place = False
    desc_fields = 26

    def knobs(self, node: Node) -> dict[str, list[int]]:
        return {"lanes": list(LANE_CHOICES)}

    def cost(self, node: Node, knobs: dict[str, int], board: Board) -> Cost:
        """One flattened loop over c x ho x wo x kh x kw at II=1 (one element read per cycle), plus DEPTH.

        Hardware: the element read at a run-time lane, an L:1 multiplexer on the input bits
        (:func:`mux_luts`); the running max (compare + select) and sum (an adder), S LUTs each (S the sum
        bits); the output store's lane decode (L LUTs); six 32-bit address counters (192 LUTs); average
        pooling adds one S x 25 product (:func:`dsp48e2_per_product`, the mantissa of 1/window is under
        2^24), the 64-bit rounding shift and clamp (8 LUTs per bit) and the run-time rounding mode's select of
        the rounding increment (16 LUTs). FF: S bits per pipeline stage.
        """
        lanes = lanes_of(knobs)
        bits = signed_bits(node.inputs[0])
        s = sum_bits(node)
        avg = node.attrs["kind"] == "avg"
        lut = 192 + mux_luts(lanes) * bits + 2 * s + lanes + (8 * 64 + 16 if avg else 0)
        dsp = dsp48e2_per_product(s, 25) if avg else 0
        return Cost(_trips(node) + DEPTH, lut=lut, ff=200 + DEPTH * s, dsp=dsp)

    def config(self, instance: str, nodes: list[Node], knobs: dict[str, int], word_bits: int) -> dict[str, Any]:
        return {"sum_bits": max(sum_bits(n) for n in nodes), "max_trips": max(_trips(n) for n in nodes),
                "depth": DEPTH}

    def buffer_kinds(self, node: Node, in_kinds: list[str]) -> list[str]:
        return list(in_kinds)

    def describe(self, node: Node, ctx: EmitContext) -> dict[str, Any]:
        x = node.inputs[0].info
        a = node.attrs
        c, h, w, ho, wo = conv_geometry(x.shape, a)
        kh, kw = a["kernel"]
        sh, sw = a["stride"]
        pt, pl = a["pads"][0], a["pads"][1]
        rw = row_words(w, ctx.lanes)
        ia, ic, in_acc = buffer_args(ctx, node.inputs[0].name)
        oa, oc, out_acc = buffer_args(ctx, node.outputs[0].name)
        # max pooling's padding reads the input type's minimum; average pooling clamps into the output's type
        lo = x.qtype if a["kind"] == "max" else node.outputs[0].info.qtype
        desc = PoolDesc(trips=c * ho * wo * kh * kw, c=c, h=h, w=w, ho=ho, wo=wo, kh=kh, kw=kw, sh=sh, sw=sw,
                        pt=pt, pl=pl, row_words=rw, out_row_words=row_words(wo, ctx.lanes), sh_rw=sh * rw,
                        plane_words=h * rw, pt_rw=pt * rw, in_acc=in_acc, out_acc=out_acc,
                        avg=int(a["kind"] == "avg"), mant=int(a.get("mantissa", 0)), shift=int(a.get("shift", 0)),
                        zp=int(x.zero_point), lo=int(lo.min), hi=int(lo.max),
                        rnd=Rounding(a.get("rounding") or "HALF_EVEN").cpp_id)
        return {"ident": ctx.ident[node.name], "unit": self.instance(node), "desc": desc,
                "ia": ia, "ic": ic, "oa": oa, "oc": oc}
