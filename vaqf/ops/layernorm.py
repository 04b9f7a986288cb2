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

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from vaqf.errors import VaqfError
from vaqf.ir import IntType, Node, TensorInfo
from vaqf.ops.base import OpSpec, register
from vaqf.sim.qarith import round_real

if TYPE_CHECKING:
    from vaqf.sim.plans import Scratch

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


def layernorm_reference(x: np.ndarray, a: dict[str, Any], out: np.ndarray | None = None) -> np.ndarray:
    """LayerNorm over the last axis (compiled, :func:`vaqf.sim.loops.layernorm_rows`); int64 unless ``out``
    (an array of x's shape in a dtype holding the output type) is given."""
    from vaqf.sim.loops import layernorm_rows

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
    unit_kind = "layernorm"  # vaqf/units/layernorm.py

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
