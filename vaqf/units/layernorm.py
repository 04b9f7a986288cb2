"""The LayerNorm unit (hls/vaqf/layernorm.h, templates/units/layernorm.j2): rows through a three-stage row
pipeline (HLS DATAFLOW: sum and variance passes / the bit-serial V/d, square root and reciprocal / normalize),
one whole L-lane word per cycle in each pass, gamma and beta from one DDR blob; the integer arithmetic is
the op's (vaqf/ops/layernorm.py)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from vaqf.errors import VaqfError
from vaqf.hw.board import Board
from vaqf.hw.cost import (
    DDR_LATENCY,
    Cost,
    adder_tree_luts,
    barrel_luts,
    dsp48e2_per_product,
    memory_cost,
    signed_bits_for_range,
    tree_depth,
)
from vaqf.hw.layout import LANE_CHOICES, row_words
from vaqf.ir import Node, TensorInfo
from vaqf.ops.layernorm import F_BITS, FG_BITS
from vaqf.ops.packing import pack_int32
from vaqf.units.base import Descriptor, Unit, register_unit
from vaqf.units.rowpipe import row_pipeline_cycles

if TYPE_CHECKING:
    from vaqf.units.base import EmitContext


@dataclass(frozen=True)
class LayernormDesc(Descriptor):
    """``vaqf::layernorm_desc``: one LayerNorm layer."""

    cpp = "vaqf::layernorm_desc"
    wide = ("eps_q",)
    rows: int
    d: int
    words: int
    params_offset: int
    params_size: int
    div_iters: int
    sq_iters: int
    rcp_iters: int
    eps_q: int
    zp_out: int
    out_lo: int
    out_hi: int


def layernorm_depths(lanes: int) -> dict[str, int]:
    """Pipeline depths of the kernel's loops (hls/vaqf/layernorm.h), carried to the counters by the config
    struct: fill (stream read, bank write), sum (word read 2, lane tree 2 levels a cycle), var (word read 2,
    d x on a DSP 3, subtract 1, square on a DSP 3 overlapping, tree 2 levels a cycle, stream write), the
    sequential stage-2 loops (a compare-subtract a cycle, + 1), normalize (stream read, |y| R 3, q0 S 3,
    correction and rounding 2, n gamma 3, round + clamp 2, write 1)."""
    t = -(-tree_depth(lanes) // 2)
    return {"depth_fill": 3, "depth_sum": 2 + t, "depth_var": 7 + t, "depth_seq": 2, "depth_norm": 14}


def layer_bits(x: TensorInfo, d: int, eps_q: int) -> dict[str, int]:
    """The widths one layer needs: |y| < 2**y, V < d 2**(2y), U = floor(V / d) + eps_q < 2**u, K = y + F."""
    span = int(x.qtype.max) - int(x.qtype.min)
    y = max(1, (d * span).bit_length())
    u = max(1, ((1 << (2 * y)) - 1 + int(eps_q)).bit_length())
    return {"y": y, "u": u, "k": y + F_BITS, "div_iters": 2 * y, "sq_iters": -(-u // 2), "rcp_iters": y + F_BITS + 1}


def q_bits(d: int) -> int:
    """Bits of round(|y| 2**F / S): |y| <= sqrt(V) < sqrt(d) (S + 1) <= 2 sqrt(d) S, so below 2**(F+1) sqrt(d)."""
    return (2 ** (F_BITS + 1) * (math.isqrt(d) + 1) + 2).bit_length()


def _widths(x: TensorInfo, d: int, attrs: dict[str, Any], b: dict[str, int]) -> dict[str, int]:
    """The kernel's widths for one layer (the config struct takes each one's maximum over the unit's layers)."""
    lo, hi = int(x.qtype.min), int(x.qtype.max)
    g, be = np.asarray(attrs["gamma_q"], dtype=np.int64), np.asarray(attrs["beta_q"], dtype=np.int64)
    qb = q_bits(d)
    gb = signed_bits_for_range(int(g.min()), int(g.max()))
    bb = signed_bits_for_range(int(be.min()), int(be.max()))
    d_bits = int(d).bit_length()
    u_bits = max(b["u"], 2 * b["y"])
    return {"in_bits": signed_bits_for_range(lo, hi), "d_bits": d_bits,
            "sum_bits": signed_bits_for_range(d * lo, d * hi), "y_bits": b["y"], "v_bits": 2 * b["y"] + d_bits,
            "u_bits": u_bits, "s_bits": -(-u_bits // 2), "k_max": b["k"], "q_bits": qb, "g_bits": gb, "b_bits": bb,
            "acc_bits": max(qb + 2 + gb, bb) + 2}


def params_blob(node: Node, word_bits: int) -> np.ndarray:
    """gamma then beta as int32 lanes of whole words: the kernel's fill reads them in that order, as one
    sequential burst."""
    a = node.attrs
    return pack_int32(np.concatenate([np.asarray(a["gamma_q"]), np.asarray(a["beta_q"])]), word_bits)


@register_unit
class LayernormUnit(Unit):
    kind = "layernorm"
    header = "layernorm.h"
    template = "layernorm.j2"
    descriptors = (LayernormDesc,)
    lane_knob = "lanes"
    # a DATAFLOW region: stage 1 reads the input while stage 3 writes the output, so they must be different
    # buffers (canonical form)
    in_place = False
    desc_fields = len(dataclasses.fields(LayernormDesc))

    def knobs(self, node: Node) -> dict[str, list[int]]:
        # every lane count: the design's L may exceed the row (idle lanes are padding)
        return {"lanes": list(LANE_CHOICES)}

    def cost(self, node: Node, knobs: dict[str, int], board: Board) -> Cost:
        """The kernel (hls/vaqf/layernorm.h) is a row pipeline (HLS DATAFLOW) of three processes, W =
        ceil(d/L) words per row, every loop at II=1 (one whole word per cycle, lane l in bank l):

        - lead: stage 3's gamma/beta fill, DDR_LATENCY + 2d + depth (one entry per cycle from the reader
          stage), in parallel with stages 1 and 2 of row 0;
        - stage 1 per row: the sum pass and the y / sum-of-squares pass, 2W + two depths;
        - stage 2 per row: V / d (2Y quotient bits), the square root (ceil(U/2) bits) and 2^K / S (K + 1
          bits), one bit per cycle each, + three depths;
        - stage 3 per row: the normalizing pass, W + depth.

        Cycles: the row pipeline's finish time (:func:`vaqf.units.rowpipe.row_pipeline_cycles`), what the
        counters (VAQF_ROW, VAQF_REGION_END) count.

        Resources, per lane (widths from :func:`layer_bits`; the unit has the widest layer's): products on
        DSP48E2s, one slice per 27x18 piece (dsp48e2_per_product): x d, y^2, |y| R, q0 S and n gamma; LUTs for
        the sum and subtract (sum bits, Y + 1), the abs and negate (Y, Q + 2), the remainder and its two
        compares (Y + F + 1, 2 (S + 2)), two quotient increments (2Q), the affine add, rounding and clamp
        (3 x acc bits + FG / 2), the output padding mux (acc bits); the lane trees (adder_tree_luts over the
        x and y^2 operands); gamma/beta banks (memory_cost(W, 32) each, per lane). Once: stage 2's three
        compare-subtracts (D + 1, 2 (U + 1), S + 1) and its two run-time shifters (barrel_luts over V and
        U bits), the fill's lane decode (L) and its word shifter (32), the y FIFO of two rows
        (memory_cost(2W, L (Y + 1))), ~300 LUT and ~400 FF of handshakes and loop control. FF: ~6 stages of
        the lane datapath's widths.
        """
        lanes = int(knobs["lanes"])
        x = node.inputs[0].info
        d = x.shape[-1]
        rows = x.size // d
        words = row_words(d, lanes)
        b = layer_bits(x, d, int(node.attrs["eps_q"]))
        dep = layernorm_depths(lanes)
        lead = [0, 0, DDR_LATENCY + 2 * d + dep["depth_fill"]]
        times = [2 * words + dep["depth_sum"] + dep["depth_var"],
                 b["div_iters"] + b["sq_iters"] + b["rcp_iters"] + 3 * dep["depth_seq"], words + dep["depth_norm"]]
        cycles = row_pipeline_cycles(rows, times, lead)
        w = _widths(x, d, node.attrs, b)
        lane_lut = (w["sum_bits"] + w["y_bits"] + 1 + w["y_bits"] + w["q_bits"] + 2 + w["y_bits"] + F_BITS + 1
                    + 2 * (w["s_bits"] + 2) + 2 * w["q_bits"] + 4 * w["acc_bits"] + FG_BITS // 2)
        seq_lut = (w["d_bits"] + 1 + 2 * (w["u_bits"] + 1) + w["s_bits"] + 1 + barrel_luts(w["v_bits"], w["v_bits"])
                   + barrel_luts(w["u_bits"], w["u_bits"]))
        fifo = memory_cost(2 * words, lanes * (w["y_bits"] + 1))
        bank = memory_cost(words, 32)
        lut = (lanes * lane_lut + adder_tree_luts(lanes, w["in_bits"]) + adder_tree_luts(lanes, 2 * w["y_bits"])
               + seq_lut + lanes + 32 + 300 + fifo.lut + 2 * lanes * bank.lut)
        ff = lanes * 6 * (w["y_bits"] + w["q_bits"] + w["acc_bits"]) // 2 + 400 + 3 * w["u_bits"]
        dsp = lanes * (dsp48e2_per_product(w["in_bits"], w["d_bits"] + 1)
                       + dsp48e2_per_product(w["y_bits"] + 1, w["y_bits"] + 1)
                       + dsp48e2_per_product(w["y_bits"] + 1, w["k_max"] + 2)
                       + dsp48e2_per_product(w["q_bits"] + 1, w["s_bits"] + 1)
                       + dsp48e2_per_product(w["q_bits"] + 2, w["g_bits"]))
        return Cost(cycles, lut=lut, ff=ff, dsp=dsp, bram18=fifo.bram18 + 2 * lanes * bank.bram18, ddr_bytes=8 * d)

    def config(self, instance: str, nodes: list[Node], knobs: dict[str, int], word_bits: int) -> dict[str, Any]:
        lanes = int(knobs["lanes"])
        ws = []
        for n in nodes:
            x = n.inputs[0].info
            d = x.shape[-1]
            ws.append(_widths(x, d, n.attrs, layer_bits(x, d, int(n.attrs["eps_q"]))))
        top = {k: max(w[k] for w in ws) for k in ws[0]}
        infos = [n.inputs[0].info for n in nodes]
        max_d = max(x.shape[-1] for x in infos)
        return {"lanes": lanes, "max_rows": max(x.size // x.shape[-1] for x in infos),
                "max_words": max(row_words(x.shape[-1], lanes) for x in infos), "max_d": max_d,
                "in_bits": top["in_bits"], "d_bits": top["d_bits"], "sum_bits": top["sum_bits"],
                "y_bits": top["y_bits"], "v_bits": top["v_bits"], "u_bits": top["u_bits"], "s_bits": top["s_bits"],
                "k_max": top["k_max"], "q_bits": top["q_bits"], "g_bits": top["g_bits"], "b_bits": top["b_bits"],
                "acc_bits": top["acc_bits"], **layernorm_depths(lanes)}

    def buffer_kinds(self, node: Node, in_kinds: list[str]) -> list[str]:
        if in_kinds != ["act"]:
            raise VaqfError(f"{node.name}: LayerNorm reads an activation buffer, not accumulators; requantize "
                            "its input")
        return ["act"]

    def ddr_blobs(self, node: Node, word_bits: int, knobs: dict[str, int],
                  board: Board | None) -> dict[str, np.ndarray]:
        return {"params": params_blob(node, word_bits)}

    def describe(self, node: Node, ctx: EmitContext) -> dict[str, Any]:
        x = node.inputs[0].info
        a = node.attrs
        d = x.shape[-1]
        b = layer_bits(x, d, int(a["eps_q"]))
        desc = LayernormDesc(rows=x.size // d, d=d, words=row_words(d, ctx.lanes),
                             params_offset=ctx.offset(node, "params"), params_size=2 * d,
                             div_iters=b["div_iters"], sq_iters=b["sq_iters"], rcp_iters=b["rcp_iters"],
                             eps_q=int(a["eps_q"]), zp_out=int(a["zero_point"]), out_lo=int(a["qtype"].min),
                             out_hi=int(a["qtype"].max))
        return {"ident": ctx.ident[node.name], "unit": self.instance(node), "desc": desc,
                "in_buf": ctx.buffer(node.inputs[0].name), "out_buf": ctx.buffer(node.outputs[0].name)}
