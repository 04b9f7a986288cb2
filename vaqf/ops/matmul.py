"""matmul: activation x activation product (Q.K^T and A.V of attention) on the DSP array.

A [..., M, K] and B [..., K, N] with equal leading axes (heads); both operands are run-time integers,
so the products go to DSP48E2 slices. Relu and requantization epilogues fuse as for dense.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from vaqf.errors import VaqfError
from vaqf.hw.board import Board
from vaqf.hw.cost import Cost
from vaqf.ir import IntType, Node, TensorInfo, int_type_for_range
from vaqf.ops.base import EmitContext, Epilogue, OpSpec, register
from vaqf.ops.common import absorb_gemm_epilogue, max_abs, requant_out_info
from vaqf.sim.qarith import Rounding

if TYPE_CHECKING:
    from vaqf.sim.plans import Scratch

PE_CHOICES = (1, 2, 4, 8, 16, 32, 64)
SIMD_CHOICES = (1, 2, 4, 8, 16, 32, 64)


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


def _view_params(node: Node, i: int, info: TensorInfo) -> list[int]:
    """base, batch stride, row stride, column stride of an operand (contiguous when it has no view)."""
    view = node.attrs.get(("a_view", "b_view")[i])
    shape = tuple(view["shape"]) if view else info.shape
    if view is None:
        r, c = shape[-2], shape[-1]
        return [0, r * c, c, 1]
    st = list(view["strides"])
    batch = [j for j, n in enumerate(shape[:-2]) if n > 1]
    return [int(view["base"]), int(st[batch[-1]]) if batch else 0, int(st[-2]), int(st[-1])]


def _out_view_params(node: Node, a: TensorInfo, b: TensorInfo) -> list[int]:
    """base, batch stride, row stride, column stride where the product's (h, r, c) is written."""
    view = node.attrs.get("out_view")
    m, n = a.shape[-2], b.shape[-1]
    if view is None:
        return [0, m * n, n, 1]
    st = list(view["strides"])
    shape = a.shape[:-2] + (m, n)
    batch = [j for j, k in enumerate(shape[:-2]) if k > 1]
    return [int(view["base"]), int(st[batch[-1]]) if batch else 0, int(st[-2]), int(st[-1])]


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
    from vaqf.sim.kernels import Epilogue
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
        epi = Epilogue(n, 0, relu, True, rq["mantissa"], rq["shift"], int(rq["zero_point"]), int(rq["qtype"].min),
                       int(rq["qtype"].max), Rounding(rq["rounding"]).cpp_id, bound=bound)
    else:
        out_dt = np.dtype(np.int64)
        epi = Epilogue(n, 0, relu, False)
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


def _signed_bits(x: TensorInfo) -> int:
    return int(x.qtype.bits) + (0 if x.qtype.signed else 1)


