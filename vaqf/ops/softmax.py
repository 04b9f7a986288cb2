"""softmax over the last axis in integer arithmetic (table exponential, one reciprocal per row).

For input integers x (scale s) and a row r:
  d    = max(r) - x                                   (>= 0, exact)
  idx  = min(round(d * m / 2**sh), T - 1)             (m / 2**sh = s / s_t, the table step s_t >= s)
  e    = E[idx],  E[i] = round(2**16 * exp(-i * s_t)) (E[0] = 65536; 17-bit entries)
  R    = floor(2**32 / sum(e))                        (sum >= 65536, so R <= 2**16)
  y    = min(round(e * R / 2**(32 - b)), 2**b - 1)    (unsigned b-bit output, scale 2**-b)
All roundings are half-to-even. Error against float softmax (measured in docs/numerics.md): the table
step adds a relative error of at most s_t / 2 to each exponential; the output step is 2**-b.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from vaqf.errors import VaqfError
from vaqf.ir import IntType, Node, TensorInfo
from vaqf.ops.base import OpSpec, register
from vaqf.sim.qarith import Dyadic

if TYPE_CHECKING:
    from vaqf.sim.plans import Scratch

TABLE_SIZE = 1024
EXP_RANGE = 12.0   # exp(-12) * 2**16 < 0.5: entries beyond are zero
EXP_BITS = 16

ENTRY_BITS = EXP_BITS + 1
MANT_BITS = 24    # Dyadic.from_float(..., 24): the index multiplier is below 2**24


def softmax_attrs(in_scale: float, out_bits: int) -> dict[str, Any]:
    """Table and index multiplier for an input of scale ``in_scale``."""
    step = max(float(in_scale), EXP_RANGE / (TABLE_SIZE - 1))
    size = min(TABLE_SIZE, int(math.ceil(EXP_RANGE / step)) + 1)
    d = Dyadic.from_float(float(in_scale) / step, 24)
    table = np.array([round(math.ldexp(math.exp(-i * step), EXP_BITS)) for i in range(size)], dtype=np.int64)
    return {"table": table, "idx_mantissa": d.mantissa, "idx_shift": d.shift, "out_bits": int(out_bits),
            "step": step}


def softmax_reference(x: np.ndarray, table: np.ndarray, mant: int, shift: int, out_bits: int,
                      out: np.ndarray | None = None) -> np.ndarray:
    """Softmax over the last axis (compiled, :func:`vaqf.sim.loops.softmax_rows`); int64 unless ``out``
    (an array of x's shape, any integer dtype holding b bits) is given."""
    from vaqf.sim.loops import softmax_rows

    xi = np.asarray(x)
    if out is None:
        out = np.empty(xi.shape, np.int64)
    n = xi.shape[-1]
    softmax_rows(np.ascontiguousarray(xi).reshape(-1, n), np.asarray(table, dtype=np.int64), int(mant), int(shift),
                 int(out_bits), out.reshape(-1, n))
    return out


def softmax_plan(node: Node, scratch: Scratch | None = None) -> Callable[[list[np.ndarray]], list[np.ndarray]]:
    from vaqf.sim.plans import Scratch, storage_dtype

    scratch = scratch if scratch is not None else Scratch()
    a = node.attrs
    table, mant, shift, bits = np.asarray(a["table"], dtype=np.int64), int(a["idx_mantissa"]), int(a["idx_shift"]), \
        int(a["out_bits"])
    out_dt = storage_dtype(IntType(bits, signed=False))

    def run(inputs: list[np.ndarray]) -> list[np.ndarray]:
        x = inputs[0]
        return [softmax_reference(x, table, mant, shift, bits, scratch.new(x.shape, out_dt))]

    return run


@register
class Softmax(OpSpec):
    name = "softmax"
    unit_kind = "softmax"  # vaqf/units/softmax.py

    def infer(self, node: Node, inputs: list[TensorInfo]) -> list[TensorInfo]:
        (x,) = inputs
        if x.per_channel:
            raise VaqfError(f"{node.name}: softmax needs a per-tensor input scale")
        span = int(x.qtype.max) - int(x.qtype.min)
        if span * int(node.attrs["idx_mantissa"]) >= 2**62:
            raise VaqfError(f"{node.name}: input range too wide for the table index")
        if x.shape[-1] > 2**15:  # keeps sum(e) < 2**32 so the reciprocal is at least 1
            raise VaqfError(f"{node.name}: rows of {x.shape[-1]} are too long")
        b = int(node.attrs["out_bits"])
        if not 1 <= b <= 31:
            raise VaqfError(f"{node.name}: softmax outputs of {b} bits (the kernel makes 1 to 31)")
        if int(node.attrs["idx_mantissa"]) >= 2**MANT_BITS:
            raise VaqfError(f"{node.name}: table index multiplier wider than {MANT_BITS} bits")
        return [TensorInfo(x.shape, IntType(b, signed=False), np.array([2.0**-b]), 0)]

    def reference(self, node: Node, inputs: list[np.ndarray]) -> list[np.ndarray]:
        from vaqf.sim.plans import reference_of

        return reference_of(softmax_plan(node), inputs)

    def sim_plan(self, node: Node, scratch: Scratch) -> Callable[[list[np.ndarray]], list[np.ndarray]]:
        return softmax_plan(node, scratch)
