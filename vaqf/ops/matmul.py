"""matmul: activation x activation product (Q.K^T and A.V of attention) on the DSP array.

A [..., M, K] and B [..., K, N] with equal leading axes (heads); both operands are run-time integers,
so the products go to DSP48E2 slices. Relu and requantization epilogues fuse as for dense. The hardware
that runs it (walks, modes, cycles, resources, descriptor) is the matmul unit, vaqf/units/matmul.py.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from vaqf.errors import VaqfError
from vaqf.ir import IntType, Node, TensorInfo, int_type_for_range
from vaqf.ops.base import Epilogue, OpSpec, register
from vaqf.ops.common import absorb_gemm_epilogue, max_abs, requant_out_info
from vaqf.sim.qarith import Rounding

if TYPE_CHECKING:
    from vaqf.sim.plans import Scratch


def operand_info(node: Node, i: int, info: TensorInfo) -> TensorInfo:
    """The operand as the product sees it: the input itself, or a strided view of it (``a_view``/``b_view``:
    shape, strides, base over the input's elements), which passes.simplify.FoldOperandViews sets."""
    view = node.attrs.get(("a_view", "b_view")[i])
    if view is None:
        return info
    return TensorInfo(tuple(view["shape"]), info.qtype, info.scale * float(view.get("factor", 1.0)),
                      info.zero_point)


def operand(node: Node, i: int, x: np.ndarray) -> np.ndarray:
    view = node.attrs.get(("a_view", "b_view")[i])
    if view is None:
        return x
    from vaqf.ops.strided_copy import source_index

    idx = source_index(tuple(view["shape"]), view["strides"], int(view["base"]))
    return x.reshape(x.shape[0], -1)[:, idx.reshape(-1)].reshape((x.shape[0],) + tuple(view["shape"]))


def _bound(a: TensorInfo, b: TensorInfo) -> int:
    k = a.shape[-1]
    return k * max_abs(int(a.qtype.min), int(a.qtype.max), a.zero_point) * \
        max_abs(int(b.qtype.min), int(b.qtype.max), b.zero_point)


def matmul_plan(node: Node, scratch: Scratch | None = None) -> Callable[[list[np.ndarray]], list[np.ndarray]]:
    """The node as one function of its inputs: both operands read through their views (zero-copy strided
    views) into float buffers, one batched BLAS product (exact: float32 when every partial sum fits the
    24-bit mantissa, float64 below 2**53, int64 beyond), then ReLU and requantization in one compiled pass
    writing the output's storage dtype, placed through ``out_view``."""
    from vaqf.sim.gemm import matmul_into
    from vaqf.sim.loops import OutputStage
    from vaqf.sim.plans import Scratch, scatter_strided, storage_dtype, strided_view

    scratch = scratch if scratch is not None else Scratch()
    a, b = (operand_info(node, i, v.info) for i, v in enumerate(node.inputs))
    views = [node.attrs.get("a_view"), node.attrs.get("b_view")]
    zps = (int(a.zero_point), int(b.zero_point))
    bound = _bound(a, b)
    dt = np.float32 if bound < 2**24 else np.float64 if bound < 2**53 else np.int64
    n = b.shape[-1]
    relu = bool(node.attrs.get("relu"))
    rq = node.attrs.get("requant")
    if rq is not None:
        out_dt = storage_dtype(rq["qtype"])
        epi = OutputStage(n, 0, relu, True, rq["mantissa"], rq["shift"], int(rq["zero_point"]), int(rq["qtype"].min),
                       int(rq["qtype"].max), Rounding(rq["rounding"]).cpp_id, bound=bound)
    else:
        out_dt = np.dtype(np.int64)
        epi = OutputStage(n, 0, relu, False)
    out_view = node.attrs.get("out_view")

    def operand_array(i: int, x: np.ndarray, role: str) -> np.ndarray:
        view = views[i]
        if view is not None:
            x = strided_view(x, tuple(view["shape"]), list(view["strides"]), int(view["base"]))
        buf = scratch.get(role, x.shape, dt)
        np.copyto(buf, x, casting="unsafe")  # exact: |x| < 2**24
        if zps[i]:
            buf -= zps[i]
        return buf

    def run(inputs: list[np.ndarray]) -> list[np.ndarray]:
        xa = operand_array(0, inputs[0], "gemm_a")
        xb = operand_array(1, inputs[1], "gemm_b")
        acc_shape = np.broadcast_shapes(xa.shape[:-2], xb.shape[:-2]) + (xa.shape[-2], n)
        acc = matmul_into(xa, xb, scratch.get("gemm_acc", acc_shape, dt))
        if out_view is None:
            out = scratch.new(acc_shape, out_dt)
            epi(acc.reshape(-1, n), out.reshape(-1, n))
            return [out]
        tmp = scratch.get("epilogue", acc_shape, out_dt)
        epi(acc.reshape(-1, n), tmp.reshape(-1, n))
        return [scatter_strided(tmp, tuple(out_view["shape"]), list(out_view["strides"]), int(out_view["base"]),
                                scratch)]

    return run


@register
class MatMul(OpSpec):
    name = "matmul"
    accepts_operand_views = True
    precision_inputs = True
    unit_kind = "matmul"  # vaqf/units/matmul.py

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
        from vaqf.sim.plans import reference_of

        return reference_of(matmul_plan(node), inputs)

    def sim_plan(self, node: Node, scratch: Scratch) -> Callable[[list[np.ndarray]], list[np.ndarray]]:
        return matmul_plan(node, scratch)

    def macs(self, node: Node) -> int:
        a, b = (operand_info(node, i, v.info) for i, v in enumerate(node.inputs))
        return int(np.prod(a.shape[:-2], dtype=np.int64)) * a.shape[-2] * a.shape[-1] * b.shape[-1]

    def absorb_epilogue(self, node: Node, epilogue: Epilogue) -> bool:
        if epilogue.kind == "requant" and np.asarray(epilogue.params["mantissa"]).size != 1:
            return False
        return absorb_gemm_epilogue(node, epilogue)


def finalize_matmul_attrs(node: Node) -> None:
    a, b = (operand_info(node, i, v.info) for i, v in enumerate(node.inputs))
    node.attrs["acc_bits"] = int_type_for_range(-_bound(a, b), _bound(a, b)).bits
