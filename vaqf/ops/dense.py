"""dense: y = requant(relu(sum_k (x[k] - zp_x) * w[n, k] + bias[n])) on the GEMM unit.

Weights are bipolar (binary unit: products are add/subtract in LUTs) or b-bit integers (integer unit:
products on DSPs). Relu and requantization are optional epilogues absorbed by ``passes.fuse``.
Inputs are [..., K]; leading axes (tokens, batch) are independent rows sharing the weights.

Structured sparsity (see passes.sparsity and docs/pruning.md): rows whose weights are all zero (pruned
output channels) are never computed, their constant outputs written by the epilogue alone. A layer whose
non-zero weights lie in dense blocks (attribute ``blocks``: disjoint row groups, each with its column set,
covering every non-zero weight) can run block by block, each block a small dense GEMM over its gathered
input columns; the cost model picks that form for the knobs where it is faster, and the emitter the same.
The reference is the same sum either way: integer sums are exact, only which zero products are skipped
changes.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from vaqf.errors import VaqfError
from vaqf.hw.board import Board
from vaqf.hw.cost import (
    Cost,
    adder_tree_luts,
    dsp48e2_per_product,
    lutram_luts,
    memory_cost,
    mux_luts,
    signed_bits_for_range,
)
from vaqf.ir import BinaryType, IntType, Node, TensorInfo, int_type_for_range
from vaqf.ops.base import EmitContext, Epilogue, Known, OpSpec, register
from vaqf.ops.common import absorb_gemm_epilogue, max_abs, requant_out_info
from vaqf.ops.packing import container_bits, pack_bipolar, pack_int32, pack_rows, row_words
from vaqf.sim.qarith import Rounding

if TYPE_CHECKING:
    from vaqf.sim.plans import Scratch

log = logging.getLogger(__name__)

PE_CHOICES = (1, 2, 4, 8, 16, 32, 64, 128)
#: requantizers draining the PE accumulators in parallel
EPI_CHOICES = (1, 2, 4, 8, 16)
SIMD_CHOICES = (1, 2, 4, 8, 16, 32, 64, 128, 256)
#: cycles between issuing a DDR burst and its first beat (AXI round trip on Zynq UltraScale+ HP ports)
DDR_LATENCY = 64
#: LUTs of the unit's loop control and address generation (see dense_resources)
CONTROL_LUT = 300
#: bits of a requantization multiplier (vaqf.ops.common.MANTISSA_BITS, unsigned) and of its shift (<= 62)
MANTISSA_BITS = 24
SHIFT_BITS = 6


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


#: multiply-accumulates per call below which the integer kernel beats float conversions and a BLAS call
SMALL_GEMM = 1 << 15


def dense_reference(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, zp_in: int, bound: int) -> np.ndarray:
    """Exact integer GEMM plus bias (int64 accumulators [..., N]); see :func:`dense_plan` for how."""
    from vaqf.sim.kernels import epilogue_columns, epilogue_params, gemm_epilogue

    xs = np.asarray(x)
    acc = _accumulate(xs.reshape(-1, xs.shape[-1]), weight, zp_in, bound, None)
    out = np.empty(acc.shape, np.int64)
    gemm_epilogue(acc, epilogue_columns(bias, 1, 0, acc.shape[1]), epilogue_params(False, False, 0, 0, 0, 0), out)
    return out.reshape(xs.shape[:-1] + (weight.shape[0],))


def _accumulate(rows: np.ndarray, weight: np.ndarray, zp_in: int, bound: int,
                w_t: np.ndarray | None, scratch: Scratch | None = None) -> np.ndarray:
    """sum_k (rows[i, k] - zp_in) * weight[n, k], exactly: in int64 for small problems and beyond 2**53 (the
    compiled kernel), else as a float product (:func:`vaqf.sim.gemm.matmul_into`) in float32 when every
    partial sum provably fits its 24-bit mantissa, float64 below 2**53. ``w_t``: the weights transposed
    [K, N], contiguous, in that float type (converted here when None). Returns a float or int64 array of
    integers [rows, N] (a scratch buffer when ``scratch`` is given)."""
    from vaqf.sim.gemm import matmul_into
    from vaqf.sim.kernels import int_gemm
    from vaqf.sim.plans import Scratch

    n_out, k = weight.shape
    if rows.shape[0] * k * n_out <= SMALL_GEMM or bound >= 2**53:
        acc = np.empty((rows.shape[0], n_out), np.int64)
        int_gemm(np.ascontiguousarray(rows), np.int64(zp_in), weight, acc)
        return acc
    scratch = scratch if scratch is not None else Scratch()
    dt = np.float32 if bound < 2**24 else np.float64
    xf = scratch.get("gemm_a", rows.shape, dt)
    np.copyto(xf, rows, casting="unsafe")  # exact: |x| < 2**24
    if zp_in:
        xf -= dt(zp_in)
    if w_t is None or w_t.dtype != dt:
        w_t = np.ascontiguousarray(weight.T.astype(dt))
    return matmul_into(xf, w_t, scratch.get("gemm_acc", (rows.shape[0], n_out), dt))  # one 2-D GEMM


def dense_plan(node: Node, scratch: Scratch | None = None) -> Callable[[list[np.ndarray]], list[np.ndarray]]:
    """The node as one function of its input: GEMM (see :func:`_accumulate`; on 8-bit activations, large
    problems run on MLAS's integer kernels, :class:`vaqf.sim.gemm.IntGemm`, int32 accumulators, no float
    conversion), then bias, ReLU and requantization fused in one compiled pass writing the output's storage
    dtype."""
    from vaqf.sim import gemm
    from vaqf.sim.kernels import Epilogue, dense_int
    from vaqf.sim.plans import Scratch, storage_dtype

    weight = np.ascontiguousarray(node.attrs["weight"])
    n_out, k = weight.shape
    zp = int(node.attrs["zp_in"])
    bound = int(node.attrs["acc_bound"])
    relu = bool(node.attrs.get("relu"))
    rq = node.attrs.get("requant")
    if rq is not None:
        out_dt = storage_dtype(rq["qtype"])
        epi = Epilogue(n_out, node.attrs["bias"], relu, True, rq["mantissa"], rq["shift"], int(rq["zero_point"]),
                       int(rq["qtype"].min), int(rq["qtype"].max), Rounding(rq["rounding"]).cpp_id, zp, bound)
    else:  # the accumulator itself: int64, which holds whatever the inputs are
        out_dt = np.dtype(np.int64)
        epi = Epilogue(n_out, node.attrs["bias"], relu, False, zp_in=zp)
    cols, params = epi.cols, epi.params
    w_float: list[np.ndarray] = []  # converted on first use by a large batch, then kept
    scratch = scratch if scratch is not None else Scratch()
    small = SMALL_GEMM // (k * n_out) if bound < 2**53 else -1  # rows up to which the integer kernel runs
    fdt = np.float32 if bound < 2**24 else np.float64
    new = scratch.new

    igemm: dict[bool, gemm.IntGemm | None] = {}  # 8-bit activations (signed?): MLAS's integer GEMM, made once
    int_rows = gemm.INT_MIN_MACS // (k * n_out) if bound < 2**31 else -1

    def run(inputs: list[np.ndarray]) -> list[np.ndarray]:
        x = inputs[0]
        r = x.size // k
        if r <= small:
            if not x.flags.c_contiguous:
                x = np.ascontiguousarray(x)
            out = np.empty(x.shape[:-1] + (n_out,), out_dt)
            dense_int(x, weight, cols, params, out)
            return [out]
        rows = x.reshape(-1, k)
        if (x.dtype == np.uint8 or x.dtype == np.int8) and 0 <= int_rows <= r:
            signed = x.dtype == np.int8
            if signed not in igemm:  # int8 activations go in as uint8 x + 128 (= x ^ 0x80), zero point zp + 128
                igemm[signed] = gemm.IntGemm.make(weight, zp + 128 * signed, bound) if gemm.INT_GEMM else None
            ig = igemm[signed]
            if ig is not None:
                if signed:
                    xu = scratch.get("gemm_a", rows.shape, np.uint8)
                    np.bitwise_xor(rows.view(np.uint8), np.uint8(0x80), out=xu)
                    rows = xu
                out = new((r, n_out), out_dt)
                epi(ig(rows, scratch.get("gemm_acc", (r, n_out), np.int32)), out)
                return [out.reshape(x.shape[:-1] + (n_out,))]
        if small < 0:
            out = new((r, n_out), out_dt)
            dense_int(np.ascontiguousarray(rows), weight, cols, params, out)
        else:
            if not w_float:
                w_float.append(np.ascontiguousarray(weight.T.astype(fdt)))
            out = new((r, n_out), out_dt)
            epi(_accumulate(rows, weight, zp, bound, w_float[0], scratch), out)
        return [out.reshape(x.shape[:-1] + (n_out,))]

    return run


@register
class Dense(OpSpec):
    name = "dense"
    precision_inputs = True

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
        if node.attrs.get("blocks") is not None:
            check_blocks(node)
        shape = x.shape[:-1] + (n_out,)
        rq = node.attrs.get("requant")
        if rq is not None:
            return [requant_out_info(shape, rq)]
        at = acc_type(node, x)
        return [TensorInfo(shape, at, x.scale[0] * np.asarray(node.attrs["w_scale"], dtype=np.float64), 0)]

    def reference(self, node: Node, inputs: list[np.ndarray]) -> list[np.ndarray]:
        from vaqf.sim.plans import reference_of

        return reference_of(dense_plan(node), inputs)

    def sim_plan(self, node: Node, scratch: Scratch) -> Callable[[list[np.ndarray]], list[np.ndarray]]:
        return dense_plan(node, scratch)

    # ---- hardware ---------------------------------------------------------------------------
    def macs(self, node: Node) -> int:
        return int(node.attrs["rows"]) * int(node.attrs["weight"].size)

    def unit(self, node: Node) -> str:
        # one GEMM unit per weight container width: a unit's weight decoder is fixed in hardware
        return "dense_binary" if is_binary(node) else f"dense_int{weight_container(node)}"

    def knobs(self, node: Node) -> dict[str, list[int]]:
        """PE (output rows) and SIMD (input columns) per cycle: powers of two up to the layer's size.

        A layer whose integer products pack two to a DSP48E2 (:func:`dsp_packing`) starts at PE = 2:
        a DSP slice computes the products of two PEs at once, so PE = 1 would use as many slices as
        PE = 2 at half the speed.
        """
        n_out, k = node.attrs["weight"].shape
        lowest = 2 if dsp_packing(node) == 2 and n_out >= 2 else 1
        pes = [p for p in PE_CHOICES if lowest <= p <= max(1, n_out)]
        return {"pe": pes, "simd": [s for s in SIMD_CHOICES if s <= max(1, k)],
                "epi": [e for e in EPI_CHOICES if e <= pes[-1]]}

    def cost_key(self, node: Node) -> tuple:
        """Besides shapes, types and the weight zero pattern (``vaqf.hw.model.cost_key``), the cost reads
        the blocks' row counts and MAC steps."""
        b = node.attrs.get("blocks")
        if b is None:
            return ()
        return tuple(np.asarray(b[k], dtype=np.int64).tobytes() for k in ("shape", "steps"))

    def cost(self, node: Node, knobs: dict[str, int], board: Board) -> Cost:
        """Cycles and resources of one dense layer on a PE x SIMD unit.

        Cycles (the kernel in hls/vaqf/dense.h): blocks of PE output rows; a block computes
        (rows + 1) * max(ceil(K/SIMD), PE) cycles (MAC steps at II=1, the previous row's PE results
        draining through EPI requantizers meanwhile, so a row costs max(ceil(K/SIMD), ceil(PE/EPI)) cycles)
        while the next block's PE weight rows and constants
        stream in from DDR (one word per cycle, at most the board's DDR bytes per cycle): double
        buffering makes a block cost max(compute, load); the first load and DDR_LATENCY are exposed.
        Rows whose weights are all zero (pruned output channels) are not computed: only live rows form
        blocks, and the pruned rows' constant outputs are written EPI per cycle (form "skip"); when PE
        covers the pruned rows for free that writing costs more than computing them, so the form "all"
        computes every row (the zero weights give the bias alone, the same constants).
        A block-sparse layer (``blocks``) may instead run each dense block as that same GEMM over its
        n_b rows and its gathered columns: a MAC step feeds lane s from activation bank s (column % SIMD),
        so a block of columns C_b takes steps_b = max over banks of |{c in C_b: c % SIMD == s}| MAC steps
        per row (>= ceil(|C_b|/SIMD); the gap is the bank-conflict cost of the gather) and stores
        steps_b x SIMD weights per row. Per block the gather costs its column table (steps_b x SIMD int32,
        one per cycle, after a DDR round trip) and its own exposed DDR_LATENCY and first load; DDR bytes
        are those of the stored blocks only. :func:`dense_form` picks the fastest form for the knobs.
        Resources: see :func:`dense_resources` (LUT, FF, DSP48E2 and weight-buffer terms, each with
        its source).
        """
        pe, simd = int(knobs["pe"]), int(knobs["simd"])
        epi = min(int(knobs.get("epi", 1)), pe)
        cycles, ddr_bytes, form = _cycles(node, pe, simd, epi, board)
        res = dense_resources(node, pe, simd, epi)
        lut, bram18 = res.lut, res.bram18
        if form == "blocks":  # the column table of the widest block: steps x SIMD column indices
            index_bits = int(node.attrs["weight"].shape[1]).bit_length() + 1
            table = memory_cost(max_block_steps(node, simd), simd * index_bits)
            lut, bram18 = lut + table.lut, bram18 + table.bram18
        return Cost(cycles, lut, res.ff, res.dsp, bram18, res.uram, ddr_bytes)

    def unit_params(self, unit: str, nodes: list[Node], knobs: dict[str, int], word_bits: int) -> dict[str, Any]:
        simd = int(knobs["simd"])
        wbits = max(weight_container(n) for n in nodes)
        steps = max((max_block_steps(n, simd) for n in nodes if n.attrs.get("blocks") is not None), default=1)
        return {
            "pe": int(knobs["pe"]),
            "simd": simd,
            "epi": min(int(knobs.get("epi", 1)), int(knobs["pe"])),
            "wbits": wbits,
            "binary": int(is_binary(nodes[0])),
            "max_in": max(n.attrs["weight"].shape[1] for n in nodes),
            "max_row_words": max([row_words(n.attrs["weight"].shape[1], weight_container(n), word_bits) for n in nodes]
                                 + [row_words(steps * simd, wbits, word_bits)]),
            "acc_bits": max(int(n.attrs["acc_bits"]) for n in nodes),
            "max_steps": max(1, steps),
        }

    def ddr_blobs_for(self, node: Node, word_bits: int, knobs: dict[str, int],
                      board: Board | None) -> dict[str, np.ndarray]:
        """The block-sparse layout when :func:`block_form` picks it: the weights block by block, each row
        as its steps x SIMD slots (zero in empty lanes), the block table and the column table."""
        blobs = self.ddr_blobs(node, word_bits)
        if board is None or not block_form(node, knobs, board):
            return blobs
        simd = int(knobs["simd"])
        w = node.attrs["weight"]
        wc = weight_container(node)
        parts, table, cols_all, first, at = [], [], [], 0, 0
        for rows, cols in block_list(node):
            slots = lane_slots(cols, simd)
            mat = np.zeros((rows.size, slots.size), dtype=np.int64)
            used = slots >= 0
            mat[:, used] = w[np.ix_(rows, slots[used])]
            parts.append(pack_rows(mat, wc, word_bits))
            steps = slots.size // simd
            table += [rows.size, steps, first, at]
            first += rows.size
            at += rows.size * row_words(slots.size, wc, word_bits)
            cols_all.append(slots)
        blobs["weights"] = np.concatenate(parts)
        blobs["blocks"] = pack_int32(np.asarray(table), word_bits)
        blobs["cols"] = pack_int32(np.concatenate(cols_all), word_bits)
        return blobs

    def ddr_blobs(self, node: Node, word_bits: int) -> dict[str, np.ndarray]:
        w = node.attrs["weight"]
        blobs = {"weights": pack_bipolar(w, word_bits) if is_binary(node)
                 else pack_rows(w, weight_container(node), word_bits),
                 "bias": pack_int32(node.attrs["bias"], word_bits),
                 "rows": pack_int32(row_table(node)[0], word_bits)}
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
        knobs = ctx.knobs.get(self.unit(node))
        form = dense_form(node, knobs, ctx.board) if knobs is not None and ctx.board is not None else "skip"
        blocked = form == "blocks"
        return {
            "n_blocks": len(block_list(node)) if blocked else 0,
            "blocks_offset": ctx.offset(node, "blocks") if blocked else 0,
            "cols_offset": ctx.offset(node, "cols") if blocked else 0,
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
            "live": int(n_out) if form == "all" else row_table(node)[1],
            "rows_offset": ctx.offset(node, "rows"),
            "in_buf": ctx.buffer(node.inputs[0].name),
            "out_act": ctx.buffer(out) if rq is not None else ctx.dummy["act"],
            "out_acc": ctx.dummy["acc"] if rq is not None else ctx.buffer(out),
        }

    # ---- fusion ----
    def absorb_epilogue(self, node: Node, epilogue: Epilogue) -> bool:
        return absorb_gemm_epilogue(node, epilogue)

    # ---- constant elements and unused columns (passes.sparsity) ----
    def known_outputs(self, node: Node, known: list[Known | None]) -> list[Known | None]:
        """An output is known where every input its row multiplies by a non-zero weight is known: the
        all-zero rows of pruned channels everywhere (the epilogue of the bias), more when inputs are."""
        (k,) = known
        w = node.attrs["weight"]
        nz = w != 0
        x = node.inputs[0].info
        out = (1,) + tuple(node.outputs[0].info.shape)
        zp = int(node.attrs["zp_in"])
        if k is None:
            dead = ~nz.any(axis=1)
            if not dead.any():
                return [None]
            mask = np.broadcast_to(dead, out).copy()
            values = np.full((1,) + tuple(x.shape), zp, dtype=np.int64)
        else:
            unknown = (~k.mask).reshape(-1, w.shape[1]).astype(np.float32) @ nz.T.astype(np.float32)
            mask = (unknown == 0).reshape(out)
            if not mask.any():
                return [None]
            values = k.values
        return [Known(mask, np.asarray(self.reference(node, [values])[0], dtype=np.int64).reshape(out))]

    def fold_known_inputs(self, node: Node, known: list[Known | None]) -> bool:
        """An input column that holds the same known integer v in every row contributes
        w[n, k] * (v - zp_in) to row n for every input: that goes into the bias (exact, in integers) and
        the column's weights become zero, so the column is no longer read."""
        (k,) = known
        if k is None:
            return False
        w = node.attrs["weight"]
        kdim = w.shape[1]
        mask = k.mask.reshape(-1, kdim)
        vals = k.values.reshape(-1, kdim)
        uniform = mask.all(axis=0) & (vals == vals[:1]).all(axis=0)
        cols = uniform & (w != 0).any(axis=0)
        if not cols.any():
            return False
        contrib = w[:, cols].astype(np.int64) @ (vals[0, cols] - int(node.attrs["zp_in"]))
        bias = np.asarray(node.attrs["bias"], dtype=np.int64) + contrib
        if np.abs(bias).max(initial=0) > 2**31 - 1:
            log.info("%s: folding constant input columns would overflow the 32-bit bias; kept", node.name)
            return False
        weight = w.copy()
        weight[:, cols] = 0
        node.attrs["weight"] = weight
        node.attrs["bias"] = bias
        node.attrs.pop("blocks", None)
        finalize_dense_attrs(node, node.inputs[0].info)
        return True

    def needed_input_columns(self, node: Node) -> np.ndarray | None:
        needed = np.any(node.attrs["weight"] != 0, axis=0)
        return None if needed.all() else needed

    def keep_input_columns(self, node: Node, kept: np.ndarray) -> None:
        w = node.attrs["weight"]
        dropped = np.ones(w.shape[1], dtype=bool)
        dropped[kept] = False
        if np.any(w[:, dropped] != 0):
            raise VaqfError(f"{node.name}: cannot drop input columns that have non-zero weights")
        node.attrs.setdefault("k_full", int(w.shape[1]))
        node.attrs["weight"] = np.ascontiguousarray(w[:, kept])
        node.attrs.pop("blocks", None)

    def find_blocks(self, node: Node) -> bool:
        """Blocks from :func:`vaqf.ops.blocks.group_rows`, kept when the block form is faster than the
        row-skipping one for at least one (PE, SIMD) of the layer on the default board (ZCU102); the design's
        own knobs and board then pick the form (:func:`block_form`)."""
        from vaqf.hw.board import get_board
        from vaqf.ops.blocks import group_rows

        old = node.attrs.get("blocks")
        new = None
        w = node.attrs["weight"]
        groups = None if is_binary(node) else group_rows(w)
        if groups is not None and not (len(groups) == 1 and groups[0][1].size == w.shape[1]):
            node.attrs["blocks"] = make_blocks(node, groups)
            board = get_board("zcu102")
            ks = self.knobs(node)
            if any(_cycles(node, pe, simd, 1, board)[2] == "blocks" for pe in ks["pe"] for simd in ks["simd"]):
                new = node.attrs["blocks"]
        if new is None:
            node.attrs.pop("blocks", None)
        else:
            node.attrs["blocks"] = new
        return not _same_blocks(old, new)

    def densified_attrs(self, node: Node) -> dict[str, Any] | None:
        """Zero weights made 1 and removed input columns restored (as 1s): every row computed over all K."""
        w = node.attrs["weight"]
        dead = not nonzero_rows(w).all()
        if not dead and node.attrs.get("blocks") is None and node.attrs.get("k_full") is None:
            return None
        k_full = int(node.attrs.get("k_full", w.shape[1]))
        full = np.ones((w.shape[0], k_full), dtype=w.dtype)
        full[:, : w.shape[1]] = np.where(w != 0, w, 1)
        attrs = {k: v for k, v in node.attrs.items() if k not in ("blocks", "k_full")}
        attrs["weight"] = full
        x = node.inputs[0].info
        sums = np.abs(full.astype(np.int64)).sum(axis=1)
        bound = int((sums * _in_max_abs(x) + np.abs(attrs["bias"])).max(initial=0))
        at = int_type_for_range(-bound, bound)
        attrs["acc_bits"], attrs["acc_bound"] = at.bits, at.max
        return attrs


