"""lut: an elementwise function of a narrow integer as a table (GELU, sigmoid, tanh, hard sigmoid/swish,
leaky ReLU, SELU).

``y = table[x - x_min]``: the table holds the already-requantized output for every input integer, so
any elementwise non-linearity is exact by construction. Inputs are at most 12 bits (4,096 entries).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from vaqf.errors import VaqfError
from vaqf.ir import IntType, Node, TensorInfo
from vaqf.ir.qarith import round_real, saturate
from vaqf.ops.attrs import Attr, array, choice, integer, qtype
from vaqf.ops.base import OpSpec, register

MAX_INPUT_BITS = 12


def gelu_erf(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + np.vectorize(math.erf)(x / math.sqrt(2.0)))


def gelu_tanh(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def hard_sigmoid(x: np.ndarray, alpha: float, beta: float) -> np.ndarray:
    """ONNX HardSigmoid: max(0, min(1, alpha * x + beta))."""
    return np.clip(alpha * x + beta, 0.0, 1.0)


def hard_swish(x: np.ndarray) -> np.ndarray:
    """ONNX HardSwish: x * max(0, min(1, x / 6 + 1/2))."""
    return x * hard_sigmoid(x, 1.0 / 6.0, 0.5)


def leaky_relu(x: np.ndarray, alpha: float) -> np.ndarray:
    """ONNX LeakyRelu: x for x >= 0, alpha * x below."""
    return np.where(x >= 0, x, alpha * x)


def selu(x: np.ndarray, alpha: float, gamma: float) -> np.ndarray:
    """ONNX Selu: gamma * x for x > 0, gamma * alpha * (exp(x) - 1) otherwise."""
    return np.where(x > 0, gamma * x, gamma * alpha * np.expm1(np.minimum(x, 0.0)))


#: the tabulated functions: name -> (function of the real input and the parameters, the parameters' names)
FUNCTIONS: dict[str, tuple[Callable[..., np.ndarray], tuple[str, ...]]] = {
    "gelu": (gelu_erf, ()),
    "gelu_tanh": (gelu_tanh, ()),
    "sigmoid": (sigmoid, ()),
    "tanh": (np.tanh, ()),
    "hard_sigmoid": (hard_sigmoid, ("alpha", "beta")),
    "hard_swish": (hard_swish, ()),
    "leaky_relu": (leaky_relu, ("alpha",)),
    "selu": (selu, ("alpha", "gamma")),
}


def lut_attrs(fn: str, in_info: TensorInfo, out_qtype: IntType, out_scale: float, out_zp: int,
              params: Sequence[float] = ()) -> dict[str, Any]:
    """The attributes of a table of ``fn`` (with its parameters, in FUNCTIONS' order) from the input's
    quantization to the output's: every input integer's real value through the function, requantized."""
    function, names = FUNCTIONS[fn]
    if len(params) != len(names):
        raise VaqfError(f"{fn} takes parameters ({', '.join(names) or 'none'}), got {len(params)}")
    lo, hi = int(in_info.qtype.min), int(in_info.qtype.max)
    if hi - lo + 1 > 2**MAX_INPUT_BITS:
        raise VaqfError(f"a table needs an input of at most {MAX_INPUT_BITS} bits, got {in_info.qtype}")
    q = np.arange(lo, hi + 1, dtype=np.int64)
    real = function(in_info.scale[0] * (q - in_info.zero_point).astype(np.float64), *map(float, params))
    table = saturate(round_real(real / out_scale) + out_zp, int(out_qtype.min), int(out_qtype.max))
    return {"fn": fn, "params": np.asarray(params, dtype=np.float64).reshape(-1), "table": table, "in_min": lo,
            "qtype": out_qtype, "scale": np.array([out_scale]), "zero_point": int(out_zp)}


def reference(x: np.ndarray, table: np.ndarray, in_min: int) -> np.ndarray:
    """``table[x - in_min]`` (int64); an input outside the table is an IndexError, as in the compiled lookup."""
    k = np.asarray(x, dtype=np.int64) - int(in_min)
    if k.size and (k.min() < 0 or k.max() >= np.size(table)):
        raise IndexError("table input out of range")
    return np.asarray(table, dtype=np.int64)[k]


@register
class Lut(OpSpec):
    name = "lut"
    unit_kind = "lut"  # vaqf/units/lut.py
    elementwise = True
    attributes = (
        Attr("fn", choice(*FUNCTIONS), "the function tabulated (documents the table)"),
        Attr("params", array("float", 1), "the function's parameters in FUNCTIONS' order (empty for none)"),
        Attr("table", array("int", 1), "the requantized output for every input integer from in_min up"),
        Attr("in_min", integer(), "the input type's smallest integer (table entry 0)"),
        Attr("qtype", qtype(IntType), "the output's integer type"),
        Attr("scale", array("float", 1), "the output's scale, [1]"),
        Attr("zero_point", integer(), "the output's zero point"),
    )

    def infer(self, node: Node, inputs: list[TensorInfo]) -> list[TensorInfo]:
        (x,) = inputs
        a = node.attrs
        if int(x.qtype.min) != int(a["in_min"]) or int(x.qtype.max) - int(x.qtype.min) + 1 != a["table"].size:
            raise VaqfError(f"{node.name}: table of {a['table'].size} entries does not cover {x.qtype}")
        return [TensorInfo(x.shape, a["qtype"], a["scale"], a["zero_point"])]

    def reference(self, node: Node, inputs: list[np.ndarray]) -> list[np.ndarray]:
        return [reference(inputs[0], node.attrs["table"], node.attrs["in_min"])]
