"""layernorm over the last axis in integer arithmetic (integer square root, one rounded quotient per element).

For input integers x of a row of length D (scale s, any zero point, which cancels):
  y_i = D * x_i - sum(x)                               (= D * (x_i - mean), exact)
  V   = sum(y_i**2)                                    (exact; checked to fit 63 bits)
  S   = isqrt(floor(V / D) + E),  E = round(eps * D**2 / s**2)   (S ~ D * sigma, in integer units)
  n_i = round(y_i * 2**F / S)                          (normalized value, F = 10 fractional bits)
  q_i = saturate(round((n_i * G_i + B_i) / 2**FG) + zp_out)
with G_i = round(gamma_i / s_out * 2**(FG - F)) and B_i = round(beta_i / s_out * 2**FG), FG = 24.
All roundings are half-to-even; isqrt is the floor square root.

The hardware (hls/vaqf/layernorm.h) computes n_i without a divider per element: one reciprocal per row,
R = floor(2**K / S) with K = Y + F (|y_i| < 2**Y), then q0 = floor(|y_i| * 2**F * R / 2**K), which is
floor(|y_i| * 2**F / S) or one less (R undershoots 2**K / S by less than 1, and |y_i| * 2**F < 2**K); the
remainder |y_i| * 2**F - q0 * S (in [0, 2S)) corrects it to the floor and rounds half to even, and the sign
is applied after (half-to-even is symmetric). So n_i is exactly the rounding above, not an approximation.
"""

from __future__ import annotations

import math
from collections.abc import Callable
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
from vaqf.ir import IntType, Node, TensorInfo
from vaqf.ops.base import EmitContext, OpSpec, register
from vaqf.ops.packing import pack_int32
from vaqf.ops.rowpipe import row_pipeline_cycles
from vaqf.sim.qarith import round_real

if TYPE_CHECKING:
    from vaqf.sim.plans import Scratch

F_BITS = 10
FG_BITS = 24


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


def layernorm_attrs(gamma: np.ndarray, beta: np.ndarray, eps: float, in_scale: float, out_scale: float,
                    out_qtype: IntType, out_zp: int, where: str) -> dict[str, Any]:
    d = gamma.size
    g = round_real(np.asarray(gamma, dtype=np.float64) / out_scale * 2.0 ** (FG_BITS - F_BITS))
    b = round_real(np.asarray(beta, dtype=np.float64) / out_scale * 2.0**FG_BITS)
    if np.any(np.abs(g) >= 2**31) or np.any(np.abs(b) >= 2**31):
        raise VaqfError(f"{where}: LayerNorm scale/shift too large for the output scale {out_scale:g}")
    e = int(round_real(np.float64(eps * d * d / (in_scale * in_scale))))
    return {"gamma_q": g.astype(np.int64), "beta_q": b.astype(np.int64), "eps_q": e, "qtype": out_qtype,
            "scale": np.array([out_scale]), "zero_point": int(out_zp), "eps": float(eps)}


def isqrt_array(v: np.ndarray) -> np.ndarray:
    """Floor square root of non-negative int64 values, exact (float estimate + integer correction)."""
    v = np.asarray(v, dtype=np.int64)
    r = np.floor(np.sqrt(v.astype(np.float64))).astype(np.int64)
    for _ in range(2):
        r = np.where(r * r > v, r - 1, r)
        r = np.where((r + 1) * (r + 1) <= v, r + 1, r)
    return r


def layernorm_reference(x: np.ndarray, a: dict[str, Any], out: np.ndarray | None = None) -> np.ndarray:
    """LayerNorm over the last axis (compiled, :func:`vaqf.sim.kernels.layernorm_rows`); int64 unless ``out``
    (an array of x's shape in a dtype holding the output type) is given."""
    from vaqf.sim.kernels import layernorm_rows

    xi = np.asarray(x)
    if out is None:
        out = np.empty(xi.shape, np.int64)
    d = xi.shape[-1]
    qt = a["qtype"]
    layernorm_rows(np.ascontiguousarray(xi).reshape(-1, d), np.asarray(a["gamma_q"], dtype=np.int64),
                   np.asarray(a["beta_q"], dtype=np.int64), int(a["eps_q"]), F_BITS, FG_BITS, int(a["zero_point"]),
                   int(qt.min), int(qt.max), out.reshape(-1, d))
    return out


