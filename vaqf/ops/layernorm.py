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
The unit that runs it (depths, widths, cycles, resources, descriptor, DDR layout) is vaqf/units/layernorm.py.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from vaqf.errors import VaqfError
from vaqf.ir import IntType, Node, TensorInfo
from vaqf.ir.qarith import Rounding, round_div, round_real, rshift_round, saturate
from vaqf.ops.attrs import Attr, array, integer, qtype, real
from vaqf.ops.base import OpSpec, register

F_BITS = 10
FG_BITS = 24


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


def reference(x: np.ndarray, gamma_q: np.ndarray, beta_q: np.ndarray, eps_q: int, zero_point: int, lo: int,
              hi: int) -> np.ndarray:
    """LayerNorm over the last axis, as the module docstring defines it (int64; roundings half to even;
    S is at least 1, so a constant row divides by 1 and normalizes to 0):

      y = D*x - sum(x);  V = sum(y**2);  S = max(isqrt(V // D + E), 1)
      n = round(y * 2**F / S);  q = saturate(round((n * G + B) / 2**FG) + zp_out, lo, hi)
    """
    x = np.asarray(x, dtype=np.int64)
    d = x.shape[-1]
    y = d * x - x.sum(axis=-1, keepdims=True)
    v = (y * y).sum(axis=-1, keepdims=True)
    s = np.maximum(isqrt_array(v // d + int(eps_q)), 1)
    n = round_div(y << F_BITS, s, Rounding.HALF_EVEN)
    q = rshift_round(n * np.asarray(gamma_q, dtype=np.int64) + np.asarray(beta_q, dtype=np.int64), FG_BITS,
                     Rounding.HALF_EVEN) + int(zero_point)
    return saturate(q, int(lo), int(hi))


@register
class LayerNorm(OpSpec):
    name = "layernorm"
    unit_kind = "layernorm"  # vaqf/units/layernorm.py
    attributes = (
        Attr("gamma_q", array("int", 1), "[D] G_i = round(gamma_i / s_out * 2**(FG - F)), below 2**31"),
        Attr("beta_q", array("int", 1), "[D] B_i = round(beta_i / s_out * 2**FG), below 2**31"),
        Attr("eps_q", integer(lo=0), "E = round(eps * D**2 / s_in**2)"),
        Attr("qtype", qtype(IntType), "the output's integer type"),
        Attr("scale", array("float", 1), "the output's scale, [1]"),
        Attr("zero_point", integer(), "the output's zero point"),
        Attr("eps", real(), "the model's epsilon (documents eps_q)"),
    )

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
        a = node.attrs
        return [reference(inputs[0], a["gamma_q"], a["beta_q"], a["eps_q"], a["zero_point"], a["qtype"].min,
                          a["qtype"].max)]
