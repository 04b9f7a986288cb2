"""dense: y = requant(relu(sum_k (x[k] - zp_x) * w[n, k] + bias[n])) on the GEMM unit.

Weights are bipolar (binary unit: products are add/subtract in LUTs) or b-bit integers (integer unit:
products on DSPs). Relu and requantization are optional epilogues absorbed by ``passes.fuse``.
Inputs are [..., K]; leading axes (tokens, batch) are independent rows sharing the weights.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from vaqf.errors import VaqfError
from vaqf.hw.board import Board
from vaqf.hw.cost import Cost, bram18_for
from vaqf.ir import BinaryType, IntType, Node, TensorInfo, int_type_for_range
from vaqf.ops.base import EmitContext, Epilogue, OpSpec, register
from vaqf.ops.common import absorb_gemm_epilogue, max_abs, requant_out_info
from vaqf.ops.packing import container_bits, pack_bipolar, pack_int32, pack_rows, row_words
from vaqf.sim.qarith import Rounding, requantize

PE_CHOICES = (1, 2, 4, 8, 16, 32, 64, 128)
SIMD_CHOICES = (1, 2, 4, 8, 16, 32, 64, 128, 256)
#: cycles between issuing a DDR burst and its first beat (AXI round trip on Zynq UltraScale+ HP ports)
DDR_LATENCY = 64


def is_binary(node: Node) -> bool:
    return isinstance(node.attrs["w_type"], BinaryType)


def weight_container(node: Node) -> int:
    return 1 if is_binary(node) else container_bits(node.attrs["w_type"].bits)


def acc_type(node: Node, x: TensorInfo) -> IntType:
    """Narrowest type bounding every partial sum: |bias| + sum_k |w[n,k]| * max|x - zp|, max over n."""
    w = np.abs(node.attrs["weight"].astype(np.int64))
    xmax = max_abs(int(x.qtype.min), int(x.qtype.max), x.zero_point)
    bound = int((w.sum(axis=1) * xmax + np.abs(node.attrs["bias"])).max(initial=0))
    return int_type_for_range(-bound, bound)


def _in_max_abs(x: TensorInfo) -> int:
    return max_abs(int(x.qtype.min), int(x.qtype.max), x.zero_point)


def dense_reference(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, zp_in: int, bound: int) -> np.ndarray:
    """Exact integer GEMM; runs through float BLAS when every partial sum provably fits the mantissa."""
    xs = np.asarray(x, dtype=np.int64) - zp_in
    if bound < 2**24:
        acc = (xs.astype(np.float32) @ weight.T.astype(np.float32)).astype(np.int64)
    elif bound < 2**53:
        acc = (xs.astype(np.float64) @ weight.T.astype(np.float64)).astype(np.int64)
    else:
        acc = xs @ weight.T.astype(np.int64)
    return acc + bias.astype(np.int64)


@register
class Dense(OpSpec):
    name = "dense"

    def infer(self, node: Node, inputs: list[TensorInfo]) -> list[TensorInfo]:
        (x,) = inputs
        w = node.attrs["weight"]
        n_out, k = w.shape
        if x.shape[-1] != k:
            raise VaqfError(f"{node.name}: input has {x.shape[-1]} features, weights expect {k}")
        if x.per_channel:
            raise VaqfError(f"{node.name}: the input of a dense layer needs a per-tensor scale")
        if not isinstance(x.qtype, IntType):
            raise VaqfError(f"{node.name}: input type {x.qtype} is not an integer type")
        shape = x.shape[:-1] + (n_out,)
        rq = node.attrs.get("requant")
        if rq is not None:
            return [requant_out_info(shape, rq)]
        at = acc_type(node, x)
        return [TensorInfo(shape, at, x.scale[0] * np.asarray(node.attrs["w_scale"], dtype=np.float64), 0)]

    def reference(self, node: Node, inputs: list[np.ndarray]) -> list[np.ndarray]:
        (x,) = inputs
        zp = node.attrs["zp_in"]
        bound = node.attrs["acc_bound"]
        acc = dense_reference(x, node.attrs["weight"], node.attrs["bias"], zp, bound)
        if node.attrs.get("relu"):
            acc = np.maximum(acc, 0)
        rq = node.attrs.get("requant")
        if rq is not None:
            qt = rq["qtype"]
            acc = requantize(acc, rq["mantissa"], rq["shift"], rq["zero_point"], qt.min, qt.max,
                             Rounding(rq["rounding"]))
        return [acc]

    # ---- hardware ---------------------------------------------------------------------------
    def unit(self, node: Node) -> str:
        # one GEMM unit per weight container width: a unit's weight decoder is fixed in hardware
        return "dense_binary" if is_binary(node) else f"dense_int{weight_container(node)}"

    def knobs(self, node: Node) -> dict[str, list[int]]:
        n_out, k = node.attrs["weight"].shape
        return {"pe": [p for p in PE_CHOICES if p <= max(1, n_out)],
                "simd": [s for s in SIMD_CHOICES if s <= max(1, k)]}

    def cost(self, node: Node, knobs: dict[str, int], board: Board) -> Cost:
        """Cycles and resources of one dense layer on a PE x SIMD unit.

        Cycles (the kernel in hls/vaqf/dense.h): for each block of PE output rows, load PE weight rows
        from DDR (a burst at min(AXI width, DDR rate) bytes/cycle plus DDR_LATENCY), then for each input
        row run ceil(K/SIMD) pipelined MAC steps (II=1) and a PE-cycle epilogue; load and compute of a
        block do not overlap in this kernel.
        LUT (first principles, cross-checked against FINN-R's MVAU estimate, FACTS.md section 3): a binary
        product is a conditional negation merged into the first adder level, so a PE is an adder tree
        of SIMD operands of A+1 bits growing by one bit per level, ~(2A+4)*SIMD LUTs, plus its
        accumulator; integer products go to DSP48E2 slices (two products sharing the activation per
        slice when both operands are at most 8 bits) and only the adder tree stays in LUTs.
        BRAM: each PE holds one weight row (row_words x word_bits).
        """
        pe, simd = int(knobs["pe"]), int(knobs["simd"])
        w = node.attrs["weight"]
        n_out, k = w.shape
        rows = int(node.attrs["rows"])
        a_bits = int(node.attrs["in_bits"])
        acc_bits = int(node.attrs["acc_bits"])
        wb = weight_container(node)
        word_bits = board.axi_bits
        rw = row_words(k, wb, word_bits)
        blocks = math.ceil(n_out / pe)
        depth = 4 + max(1, math.ceil(math.log2(max(simd, 2))))
        bytes_block = pe * rw * word_bits // 8
        load = DDR_LATENCY + math.ceil(bytes_block / board.ddr_bytes_per_cycle)
        compute = rows * (math.ceil(k / simd) + pe) + depth
        cycles = blocks * (load + compute)
        ddr_bytes = blocks * bytes_block + 3 * 4 * n_out

        tree_lut = (2 * a_bits + 4) * simd if is_binary(node) else (a_bits + wb + 2) * 2 * simd
        lut = 300 + math.ceil(1.1 * pe * (tree_lut + acc_bits)) + 250  # control + per-PE + epilogue
        ff = 400 + pe * (tree_lut + 2 * acc_bits) + 300
        if is_binary(node):
            dsp = 0
        else:
            per_dsp = 2 if (wb <= 8 and a_bits <= 8) else 1
            dsp = math.ceil(pe / per_dsp) * simd
        dsp += 2  # 32 x 24 requantization multiply of the epilogue
        bram = pe * bram18_for(rw, word_bits)
        return Cost(cycles, lut, ff, dsp, bram, 0, ddr_bytes)

    def unit_params(self, unit: str, nodes: list[Node], knobs: dict[str, int], word_bits: int) -> dict[str, Any]:
        return {
            "pe": int(knobs["pe"]),
            "simd": int(knobs["simd"]),
            "wbits": max(weight_container(n) for n in nodes),
            "binary": int(is_binary(nodes[0])),
            "max_in": max(n.attrs["weight"].shape[1] for n in nodes),
            "max_row_words": max(row_words(n.attrs["weight"].shape[1], weight_container(n), word_bits) for n in nodes),
            "acc_bits": max(int(n.attrs["acc_bits"]) for n in nodes),
        }

    def ddr_blobs(self, node: Node, word_bits: int) -> dict[str, np.ndarray]:
        w = node.attrs["weight"]
        blobs = {"weights": pack_bipolar(w, word_bits) if is_binary(node)
                 else pack_rows(w, weight_container(node), word_bits),
                 "bias": pack_int32(node.attrs["bias"], word_bits)}
        rq = node.attrs.get("requant")
        if rq is not None:
            blobs["mantissa"] = pack_int32(rq["mantissa"], word_bits)
            blobs["shift"] = pack_int32(rq["shift"], word_bits)
        return blobs

    def buffer_kinds(self, node: Node, in_kinds: list[str]) -> list[str]:
        if in_kinds != ["act"]:
            raise VaqfError(f"{node.name}: a dense layer reads activations, not accumulators")
        return ["act" if node.attrs.get("requant") is not None else "acc"]

    def template_params(self, node: Node, ctx: EmitContext) -> dict[str, Any]:
        w = node.attrs["weight"]
        n_out, k = w.shape
        rq = node.attrs.get("requant")
        out = node.outputs[0].name
        return {
            "ident": ctx.ident[node.name],
            "unit": self.unit(node),
            "rows": int(node.attrs["rows"]),
            "in_dim": int(k),
            "out_dim": int(n_out),
            "w_offset": ctx.offset(node, "weights"),
            "bias_offset": ctx.offset(node, "bias"),
            "mant_offset": ctx.offset(node, "mantissa") if rq is not None else 0,
            "shift_offset": ctx.offset(node, "shift") if rq is not None else 0,
            "zp_in": int(node.attrs["zp_in"]),
            "zp_out": int(rq["zero_point"]) if rq is not None else 0,
            "out_lo": int(rq["qtype"].min) if rq is not None else 0,
            "out_hi": int(rq["qtype"].max) if rq is not None else 0,
            "rounding": Rounding(rq["rounding"]).cpp_id if rq is not None else 0,
            "relu": int(bool(node.attrs.get("relu"))),
            "requant": int(rq is not None),
            "in_buf": ctx.buffer(node.inputs[0].name),
            "out_act": ctx.buffer(out) if rq is not None else ctx.dummy["act"],
            "out_acc": ctx.dummy["acc"] if rq is not None else ctx.buffer(out),
        }

    # ---- fusion ----
    def absorb_epilogue(self, node: Node, epilogue: Epilogue) -> bool:
        return absorb_gemm_epilogue(node, epilogue)


def finalize_dense_attrs(node: Node, x: TensorInfo) -> None:
    """Derive the attributes that depend on the input type (call after creating or retyping a dense)."""
    at = acc_type(node, x)
    node.attrs["zp_in"] = x.zero_point
    node.attrs["in_bits"] = int(x.qtype.bits) + (0 if x.qtype.signed else 1)
    node.attrs["acc_bits"] = at.bits
    node.attrs["acc_bound"] = at.max
    node.attrs["rows"] = int(np.prod(x.shape[:-1], dtype=np.int64))
    if _in_max_abs(x) == 0:
        raise VaqfError(f"{node.name}: input type {x.qtype} holds a single value")