def layernorm_plan(node: Node, scratch: Scratch | None = None) -> Callable[[list[np.ndarray]], list[np.ndarray]]:
    from vaqf.sim.plans import Scratch, storage_dtype

    scratch = scratch if scratch is not None else Scratch()
    a = dict(node.attrs)
    a["gamma_q"] = np.asarray(a["gamma_q"], dtype=np.int64)
    a["beta_q"] = np.asarray(a["beta_q"], dtype=np.int64)
    out_dt = storage_dtype(a["qtype"])

    def run(inputs: list[np.ndarray]) -> list[np.ndarray]:
        x = inputs[0]
        return [layernorm_reference(x, a, scratch.new(x.shape, out_dt))]

    return run


@register
class LayerNorm(OpSpec):
    name = "layernorm"
    # the kernel is a DATAFLOW region: stage 1 reads the input while stage 3 writes the output, so they must
    # be different buffers (canonical form)
    in_place = False

    def infer(self, node: Node, inputs: list[TensorInfo]) -> list[TensorInfo]:
        (x,) = inputs
        d = x.shape[-1]
        if x.per_channel:
            raise VaqfError(f"{node.name}: LayerNorm needs a per-tensor input scale")
        if node.attrs["gamma_q"].size != d:
            raise VaqfError(f"{node.name}: {node.attrs['gamma_q'].size} scales for {d} features")
        span = int(x.qtype.max) - int(x.qtype.min)
        if d * (d * span) ** 2 >= 2**62 or (d * span) << F_BITS >= 2**62:
            raise VaqfError(f"{node.name}: a {x.qtype} input over {d} features overflows the 64-bit variance; "
                            "quantize the LayerNorm input to fewer bits")
        return [TensorInfo(x.shape, node.attrs["qtype"], node.attrs["scale"], node.attrs["zero_point"])]

    def reference(self, node: Node, inputs: list[np.ndarray]) -> list[np.ndarray]:
        from vaqf.sim.plans import reference_of

        return reference_of(layernorm_plan(node), inputs)

    def sim_plan(self, node: Node, scratch: Scratch) -> Callable[[list[np.ndarray]], list[np.ndarray]]:
        return layernorm_plan(node, scratch)

    def unit(self, node: Node) -> str:
        return "layernorm"

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

        Cycles: the row pipeline's finish time (:func:`vaqf.ops.rowpipe.row_pipeline_cycles`), what the
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

    def unit_params(self, unit: str, nodes: list[Node], knobs: dict[str, int], word_bits: int) -> dict[str, Any]:
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

    def ddr_blobs(self, node: Node, word_bits: int) -> dict[str, np.ndarray]:
        # consumption order: the fill reads gamma, then beta, as one sequential burst
        a = node.attrs
        return {"params": pack_int32(np.concatenate([np.asarray(a["gamma_q"]), np.asarray(a["beta_q"])]), word_bits)}

    def template_params(self, node: Node, ctx: EmitContext) -> dict[str, Any]:
        x = node.inputs[0].info
        a = node.attrs
        d = x.shape[-1]
        b = layer_bits(x, d, int(a["eps_q"]))
        return {"ident": ctx.ident[node.name], "unit": self.unit(node), "rows": x.size // d, "d": d,
                "words": row_words(d, ctx.lanes), "params_offset": ctx.offset(node, "params"), "params_size": 2 * d,
                "div_iters": b["div_iters"], "sq_iters": b["sq_iters"], "rcp_iters": b["rcp_iters"],
                "eps_q": int(a["eps_q"]), "zp_out": int(a["zero_point"]), "out_lo": int(a["qtype"].min),
                "out_hi": int(a["qtype"].max), "in_buf": ctx.buffer(node.inputs[0].name),
                "out_buf": ctx.buffer(node.outputs[0].name)}


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