@dataclass(frozen=True)
class DenseResources:
    """Resources of a PE x SIMD dense unit serving one layer, with the LUT terms kept apart."""

    lut_terms: dict[str, int]
    ff: int
    dsp: int
    bram18: int
    uram: int = 0

    #: the terms that make up a matrix-vector unit in FINN-R's LUT model (no output stage, no weight memory)
    MVU_TERMS: ClassVar[tuple[str, ...]] = ("control", "products", "adder_tree", "accumulator", "output_mux")

    @property
    def lut(self) -> int:
        return sum(self.lut_terms.values())

    @property
    def mvu_lut(self) -> int:
        return sum(self.lut_terms[t] for t in self.MVU_TERMS)


def product_bits(node: Node) -> int:
    """Bits of one weight x activation product of this layer on its unit.

    The unit's weight operand is the signed container of the unit (``weight_container``; bipolar is
    +-1); the activation operand is the input integer itself: a zero point is folded into the bias
    (sum_k w[n,k] * (x[k] - zp) = sum_k w[n,k] * x[k] - zp * sum_k w[n,k], a per-row constant), so an
    unsigned 8-bit activation times a signed 4-bit weight is a 12-bit product, as in FINN's W + A.
    """
    x = node.inputs[0].info.qtype
    xs = (int(x.min), int(x.max))
    if is_binary(node):
        ws = (-1, 1)
    else:
        wc = weight_container(node)
        ws = (-(2 ** (wc - 1)), 2 ** (wc - 1) - 1)
    prods = [a * b for a in xs for b in ws]
    return signed_bits_for_range(min(prods), max(prods))


