"""dense: y = requant(relu(sum_k (x[k] - zp_x) * w[n, k] + bias[n])), run on the GEMM unit
(vaqf/units/gemm.py: knobs, cost, forms, DDR layout, descriptor).

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
import weakref
from collections.abc import Callable
from typing import Any

import numpy as np

from vaqf.errors import VaqfError
from vaqf.ir import BinaryType, IntType, Node, TensorInfo, int_type_for_range
from vaqf.ir.qarith import Rounding, requantize
from vaqf.ops.attrs import REQUANT, Attr, array, boolean, integer, maybe, qtype, record
from vaqf.ops.base import Epilogue, Known, OpSpec, register
from vaqf.ops.common import absorb_gemm_epilogue, max_abs, requant_out_info

log = logging.getLogger(__name__)

#: the lane counts a block's MAC steps are recorded for (the ``blocks`` attribute's ``steps`` columns): every
#: lane choice of vaqf.hw.layout.LANE_CHOICES, which the GEMM unit's SIMD takes
SIMD_CHOICES = (1, 2, 4, 8, 16, 32, 64, 128, 256)


def is_binary(node: Node) -> bool:
    return isinstance(node.attrs["w_type"], BinaryType)


#: id(weight array) -> (a weak reference to it, its rows' sums of |w|): verify re-derives every dense layer's
#: accumulator after every pass, and the weights (tens of millions for a ViT) rarely change in between
_ROW_SUMS: dict[int, tuple[weakref.ref, np.ndarray]] = {}


def abs_row_sums(w: np.ndarray) -> np.ndarray:
    """sum_k |w[n, k]| per row, int64. Cached per array: weights are values (a pass that changes a layer's
    weights stores a new array, as every pass here does), never edited in place once in a node."""
    key = id(w)
    hit = _ROW_SUMS.get(key)
    if hit is not None and hit[0]() is w:
        return hit[1]
    wide = np.int16 if w.dtype.itemsize == 1 else np.int64  # |int8| fits int16 (-128 does not fit int8)
    sums = np.abs(w.astype(wide)).sum(axis=1, dtype=np.int64)
    try:
        ref = weakref.ref(w, lambda _, k=key: _ROW_SUMS.pop(k, None))
    except TypeError:  # not an ndarray (a list): nothing to key on
        return sums
    _ROW_SUMS[key] = (ref, sums)
    return sums


def acc_type(node: Node, x: TensorInfo) -> IntType:
    """Narrowest type bounding every partial sum: |bias| + sum_k |w[n,k]| * max|x - zp|, max over n."""
    xmax = max_abs(int(x.qtype.min), int(x.qtype.max), x.zero_point)
    bias = np.abs(np.asarray(node.attrs["bias"], dtype=np.int64))
    bound = int((abs_row_sums(node.attrs["weight"]) * xmax + bias).max(initial=0))
    return int_type_for_range(-bound, bound)


def _in_max_abs(x: TensorInfo) -> int:
    return max_abs(int(x.qtype.min), int(x.qtype.max), x.zero_point)


def reference(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, zp_in: int, relu: bool = False,
              requant: dict[str, Any] | None = None) -> np.ndarray:
    """The dense layer's integer semantics, in int64 (exact while the accumulator bound ``acc_bound`` is below
    2**63, as for the C++ accumulator of ``acc_bits``; the requantization product is checked to fit 64 bits):

      acc[..., n] = sum_k (x[..., k] - zp_in) * weight[n, k] + bias[n]
      acc         = max(acc, 0)                                        (relu)
      y           = saturate(round(acc * m[n] / 2**s[n]) + zp_out)     (requant; rounding as it names it)

    Without requantization the (rectified) accumulator is the output.
    """
    acc = (np.asarray(x, dtype=np.int64) - int(zp_in)) @ np.asarray(weight, dtype=np.int64).T
    acc = acc + np.asarray(bias, dtype=np.int64)
    if relu:
        acc = np.maximum(acc, 0)
    if requant is None:
        return acc
    qt = requant["qtype"]
    return requantize(acc, requant["mantissa"], requant["shift"], int(requant["zero_point"]), int(qt.min),
                      int(qt.max), Rounding(requant["rounding"]), offset=requant.get("offset"))


BLOCKS = record(
    Attr("rows", array("int", 1), "the rows of every block, block after block"),
    Attr("cols", array("int", 1), "the input columns of every block, block after block, increasing in each"),
    Attr("shape", array("int", 2), "[blocks, 2]: each block's row and column counts"),
    Attr("steps", array("int", 2), "[blocks, len(SIMD_CHOICES)]: each block's MAC steps at every lane count"),
)


@register
class Dense(OpSpec):
    name = "dense"
    unit_kind = "gemm"  # vaqf/units/gemm.py
    precision_inputs = True
    attributes = (
        Attr("weight", array("int", 2), "[N, K] integer weights (+1/-1 when bipolar)"),
        Attr("w_type", qtype(), "the weights' type: IntType, or BinaryType for bipolar weights"),
        Attr("w_scale", array("float", 1), "[N] per-output-channel weight scales"),
        Attr("bias", array("int", 1), "[N] bias on the accumulator's grid (input scale x weight scale)"),
        Attr("relu", boolean, "a fused relu on the accumulator"),
        Attr("requant", maybe(REQUANT), "a fused requantization of the accumulator (None: output it)"),
        Attr("zp_in", integer(), "the input's zero point", derived=True),
        Attr("in_bits", integer(lo=1), "the input's bits as a signed operand", derived=True),
        Attr("acc_bits", integer(lo=1), "bits of the narrowest accumulator holding every partial sum",
             derived=True),
        Attr("acc_bound", integer(lo=0), "the largest |partial sum| the input type allows", derived=True),
        Attr("rows", integer(lo=1), "input rows sharing the weights (tokens)", derived=True),
        Attr("blocks", maybe(BLOCKS), "dense blocks of sparse weights (passes.sparsity.FindDenseBlocks)",
             required=False),
        Attr("k_full", integer(lo=1), "the input width before unused columns were dropped", required=False),
    )

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
        a = node.attrs
        return [reference(inputs[0], a["weight"], a["bias"], a["zp_in"], bool(a.get("relu")), a.get("requant"))]

    def derive(self, node: Node) -> dict[str, Any]:
        return derived_dense_attrs(node, node.inputs[0].info)

    def finalize(self, node: Node) -> None:
        finalize_dense_attrs(node, node.inputs[0].info)

    def macs(self, node: Node) -> int:
        return int(node.attrs["rows"]) * int(node.attrs["weight"].size)

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

    def find_blocks(self, node: Node, pays_off: Callable[[Node], bool]) -> bool:
        """Blocks from :func:`vaqf.ops.blocks.group_rows`, kept when ``pays_off`` (the GEMM unit's
        ``blocks_pay_off``: faster than the other forms for at least one (PE, SIMD) of the layer on the
        default board); the design's own knobs and board then pick the form (the unit's per-layer mode)."""
        from vaqf.ops.blocks import group_rows

        old = node.attrs.get("blocks")
        new = None
        w = node.attrs["weight"]
        groups = None if is_binary(node) else group_rows(w)
        if groups is not None and not (len(groups) == 1 and groups[0][1].size == w.shape[1]):
            node.attrs["blocks"] = make_blocks(node, groups)
            if pays_off(node):
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


def _nonzero_rows_loop(w):  # noqa: ANN001, ANN202
    n, k = w.shape
    out = np.zeros(n, dtype=np.bool_)
    for i in range(n):
        for j in range(k):
            if w[i, j] != 0:
                out[i] = True
                break
    return out


_compiled_scan: list[Callable[[np.ndarray], np.ndarray]] = []


def nonzero_rows(w: np.ndarray) -> np.ndarray:
    """Whether each row of a 2-D weight array holds a non-zero (``np.any(w != 0, axis=1)``), compiled and
    stopping at a row's first non-zero (an unpruned row ends at once): the cost model asks for every knob
    combination. numba loads on the first call, not when the ops are imported (start-up stays fast)."""
    if not _compiled_scan:
        from vaqf.jit import jit

        _compiled_scan.append(jit(_nonzero_rows_loop))
    return _compiled_scan[0](w)


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


def dense_attrs(weight: np.ndarray, w_type: IntType | BinaryType, w_scale: np.ndarray | float,
                bias: np.ndarray | None = None, relu: bool = False,
                requant: dict[str, Any] | None = None) -> dict[str, Any]:
    """The attributes of a dense layer from its integer weights [N, K] (stored in int8, or int16 beyond 8 bits),
    their type and per-channel scales, and its bias on the accumulator's grid (zeros when None); the derived
    ones follow from the input when the node is made (``Dense.make(graph, [x], dense_attrs(...))``)."""
    n_out = np.shape(weight)[0]
    narrow = isinstance(w_type, BinaryType) or w_type.bits <= 8
    return {"weight": np.asarray(weight).astype(np.int8 if narrow else np.int16),
            "w_type": w_type,
            # float32-rounded (exact 24-bit dyadic scales), held as float64 as every scale is
            "w_scale": np.broadcast_to(np.asarray(w_scale, dtype=np.float32), (n_out,)).astype(np.float64),
            "bias": np.zeros(n_out, np.int64) if bias is None else np.asarray(bias, dtype=np.int64),
            "relu": bool(relu), "requant": requant}


def derived_dense_attrs(node: Node, x: TensorInfo) -> dict[str, Any]:
    """The attributes that depend on the input type: its zero point, its bits as a signed operand, the
    accumulator's bits and bound (:func:`acc_type`) and the rows sharing the weights."""
    at = acc_type(node, x)
    return {"zp_in": int(x.zero_point), "in_bits": int(x.qtype.bits) + (0 if x.qtype.signed else 1),
            "acc_bits": at.bits, "acc_bound": int(at.max), "rows": int(np.prod(x.shape[:-1], dtype=np.int64))}


def finalize_dense_attrs(node: Node, x: TensorInfo) -> None:
    """Derive the attributes that depend on the input type (call after creating or retyping a dense)."""
    node.attrs.update(derived_dense_attrs(node, x))
    if _in_max_abs(x) == 0:
        raise VaqfError(f"{node.name}: input type {x.qtype} holds a single value")