@register
class MatMul(OpSpec):
    name = "matmul"
    accepts_operand_views = True
    precision_inputs = True

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

    def unit(self, node: Node) -> str:
        return "matmul"

    def knobs(self, node: Node) -> dict[str, list[int]]:
        k = operand_info(node, 0, node.inputs[0].info).shape[-1]
        n = operand_info(node, 1, node.inputs[1].info).shape[-1]
        pes = [p for p in PE_CHOICES if p <= max(1, n)]
        return {"pe": pes, "simd": [s for s in SIMD_CHOICES if s <= max(1, k)],
                "epi": [e for e in (1, 2, 4, 8, 16) if e <= pes[-1]]}

    def cost(self, node: Node, knobs: dict[str, int], board: Board) -> Cost:
        """PE output columns x SIMD products per cycle, II=1, both operands from on-chip buffers.

        Cycles: batch * ceil(N/PE) * (M + 1) * max(ceil(K/SIMD), ceil(PE/EPI)): rows are software-pipelined
        with the previous row's epilogue, EPI requantizers wide (hls/vaqf/matmul.h).
        DSP: one DSP48E2 per product, two when both operands are at most 8 bits (the A operand is
        shared by the PE columns, which is the packing a DSP48E2 allows), plus 2 for the requantizer.
        LUT: the adder tree of SIMD products of 2A bits per PE and the operand muxing.
        """
        pe, simd = int(knobs["pe"]), int(knobs["simd"])
        a, b = (operand_info(node, i, v.info) for i, v in enumerate(node.inputs))
        m, k, n = a.shape[-2], a.shape[-1], b.shape[-1]
        batch = int(np.prod(a.shape[:-2], dtype=np.int64))
        bits = max(_signed_bits(a), _signed_bits(b))
        acc_bits = int(node.attrs["acc_bits"])
        blocks = batch * math.ceil(n / pe)
        epi = min(int(knobs.get("epi", 1)), pe)
        drain = math.ceil(pe / epi)
        cycles = blocks * ((m + 1) * max(math.ceil(k / simd), drain)) + 8 + math.ceil(math.log2(simd + 1))
        per_dsp = 2 if bits <= 9 else 1
        dsp = math.ceil(pe / per_dsp) * simd + 2 * epi
        lut = 300 + pe * (simd * (2 * bits + 2) + acc_bits) + 250 * epi
        ff = 400 + pe * (simd * (2 * bits) + 2 * acc_bits)
        return Cost(cycles, lut, ff, dsp, 0, 0, 8)

    def unit_params(self, unit: str, nodes: list[Node], knobs: dict[str, int], word_bits: int) -> dict[str, Any]:
        return {"pe": int(knobs["pe"]), "simd": int(knobs["simd"]),
                "epi": min(int(knobs.get("epi", 1)), int(knobs["pe"])),
                "acc_bits": max(int(n.attrs["acc_bits"]) for n in nodes)}

    def buffer_kinds(self, node: Node, in_kinds: list[str]) -> list[str]:
        if in_kinds != ["act", "act"]:
            raise VaqfError(f"{node.name}: activation products read activations, not accumulators")
        return ["act" if node.attrs.get("requant") is not None else "acc"]

    def template_params(self, node: Node, ctx: EmitContext) -> dict[str, Any]:
        a, b = (operand_info(node, i, v.info) for i, v in enumerate(node.inputs))
        rq = node.attrs.get("requant")
        out = node.outputs[0].name
        return {
            "ident": ctx.ident[node.name], "unit": self.unit(node),
            "batch": int(np.prod(a.shape[:-2], dtype=np.int64)), "m": a.shape[-2], "k": a.shape[-1],
            "n": b.shape[-1], "zp_a": a.zero_point, "zp_b": b.zero_point,
            "mant": int(rq["mantissa"][0]) if rq is not None else 0,
            "shift": int(rq["shift"][0]) if rq is not None else 0,
            "zp_out": int(rq["zero_point"]) if rq is not None else 0,
            "out_lo": int(rq["qtype"].min) if rq is not None else 0,
            "out_hi": int(rq["qtype"].max) if rq is not None else 0,
            "rounding": Rounding(rq["rounding"]).cpp_id if rq is not None else 0,
            "relu": int(bool(node.attrs.get("relu"))), "requant": int(rq is not None),
            "a_buf": ctx.buffer(node.inputs[0].name), "b_buf": ctx.buffer(node.inputs[1].name),
            "a_view": _view_params(node, 0, node.inputs[0].info), "b_view": _view_params(node, 1, node.inputs[1].info),
            "out_view": _out_view_params(node, a, b),
            "out_act": ctx.buffer(out) if rq is not None else ctx.dummy["act"],
            "out_acc": ctx.dummy["acc"] if rq is not None else ctx.buffer(out),
        }

    def absorb_epilogue(self, node: Node, epilogue: Epilogue) -> bool:
        if epilogue.kind == "requant" and np.asarray(epilogue.params["mantissa"]).size != 1:
            return False
        return absorb_gemm_epilogue(node, epilogue)


def finalize_matmul_attrs(node: Node) -> None:
    a, b = (operand_info(node, i, v.info) for i, v in enumerate(node.inputs))
    node.attrs["acc_bits"] = int_type_for_range(-_bound(a, b), _bound(a, b)).bits