def dsp_packing(node: Node) -> int:
    """Integer products one DSP48E2 computes per cycle for this layer: 2 or 1 (0 for binary weights).

    The packing of Xilinx WP486 ("Deep Learning with INT8 Optimization on Xilinx Devices") and WP487
    ("8-Bit Dot-Product Acceleration"): the two weights of two PEs go into the 27-bit pre-adder path,
    one shifted left by 18 bits (A = w1 * 2**18 + w2), the shared activation into the 18-bit B port, so
    the 27 x 18 multiplier returns w1*x * 2**18 + w2*x: two products from one slice. It needs both weights
    to be signed 8-bit or narrower (w1 * 2**18 must fit the 27-bit port) and the activation to be INT8 or
    UINT8 (WP487 adds UINT8 data), which keeps each product within 16 bits so the lower one cannot reach
    the upper one's field. Wider operands take ``dsp48e2_per_product`` slices per product.
    """
    if is_binary(node):
        return 0
    x = node.inputs[0].info.qtype
    return 2 if weight_container(node) <= 8 and int(x.bits) <= 8 else 1


def dense_resources(node: Node, pe: int, simd: int, epi: int = 1) -> DenseResources:
    """LUT, FF, DSP48E2 and BRAM18 of a PE x SIMD dense unit with EPI requantizers running ``node``.

    Counted from the datapath, with the UltraScale+ primitives of :mod:`vaqf.hw.cost` (a LUT6 per
    result bit of a carry-chain adder, LUT6 + F7/F8 multiplexers, 64 bits of LUTRAM per LUT). p is
    :func:`product_bits`, ``acc`` the layer's accumulator width, q = acc + MANTISSA_BITS + 1 the width of
    the requantization product.

    - ``control`` (300): the loop counters and compares of the block/row/step loops, the DDR and
      buffer address adders and the state machine, roughly ten 16..32-bit adders and compares.
    - ``products``: binary weights: each of the PE x SIMD lanes negates its activation when the weight
      bit is 0, an XOR and the adder's carry-in, one LUT per bit of the p-bit result. Integer weights:
      the products are on DSP48E2 slices (:func:`dsp_packing`); a slice that packs two products hands
      back the upper one short by the lower one's borrow (w1*x*2**18 + w2*x with w2*x < 0), so each
      packed pair costs a p-bit incrementer (WP486): p * floor(PE/2) * SIMD.
    - ``adder_tree``: per PE a balanced tree over SIMD p-bit products (:func:`adder_tree_luts`).
    - ``accumulator``: per PE one acc-bit adder (the bias load at the first step shares its LUTs).
    - ``output_mux``: the epilogue takes EPI of the PE accumulators per cycle, EPI acc-bit PE/EPI:1 muxes.
    - ``epilogue``: EPI requantizers, each: the rounding right shift of the q-bit product by up to 62 bits
      (three levels of 4:1 muxes, 3q), the rounding increment (q), the clamp to [lo, hi] (two q-bit
      compares and a select, ~q) and the zero-point add (q); plus the PE multipliers and shifts in
      LUTRAM.
    - ``weight_lutram``: each PE holds the current and the next weight row (double buffering) as
      ceil(K/SIMD) words of SIMD x W bits each (one word per MAC step); under 1 Kb they sit in LUTRAM,
      larger in BRAM18s (``bram18``).

    The MVU part (control .. output_mux) is cross-checked against FINN-R's MVAU estimate in
    tests/hw/test_cost.py. FF: a pipeline register per adder-tree and product bit, the accumulators
    and their drained copies, the per-PE bias, and the requantizer's pipeline. DSP48E2: the products
    plus the acc x MANTISSA_BITS requantization multiply.
    """
    w = node.attrs["weight"]
    k = int(w.shape[1])
    acc = int(node.attrs["acc_bits"])
    p = product_bits(node)
    wc = weight_container(node)
    packing = dsp_packing(node)
    q = acc + MANTISSA_BITS + 1
    if is_binary(node):
        products = pe * simd * p
        dsp = 0
    elif packing == 2:
        products = (pe // 2) * simd * p
        dsp = math.ceil(pe / 2) * simd
    else:
        products = 0
        dsp = pe * simd * dsp48e2_per_product(wc, int(node.attrs["in_bits"]))
    tree = pe * adder_tree_luts(simd, p)
    weights = memory_cost(2 * math.ceil(k / simd), simd * wc)  # two rows per PE: double buffering
    terms = {
        "control": CONTROL_LUT,
        "products": products,
        "adder_tree": tree,
        "accumulator": pe * acc,
        "output_mux": epi * acc * mux_luts(max(1, pe // epi)),
        "epilogue": epi * 6 * q + lutram_luts(pe, MANTISSA_BITS + SHIFT_BITS),
        "weight_lutram": pe * weights.lut,
    }
    ff = 400 + (products if is_binary(node) else 0) + tree + pe * (2 * acc + 32) + 3 * q * epi
    dsp += epi * dsp48e2_per_product(acc, MANTISSA_BITS + 1)
    return DenseResources(terms, ff, dsp, pe * weights.bram18)


def nonzero_rows(w: np.ndarray) -> np.ndarray:
    """Whether each row of a 2-D weight array holds a non-zero (``np.any(w != 0, axis=1)``), compiled
    (:func:`vaqf.hw.kernels.nonzero_rows`): the cost model asks for every knob combination."""
    from vaqf.hw.kernels import nonzero_rows as compiled  # numba loads on first use, not on import

    return compiled(w)


def live_rows(node: Node) -> int:
    """How many rows are computed: those of the blocks in a block-sparse layer, else the rows holding a
    non-zero weight (:func:`row_table`'s count, without building the table; the cost model asks often)."""
    blocks = node.attrs.get("blocks")
    if blocks is not None:
        return int(np.asarray(blocks["rows"]).size)
    return int(np.count_nonzero(nonzero_rows(node.attrs["weight"])))


def row_table(node: Node) -> tuple[np.ndarray, int]:
    """The rows with a non-zero weight (block by block in a block-sparse layer), then the all-zero rows
    (pruned channels); and the live count."""
    nz = nonzero_rows(node.attrs["weight"])
    blocks = node.attrs.get("blocks")
    live = np.asarray(blocks["rows"], dtype=np.int64) if blocks is not None else np.flatnonzero(nz)
    return np.concatenate([live, np.flatnonzero(~nz)]).astype(np.int64), int(live.size)


# ---- block-sparse layers ------------------------------------------------------------------------

def lane_slots(cols: np.ndarray, simd: int) -> np.ndarray:
    """The columns of a block laid out for a SIMD-lane MAC step: slot t*SIMD + s holds the t-th column
    (in increasing order) with column % SIMD == s, or -1. Lane s only ever reads activation bank s, so a
    step's SIMD reads never collide; the step count is the fullest bank's column count."""
    cols = np.sort(np.asarray(cols, dtype=np.int64))
    if cols.size == 0:
        return np.zeros(0, dtype=np.int64)
    bank = cols % simd
    order = np.argsort(bank, kind="stable")
    b, c = bank[order], cols[order]
    rank = np.arange(c.size) - np.searchsorted(b, b, side="left")
    slots = np.full((int(rank.max()) + 1) * simd, -1, dtype=np.int64)
    slots[rank * simd + b] = c
    return slots


def make_blocks(node: Node, groups: list[tuple[np.ndarray, np.ndarray]]) -> dict[str, np.ndarray]:
    """The ``blocks`` attribute for row groups with their column sets, with each block's MAC steps at every
    SIMD choice (the cost model's table, so a design search never lays columns out)."""
    rows = [np.asarray(r, dtype=np.int64) for r, _ in groups]
    cols = [np.sort(np.asarray(c, dtype=np.int64)) for _, c in groups]
    steps = np.array([[lane_slots(c, s).size // s for s in SIMD_CHOICES] for c in cols], dtype=np.int64)
    return {"rows": np.concatenate(rows) if rows else np.zeros(0, np.int64),
            "cols": np.concatenate(cols) if cols else np.zeros(0, np.int64),
            "shape": np.array([[r.size, c.size] for r, c in zip(rows, cols, strict=True)],
                              dtype=np.int64).reshape(-1, 2),
            "steps": steps.reshape(-1, len(SIMD_CHOICES))}


def block_list(node: Node) -> list[tuple[np.ndarray, np.ndarray]]:
    """(rows, columns) of each dense block; [] for a layer without blocks."""
    b = node.attrs.get("blocks")
    if b is None:
        return []
    out, r0, c0 = [], 0, 0
    for nr, nc in np.asarray(b["shape"]).reshape(-1, 2):
        out.append((np.asarray(b["rows"][r0:r0 + nr], dtype=np.int64),
                    np.asarray(b["cols"][c0:c0 + nc], dtype=np.int64)))
        r0, c0 = r0 + int(nr), c0 + int(nc)
    return out


def check_blocks(node: Node) -> None:
    """Blocks partition the live rows and hold every non-zero weight; else a VaqfError naming the node."""
    w = node.attrs["weight"]
    b = node.attrs["blocks"]
    n_out, k = w.shape
    shape = np.asarray(b["shape"]).reshape(-1, 2)
    rows = np.asarray(b["rows"])
    if shape[:, 0].sum() != rows.size or shape[:, 1].sum() != np.asarray(b["cols"]).size \
            or np.asarray(b["steps"]).shape != (shape.shape[0], len(SIMD_CHOICES)):
        raise VaqfError(f"{node.name}: block table sizes do not match")
    if is_binary(node):
        raise VaqfError(f"{node.name}: bipolar weights have no zeros to skip; blocks are for integer weights")
    covered = np.zeros(w.shape, dtype=bool)
    for r, c in block_list(node):
        if r.size == 0 or c.size == 0 or r.min() < 0 or r.max() >= n_out or c.min() < 0 or c.max() >= k \
                or np.unique(c).size != c.size:
            raise VaqfError(f"{node.name}: a dense block has rows or columns outside the {n_out}x{k} weights")
        covered[np.ix_(r, c)] = True
    live = np.flatnonzero(nonzero_rows(w))
    if np.unique(rows).size != rows.size or not np.array_equal(np.sort(rows), live):
        raise VaqfError(f"{node.name}: the dense blocks must partition the rows with non-zero weights "
                        "(the weights changed after the blocks were found; rerun passes.sparsity.FindDenseBlocks)")
    if np.any((w != 0) & ~covered):
        raise VaqfError(f"{node.name}: a non-zero weight lies outside every dense block")


def _same_blocks(a: dict | None, b: dict | None) -> bool:
    if a is None or b is None:
        return a is b
    return all(np.array_equal(np.asarray(a[k]), np.asarray(b[k])) for k in ("rows", "cols", "shape", "steps"))


def max_block_steps(node: Node, simd: int) -> int:
    b = node.attrs.get("blocks")
    if b is None or np.asarray(b["steps"]).size == 0:
        return 0
    return int(np.asarray(b["steps"])[:, SIMD_CHOICES.index(simd)].max())


def _segment(n_rows: int, steps: int, rw: int, rows: int, pe: int, epi: int, simd: int, board: Board,
             table: int) -> tuple[int, int]:
    """Cycles and DDR bytes of one weight-stationary GEMM over ``n_rows`` output rows (see Dense.cost)."""
    groups = math.ceil(n_rows / pe)
    if groups == 0:
        return 0, 0
    word_bits = board.axi_bits
    depth = 4 + max(1, math.ceil(math.log2(max(simd, 2))))
    items = pe * rw + 3 * pe  # weight words, then bias, multiplier and shift per row: one per cycle
    bytes_block = pe * rw * word_bits // 8 + 12 * pe
    load = max(items, math.ceil(bytes_block / board.ddr_bytes_per_cycle))
    compute = (rows + 1) * max(steps, math.ceil(pe / epi))
    return DDR_LATENCY + table + load + (groups - 1) * max(compute, load) + compute + depth, groups * bytes_block


#: the ways a dense layer can run (see Dense.cost): live rows only, every row, or dense blocks
FORMS = ("skip", "all", "blocks")


def _cycles(node: Node, pe: int, simd: int, epi: int, board: Board) -> tuple[int, int, str]:
    """(cycles, DDR bytes, form) of the fastest form for these knobs (ties go to the earlier of FORMS)."""
    w = node.attrs["weight"]
    n_out, k = w.shape
    rows = int(node.attrs["rows"])
    wb = weight_container(node)
    live = live_rows(node)
    rw = row_words(k, wb, board.axi_bits)
    steps = math.ceil(k / simd)
    dead = math.ceil(rows * (n_out - live) / epi)  # constant outputs of the pruned rows, EPI per cycle
    skip, skip_bytes = _segment(live, steps, rw, rows, pe, epi, simd, board, 0)
    options = [(dead + skip, skip_bytes, "skip")]
    if live < n_out:  # computing the pruned rows too (zero weights, the bias alone) can be cheaper
        every, every_bytes = _segment(n_out, steps, rw, rows, pe, epi, simd, board, 0)
        options.append((every, every_bytes, "all"))
    b = node.attrs.get("blocks")
    if b is not None:
        block_steps = np.asarray(b["steps"])[:, SIMD_CHOICES.index(simd)]
        cycles, nbytes = 0, 0
        for (n_rows, _), st in zip(np.asarray(b["shape"]).reshape(-1, 2), block_steps, strict=True):
            lanes = int(st) * simd
            c, by = _segment(int(n_rows), int(st), row_words(lanes, wb, board.axi_bits), rows, pe, epi, simd, board,
                             DDR_LATENCY + 4 + lanes)  # block and column tables: a DDR round trip, one lane a cycle
            cycles += c
            nbytes += by + 4 * (lanes + 4)
        options.append((dead + cycles, nbytes, "blocks"))
    return min(options, key=lambda o: (o[0], FORMS.index(o[2])))


def dense_form(node: Node, knobs: dict[str, int], board: Board) -> str:
    """How the layer runs with these knobs: one of FORMS, the fastest (see Dense.cost)."""
    pe, simd = int(knobs["pe"]), int(knobs["simd"])
    return _cycles(node, pe, simd, min(int(knobs.get("epi", 1)), pe), board)[2]


def block_form(node: Node, knobs: dict[str, int], board: Board) -> bool:
    """Whether the layer runs as dense blocks with these knobs."""
    return node.attrs.get("blocks") is not None and dense_form(node, knobs, board) == "blocks"


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
