"""lut: an elementwise function of a narrow integer as a table (GELU, erf or tanh form).

``y = table[x - x_min]``: the table holds the already-requantized output for every input integer, so
any elementwise non-linearity is exact by construction. Inputs are at most 12 bits (4,096 entries).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from vaqf.errors import VaqfError
from vaqf.ir import IntType, Node, TensorInfo
from vaqf.ops.base import OpSpec, register
from vaqf.sim.qarith import round_real, saturate

if TYPE_CHECKING:
    from vaqf.sim.plans import Scratch

MAX_INPUT_BITS = 12


def gelu_erf(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + np.vectorize(math.erf)(x / math.sqrt(2.0)))


def gelu_tanh(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


FUNCTIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {"gelu": gelu_erf, "gelu_tanh": gelu_tanh}


def lut_attrs(fn: str, in_info: TensorInfo, out_qtype: IntType, out_scale: float, out_zp: int) -> dict[str, Any]:
    lo, hi = int(in_info.qtype.min), int(in_info.qtype.max)
    if hi - lo + 1 > 2**MAX_INPUT_BITS:
        raise VaqfError(f"a table needs an input of at most {MAX_INPUT_BITS} bits, got {in_info.qtype}")
    q = np.arange(lo, hi + 1, dtype=np.int64)
    real = FUNCTIONS[fn](in_info.scale[0] * (q - in_info.zero_point).astype(np.float64))
    table = saturate(round_real(real / out_scale) + out_zp, int(out_qtype.min), int(out_qtype.max))
    return {"fn": fn, "table": table, "in_min": lo, "qtype": out_qtype, "scale": np.array([out_scale]),
            "zero_point": int(out_zp)}


@register
class Lut(OpSpec):
    name = "lut"
    unit_kind = "lut"  # vaqf/units/lut.py
    elementwise = True

    def infer(self, node: Node, inputs: list[TensorInfo]) -> list[TensorInfo]:
        (x,) = inputs
        a = node.attrs
        if int(x.qtype.min) != int(a["in_min"]) or int(x.qtype.max) - int(x.qtype.min) + 1 != a["table"].size:
            raise VaqfError(f"{node.name}: table of {a['table'].size} entries does not cover {x.qtype}")
        return [TensorInfo(x.shape, a["qtype"], a["scale"], a["zero_point"])]

    def reference(self, node: Node, inputs: list[np.ndarray]) -> list[np.ndarray]:
        from vaqf.sim.plans import reference_of

        return reference_of(self.sim_plan(node), inputs)

    def sim_plan(self, node: Node, scratch: Scratch | None = None) -> Callable[[list[np.ndarray]], list[np.ndarray]]:
        """One compiled pass (:func:`vaqf.sim.loops.table_lookup`)."""
        from vaqf.sim.loops import table_lookup
        from vaqf.sim.plans import Scratch, storage_dtype

        scratch = scratch if scratch is not None else Scratch()
        a = node.attrs
        table, in_min, out_dt = np.asarray(a["table"], dtype=np.int64), int(a["in_min"]), storage_dtype(a["qtype"])

        def run(inputs: list[np.ndarray]) -> list[np.ndarray]:
            x = np.asarray(inputs[0])
            out = scratch.new(x.shape, out_dt)
            table_lookup(np.ascontiguousarray(x).reshape(-1), table, in_min, out.reshape(-1))
            return [out]

        return run
