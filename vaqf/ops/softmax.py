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
from typing import Any

import numpy as np

from vaqf.errors import VaqfError
from vaqf.ir import IntType, Node, TensorInfo
from vaqf.ir.qarith import Dyadic, Rounding, rshift_round
from vaqf.ops.attrs import Attr, array, integer, real
from vaqf.ops.base import OpSpec, register

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


def reference(x: np.ndarray, table: np.ndarray, idx_mantissa: int, idx_shift: int, out_bits: int) -> np.ndarray:
    """Softmax over the last axis, as the module docstring defines it (int64; roundings half to even):

      d   = max(row) - x;   idx = min(round(d * m / 2**sh), T - 1);   e = table[idx]
      R   = floor(2**32 / sum(e));   y = min(round(e * R / 2**(32 - b)), 2**b - 1)
    """
    x = np.asarray(x, dtype=np.int64)
    table = np.asarray(table, dtype=np.int64)
    d = x.max(axis=-1, keepdims=True) - x
    idx = np.minimum(rshift_round(d * int(idx_mantissa), int(idx_shift), Rounding.HALF_EVEN), table.size - 1)
    e = table[idx]
    recip = (np.int64(1) << 32) // e.sum(axis=-1, keepdims=True)
    return np.minimum(rshift_round(e * recip, 32 - int(out_bits), Rounding.HALF_EVEN), (1 << int(out_bits)) - 1)


@register
class Softmax(OpSpec):
    name = "softmax"
    unit_kind = "softmax"  # vaqf/units/softmax.py
    attributes = (
        Attr("table", array("int", 1), "E[i] = round(2**16 * exp(-i * step)), at most TABLE_SIZE entries"),
        Attr("idx_mantissa", integer(lo=0), "m of the table index d * m / 2**sh (below 2**24)"),
        Attr("idx_shift", integer(lo=0, hi=62), "sh of the table index"),
        Attr("out_bits", integer(lo=1, hi=31), "b: unsigned b-bit outputs, scale 2**-b"),
        Attr("step", real(positive=True), "the table's input step s_t (documents the table)"),
    )

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
        a = node.attrs
        return [reference(inputs[0], a["table"], a["idx_mantissa"], a["idx_shift"], a["out_bits"])]
