"""matmul: activation x activation product (Q.K^T and A.V of attention) on the DSP array.

A [..., M, K] and B [..., K, N] with equal leading axes (heads); both operands are run-time integers,
so the products go to DSP48E2 slices. Relu and requantization epilogues fuse as for dense. The hardware
that runs it (walks, modes, cycles, resources, descriptor) is the matmul unit, vaqf/units/matmul.py.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from vaqf.errors import VaqfError
from vaqf.ir import IntType, Node, TensorInfo, int_type_for_range
from vaqf.ir.qarith import Rounding, requantize
from vaqf.ops.attrs import REQUANT, VIEW, Attr, boolean, integer, maybe
from vaqf.ops.base import Epilogue, OpSpec, get_spec, register
from vaqf.ops.common import absorb_gemm_epilogue, max_abs, requant_out_info
from vaqf.ops.strided_copy import source_index


def operand_info(node: Node, i: int, info: TensorInfo) -> TensorInfo:
    """The operand as the product sees it: the input itself, or a strided view of it (``a_view``/``b_view``:
    shape, strides, base over the input's elements), which passes.simplify.FoldOperandViews sets."""
    view = node.attrs.get(("a_view", "b_view")[i])
    if view is None:
        return info
    return TensorInfo(tuple(view["shape"]), info.qtype, info.scale * float(view.get("factor", 1.0)),
                      info.zero_point)


def _bound(a: TensorInfo, b: TensorInfo) -> int:
    k = a.shape[-1]
    return k * max_abs(int(a.qtype.min), int(a.qtype.max), a.zero_point) * \
        max_abs(int(b.qtype.min), int(b.qtype.max), b.zero_point)


def accumulator_bound(node: Node) -> int:
    """The largest |partial sum| of the product: K * max|a - zp_a| * max|b - zp_b| over the operands' types."""
    a, b = (operand_info(node, i, v.info) for i, v in enumerate(node.inputs))
    return _bound(a, b)


def _read(x: np.ndarray, view: dict[str, Any] | None) -> np.ndarray:
    """An operand through its strided view: out[b, o...] = x[b].flat[base + sum(o_k * strides_k)]."""
    if view is None:
        return x
    idx = source_index(tuple(view["shape"]), view["strides"], int(view["base"]))
    return x.reshape(x.shape[0], -1)[:, idx.reshape(-1)].reshape((x.shape[0],) + tuple(view["shape"]))


def reference(a: np.ndarray, b: np.ndarray, zp_a: int, zp_b: int, relu: bool = False,
              requant: dict[str, Any] | None = None, a_view: dict[str, Any] | None = None,
              b_view: dict[str, Any] | None = None, out_view: dict[str, Any] | None = None) -> np.ndarray:
    """The product's integer semantics, in int64 (exact while the bound K * max|a| * max|b| < 2**63):

      A, B = the operands read through a_view / b_view (strided views of the inputs, or the inputs)
      acc  = (A - zp_a) @ (B - zp_b)                      (batched over the leading axes)
      acc  = max(acc, 0)                                  (relu)
      y    = saturate(round(acc * m / 2**s) + zp_out)     (requant, one multiplier; rounding as it names it)
      out.flat[base + sum(i_k * strides_k)] = y[i...]     (out_view: the product written into a permuted layout)
    """
    acc = np.matmul(_read(np.asarray(a, dtype=np.int64), a_view) - int(zp_a),
                    _read(np.asarray(b, dtype=np.int64), b_view) - int(zp_b))
    if relu:
        acc = np.maximum(acc, 0)
    if requant is not None:
        qt = requant["qtype"]
        acc = requantize(acc, requant["mantissa"], requant["shift"], int(requant["zero_point"]), int(qt.min),
                         int(qt.max), Rounding(requant["rounding"]))
    if out_view is None:
        return acc
    batch = acc.shape[0]
    out = np.zeros((batch, int(np.prod(out_view["shape"], dtype=np.int64))), dtype=np.int64)
    pos = source_index(acc.shape[1:], out_view["strides"], int(out_view["base"])).reshape(-1)
    out[:, pos] = acc.reshape(batch, -1)
    return out.reshape((batch,) + tuple(out_view["shape"]))


@register
class MatMul(OpSpec):
    name = "matmul"
    accepts_operand_views = True
    precision_inputs = True
    unit_kind = "matmul"  # vaqf/units/matmul.py
    attributes = (
        Attr("relu", boolean, "a fused relu on the accumulator"),
        Attr("requant", maybe(REQUANT), "a fused requantization (one multiplier; None: output the accumulator)"),
        Attr("acc_bits", integer(lo=1), "bits of the narrowest accumulator holding every partial sum",
             derived=True),
        Attr("a_view", maybe(VIEW), "input 0 read through a strided view (passes.simplify.FoldOperandViews)",
             required=False),
        Attr("b_view", maybe(VIEW), "input 1 read through a strided view", required=False),
        Attr("out_view", maybe(VIEW), "the product written into a permuted layout (shape: the output's)",
             required=False),
    )

    def infer(self, node: Node, inputs: list[TensorInfo]) -> list[TensorInfo]:
        a, b = (operand_info(node, i, x) for i, x in enumerate(inputs))
        if len(a.shape) != len(b.shape) or a.shape[:-2] != b.shape[:-2] or a.shape[-1] != b.shape[-2]:
            raise VaqfError(f"{node.name}: cannot multiply {list(a.shape)} by {list(b.shape)}")
        if a.per_channel or b.per_channel:
            raise VaqfError(f"{node.name}: activation products need per-tensor scales")
        if not isinstance(a.qtype, IntType) or not isinstance(b.qtype, IntType):
            raise VaqfError(f"{node.name}: operands must be integers")
        shape = a.shape[:-1] + (b.shape[-1],)
        if node.attrs.get("out_view") is not None:  # written straight into a permuted layout
            shape = tuple(node.attrs["out_view"]["shape"])
        rq = node.attrs.get("requant")
        if rq is not None:
            return [requant_out_info(shape, rq)]
        bound = _bound(a, b)
        return [TensorInfo(shape, int_type_for_range(-bound, bound), a.scale * b.scale, 0)]

    def reference(self, node: Node, inputs: list[np.ndarray]) -> list[np.ndarray]:
        a = node.attrs
        return [reference(inputs[0], inputs[1], node.inputs[0].info.zero_point, node.inputs[1].info.zero_point,
                          bool(a.get("relu")), a.get("requant"), a.get("a_view"), a.get("b_view"), a.get("out_view"))]

    def derive(self, node: Node) -> dict[str, Any]:
        bound = accumulator_bound(node)
        return {"acc_bits": int_type_for_range(-bound, bound).bits}

    def macs(self, node: Node) -> int:
        a, b = (operand_info(node, i, v.info) for i, v in enumerate(node.inputs))
        return int(np.prod(a.shape[:-2], dtype=np.int64)) * a.shape[-2] * a.shape[-1] * b.shape[-1]

    def absorb_epilogue(self, node: Node, epilogue: Epilogue) -> bool:
        if epilogue.kind == "requant" and np.asarray(epilogue.params["mantissa"]).size != 1:
            return False
        return absorb_gemm_epilogue(node, epilogue)


def finalize_matmul_attrs(node: Node) -> None:
    """Derive the accumulator width from the operands' types (after creating or retyping a matmul)."""
    node.attrs.update(get_spec("matmul").derive(node))
