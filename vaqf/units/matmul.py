"""The matmul unit (hls/vaqf/matmul.h, templates/units/matmul.j2): activation x activation products (Q.K^T and
A.V of attention) on a weight-stationary DSP array of PE output columns x L lanes, every operand and the
output walked by one affine (word, column) walker, each in word or element mode (the per-layer mode); the
product's meaning is the op's (vaqf/ops/matmul.py)."""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from vaqf.errors import IRError, VaqfError
from vaqf.hw.board import Board
from vaqf.hw.cost import (
    Cost,
    adder_tree_luts,
    dsp48e2_per_product,
    memory_cost,
    mux_luts,
    signed_bits_for_range,
    tree_depth,
)
from vaqf.hw.layout import LANE_CHOICES, last_dim, row_words
from vaqf.ir import Node, TensorInfo
from vaqf.ir.qarith import Rounding
from vaqf.ops.common import MANTISSA_BITS
from vaqf.ops.matmul import operand_info
from vaqf.units.base import Descriptor, Unit, register_unit

if TYPE_CHECKING:
    from vaqf.units.base import EmitContext

PE_CHOICES = (1, 2, 4, 8, 16, 32, 64)

#: pipeline depth of the B loader: address, buffer read, lane multiplexer, local write
LOAD_DEPTH = 4
#: requantizer stages: multiply (3, DSP48E2 pipeline), round and shift (2), clamp (1)
REQUANT_DEPTH = 6


@dataclass(frozen=True)
class MatmulDesc(Descriptor):
    """``vaqf::matmul_desc``: one matmul layer; its three walks (A: head, row, k; B: head, column, k; output:
    head, row, column) as mode, start (word, column) and one (word, column) step per axis (:class:`Walk`)."""

    cpp = "vaqf::matmul_desc"
    batch: int
    m: int
    k: int
    n: int
    kw: int
    zp_a: int
    zp_b: int
    mant: int
    shift: int
    zp_out: int
    out_lo: int
    out_hi: int
    rounding: int
    relu: int
    requant: int
    a_word: int
    a_w: int
    a_c: int
    a_hw: int
    a_hc: int
    a_rw: int
    a_rc: int
    a_kw: int
    a_kc: int
    b_word: int
    b_w: int
    b_c: int
    b_hw: int
    b_hc: int
    b_cw: int
    b_cc: int
    b_kw: int
    b_kc: int
    o_word: int
    o_w: int
    o_c: int
    o_hw: int
    o_hc: int
    o_rw: int
    o_rc: int
    o_cw: int
    o_cc: int


#: the descriptor's walk fields: prefix and the letters of its three axes
_WALK_AXES = {"a": "hrk", "b": "hck", "o": "hrc"}


def mac_depth(lanes: int) -> int:
    """Pipeline depth of the mac loop: address and buffer read (2), zero points (1), multiply (3), the
    L-leaf adder tree, accumulate (1), result multiplexer (1), requantizer, write (1)."""
    return 9 + tree_depth(lanes) + REQUANT_DEPTH


def requant_luts(acc_bits: int) -> int:
    """One requantizer as hls/vaqf/qarith.h ``requant_narrow<ACC_BITS>`` writes it, on the q = acc + 25-bit
    product (the GEMM unit's count, :func:`vaqf.units.gemm.dense_resources` ``epilogue``): the rounding right
    shift (three levels of 4:1 muxes, 3q), the rounding compare and increment (q), the clamp (q) and the
    zero-point add (q)."""
    return 6 * (int(acc_bits) + MANTISSA_BITS + 1)


def _signed_bits(x: TensorInfo) -> int:
    return int(x.qtype.bits) + (0 if x.qtype.signed else 1)


def _operand_bits(x: TensorInfo) -> int:
    """Bits of an operand once its zero point is subtracted (what the multipliers see)."""
    return signed_bits_for_range(int(x.qtype.min) - int(x.zero_point), int(x.qtype.max) - int(x.zero_point))


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


@dataclass(frozen=True)
class Walk:
    """An operand (or the output) as the kernel walks it: element (i, j, k) of its three axes is lane
    ``c % L`` of word ``w + c // L`` with ``(w, c) = (w0, c0) + i*step[0] + j*step[1] + k*step[2]``
    (hls/vaqf/matmul.h). ``word``: 0, one element per cycle; 1, whole words along the last axis; 2 (B only),
    whole words along the middle (column) axis, one word holding L columns at one k."""

    word: int
    w0: int
    c0: int
    steps: tuple[tuple[int, int], ...]

    def fields(self) -> list[int]:
        return [int(self.word), self.w0, self.c0] + [v for st in self.steps for v in st]


def _walk(node: Node, what: str, base: int, strides: tuple[int, int, int], counts: tuple[int, int, int],
          d: int, lanes: int) -> tuple[int, int, list[tuple[int, int]], np.ndarray]:
    """(w0, c0, per-axis (word, column) steps, every start column) of the elements
    ``base + i*s0 + j*s1 + k*s2`` of a buffer holding rows of ``d`` elements in words of ``lanes``;
    a VaqfError naming the node when the walk is not affine in (word, column)."""
    w0, c0, steps, starts, affine = _affine_walk(int(base), tuple(int(v) for v in strides),
                                                 tuple(int(v) for v in counts), int(d), int(lanes))
    if not affine:
        raise VaqfError(f"{node.name}: the {what} view is not an affine walk over rows of {d} elements")
    return w0, c0, list(steps), starts


@functools.lru_cache(maxsize=4096)
def _affine_walk(base: int, strides: tuple[int, int, int], counts: tuple[int, int, int], d: int,
                 lanes: int) -> tuple[int, int, tuple[tuple[int, int], ...], np.ndarray, bool]:
    """:func:`_walk`'s figures and whether the walk is affine; cached, since the search asks for every knob
    combination and the walk depends only on the view and the lanes (the array returned is read-only)."""
    rw = row_words(d, lanes)
    grids = np.ix_(*(np.arange(n, dtype=np.int64) for n in counts))
    f = base + sum(g * s for g, s in zip(grids, strides, strict=True))
    w, c = (f // d) * rw, f % d
    w0, c0 = int(w.reshape(-1)[0]), int(c.reshape(-1)[0])
    steps = []
    for axis, n in enumerate(counts):
        sel = [0, 0, 0]
        if n > 1:
            sel[axis] = 1
        steps.append((int(w[tuple(sel)]) - w0, int(c[tuple(sel)]) - c0))
    pw = w0 + sum(g * st[0] for g, st in zip(grids, steps, strict=True))
    pc = c0 + sum(g * st[1] for g, st in zip(grids, steps, strict=True))
    affine = bool(np.array_equal(np.broadcast_to(pw, w.shape), w) and np.array_equal(np.broadcast_to(pc, c.shape), c))
    starts = np.ascontiguousarray(c[..., 0])
    starts.setflags(write=False)
    return w0, c0, tuple(steps), starts, affine


def operand_walk(node: Node, i: int, lanes: int, pe: int = 1) -> Walk:
    """How the kernel reads operand ``i`` (0: A, axes head, row, k; 1: B, axes head, column, k) at ``lanes``.
    Whole words (1) when the k axis is consecutive elements of a source row and every k-vector starts at
    lane 0 (a multiple of L); for B with PE a multiple of L, whole words across its columns (2) when they
    are consecutive elements of a source row starting at lane 0 (V in A.V); otherwise one element per
    cycle (0)."""
    src = node.inputs[i].info
    a, b = (operand_info(node, j, v.info) for j, v in enumerate(node.inputs))
    batch = int(np.prod(a.shape[:-2], dtype=np.int64))
    m, k, n = a.shape[-2], a.shape[-1], b.shape[-1]
    base, sh, sr, sc = _view_params(node, i, src)
    if i == 0:
        strides, counts = (sh, sr, sc), (batch, m, k)
    else:
        strides, counts = (sh, sc, sr), (batch, n, k)
    w0, c0, steps, _ = _walk(node, "AB"[i], base, strides, counts, last_dim(src), lanes)
    word = int(steps[2] == (0, 1) and all(v % lanes == 0 for v in (c0, steps[0][1], steps[1][1])))
    if not word and i == 1 and pe % lanes == 0 and steps[1] == (0, 1) and \
            all(v % lanes == 0 for v in (c0, steps[0][1], steps[2][1])):
        word = 2
    return Walk(word, w0, c0, tuple(steps))


def output_walk(node: Node, pe: int, lanes: int) -> Walk:
    """Where the kernel writes the product (axes head, row, column) at ``lanes``: whole words when the
    columns are consecutive elements of an output row starting at lane 0, blocks of PE columns cover whole
    words (PE a multiple of L), and the lanes past the last column are the row's padding (or there are
    none); otherwise one element per cycle."""
    a, b = (operand_info(node, j, v.info) for j, v in enumerate(node.inputs))
    batch = int(np.prod(a.shape[:-2], dtype=np.int64))
    m, n = a.shape[-2], b.shape[-1]
    base, sh, sr, sc = _out_view_params(node, a, b)
    d = last_dim(node.outputs[0].info)
    w0, c0, steps, starts = _walk(node, "output", base, (sh, sr, sc), (batch, m, n), d, lanes)
    word = (steps[2] == (0, 1) and pe % lanes == 0 and all(v % lanes == 0 for v in (c0, steps[0][1], steps[1][1]))
            and (n % lanes == 0 or bool(np.all(starts + n == d))))
    return Walk(int(word), w0, c0, tuple(steps))


def layer_cycles(batch: int, m: int, k: int, n: int, pe: int, lanes: int, a_word: int, b_word: int,
                 o_word: int) -> int:
    """What the kernel's cycle counters count for one layer (hls/vaqf/matmul.h): per head and block of
    nc <= PE columns, the B load (nc x words or elements of a k-vector, or K x ceil(nc/L) words across the
    columns, at II=1, plus LOAD_DEPTH) and the
    mac loop ((M + 1) x max(steps, drain) at II=1, plus its depth), steps being ceil(K/L) words or K
    elements of a row of A, drain ceil(nc/L) output words or nc elements."""
    kw = row_words(k, lanes)
    bsteps = kw if b_word else k
    steps = kw if a_word else k
    total = 0
    for c0 in range(0, n, pe):
        nc = min(pe, n - c0)
        load = k * -(-nc // lanes) if b_word == 2 else nc * bsteps
        drain = -(-nc // lanes) if o_word else nc
        mac = (m + 1) * max(steps, drain)
        total += (load + LOAD_DEPTH if load else 0) + (mac + mac_depth(lanes) if mac else 0)
    return batch * total


@register_unit
class MatmulUnit(Unit):
    kind = "matmul"
    header = "matmul.h"
    template = "matmul.j2"
    descriptors = (MatmulDesc,)
    lane_knob = "simd"
    in_place = False  # the output is written while A is still being read
    desc_fields = len(dataclasses.fields(MatmulDesc))

    def knobs(self, node: Node) -> dict[str, list[int]]:
        n = operand_info(node, 1, node.inputs[1].info).shape[-1]
        return {"pe": [p for p in PE_CHOICES if p <= max(1, n)], "simd": list(LANE_CHOICES)}

    def mode(self, node: Node, knobs: dict[str, int], board: Board | None) -> dict[str, int]:
        """How the kernel walks each operand and the output at these knobs (:func:`operand_walk`,
        :func:`output_walk`): ``{"a": A's mode, "b": B's, "out": the output's}``, 1 whole words, 0 one element
        per cycle, 2 (B) whole words across its columns."""
        pe, lanes = int(knobs["pe"]), int(knobs["simd"])
        return {"a": operand_walk(node, 0, lanes).word, "b": operand_walk(node, 1, lanes, pe).word,
                "out": output_walk(node, pe, lanes).word}

    def cost(self, node: Node, knobs: dict[str, int], board: Board) -> Cost:
        """Weight-stationary: PE output columns x L lanes (simd = the design's L) of products per cycle.

        Cycles: :func:`layer_cycles`, what the kernel's counters count (B load, then the mac loop, per head
        and block of PE columns; each mode, word or element, the layer's :meth:`mode` at this L).
        DSP: PE x L products, one DSP48E2 each at the operand widths (``dsp48e2_per_product``; no packing
        is written), and per requantizer the ACC_BITS x 25-bit mantissa product. Requantizers: L when PE is a
        multiple of L (the whole-word output path, O_WORD), else 1; present whether or not this layer
        requantizes (the mode is a run-time field).
        LUT: the PE adder trees of L products (``adder_tree_luts``) and the PE accumulators; zero-point
        subtractors (L on A in the mac; on B at load, L on the source word and one on the element path, so
        the B block holds operand-width values); the element paths' L:1 read multiplexers (A and B), the output's
        PE:1 result multiplexer and, with O_WORD, L lanes of (PE/L):1; the requantizers
        (:func:`requant_luts`, ``requant_narrow``); the local B block, PE x L banks of ceil(K/L) words
        at the operand width (``memory_cost``: LUTRAM or BRAM18); about 14 32-bit walker adders and control.
        FF: accumulators and results (2 x PE x ACC_BITS), the operand pipeline registers
        (2 x PE x L x operand bits), the A word register.
        """
        pe, lanes = int(knobs["pe"]), int(knobs["simd"])
        a, b = (operand_info(node, i, v.info) for i, v in enumerate(node.inputs))
        m, k, n = a.shape[-2], a.shape[-1], b.shape[-1]
        batch = int(np.prod(a.shape[:-2], dtype=np.int64))
        mode = self.mode(node, knobs, board)
        cycles = layer_cycles(batch, m, k, n, pe, lanes, mode["a"], mode["b"], mode["out"])
        bits = max(_signed_bits(a), _signed_bits(b))
        opd = max(_operand_bits(a), _operand_bits(b))
        acc_bits = int(node.attrs["acc_bits"])
        o_word = pe % lanes == 0
        rq = lanes if o_word else 1
        dsp = pe * lanes * dsp48e2_per_product(opd, opd) + rq * dsp48e2_per_product(acc_bits, MANTISSA_BITS + 1)
        bank = memory_cost(row_words(k, lanes), opd)
        lut = (pe * adder_tree_luts(lanes, 2 * opd) + pe * acc_bits
               + lanes * opd + (lanes + 1) * opd
               + 2 * bits * mux_luts(lanes)
               + acc_bits * mux_luts(pe) + (lanes * acc_bits * mux_luts(pe // lanes) if o_word else 0)
               + rq * requant_luts(acc_bits)
               + pe * lanes * opd * mux_luts(3)
               + pe * lanes * bank.lut + 14 * 32 + 200)
        ff = 2 * pe * acc_bits + 2 * pe * lanes * opd + lanes * bits + 12 * 32 + 300
        return Cost(cycles, lut, ff, dsp, pe * lanes * bank.bram18, 0, 0)

    def config(self, instance: str, nodes: list[Node], knobs: dict[str, int], word_bits: int) -> dict[str, Any]:
        pe, lanes = int(knobs["pe"]), int(knobs["simd"])
        if lanes not in LANE_CHOICES:
            raise VaqfError(f"{nodes[0].name}: {lanes} lanes is not one of {list(LANE_CHOICES)}")
        shapes = [[operand_info(n, i, v.info) for i, v in enumerate(n.inputs)] for n in nodes]
        return {"pe": pe, "simd": lanes, "log2l": lanes.bit_length() - 1,
                "opd_bits": max(max(_operand_bits(a), _operand_bits(b)) for a, b in shapes),
                "acc_bits": max(int(n.attrs["acc_bits"]) for n in nodes),
                "o_word": int(pe % lanes == 0),
                "kw_max": max(row_words(a.shape[-1], lanes) for a, _ in shapes),
                "k_max": max(a.shape[-1] for a, _ in shapes), "m_max": max(a.shape[-2] for a, _ in shapes),
                "n_max": max(b.shape[-1] for _, b in shapes),
                "batch_max": max(int(np.prod(a.shape[:-2], dtype=np.int64)) for a, _ in shapes),
                "load_depth": LOAD_DEPTH, "mac_depth": mac_depth(lanes)}

    def buffer_kinds(self, node: Node, in_kinds: list[str]) -> list[str]:
        if in_kinds != ["act", "act"]:
            raise VaqfError(f"{node.name}: activation products read activations, not accumulators")
        return ["act" if node.attrs.get("requant") is not None else "acc"]

    def ddr_blobs(self, node: Node, word_bits: int, knobs: dict[str, int],
                  board: Board | None) -> dict[str, np.ndarray]:
        return {}  # both operands are on-chip activations

    def describe(self, node: Node, ctx: EmitContext) -> dict[str, Any]:
        a, b = (operand_info(node, i, v.info) for i, v in enumerate(node.inputs))
        rq = node.attrs.get("requant")
        out = node.outputs[0].name
        lanes = ctx.lanes
        pe = int(ctx.knobs[self.instance(node)]["pe"])
        mode = ctx.mode(node)
        if mode is None:
            raise IRError(f"{node.name}: the design records no matmul mode for the layer")
        if rq is not None and (abs(int(rq["mantissa"][0])) >= 2**MANTISSA_BITS
                               or not 0 <= int(rq["shift"][0]) <= 62):
            raise VaqfError(f"{node.name}: a requantization multiplier needs more than {MANTISSA_BITS} bits or "
                            "its shift is outside [0, 62]; the epilogue's requantizer is sized for those")
        walks = {"a": dataclasses.replace(operand_walk(node, 0, lanes), word=int(mode["a"])),
                 "b": dataclasses.replace(operand_walk(node, 1, lanes, pe), word=int(mode["b"])),
                 "o": dataclasses.replace(output_walk(node, pe, lanes), word=int(mode["out"]))}
        fields: dict[str, int] = {}
        for p, walk in walks.items():
            h, r, c = _WALK_AXES[p]
            names = ["word", "w", "c", f"{h}w", f"{h}c", f"{r}w", f"{r}c", f"{c}w", f"{c}c"]
            fields.update({f"{p}_{nm}": v for nm, v in zip(names, walk.fields(), strict=True)})
        desc = MatmulDesc(
            batch=int(np.prod(a.shape[:-2], dtype=np.int64)), m=a.shape[-2], k=a.shape[-1], n=b.shape[-1],
            kw=row_words(a.shape[-1], lanes), zp_a=int(a.zero_point), zp_b=int(b.zero_point),
            mant=int(rq["mantissa"][0]) if rq is not None else 0,
            shift=int(rq["shift"][0]) if rq is not None else 0,
            zp_out=int(rq["zero_point"]) if rq is not None else 0,
            out_lo=int(rq["qtype"].min) if rq is not None else 0,
            out_hi=int(rq["qtype"].max) if rq is not None else 0,
            rounding=Rounding(rq["rounding"]).cpp_id if rq is not None else 0,
            relu=int(bool(node.attrs.get("relu"))), requant=int(rq is not None), **fields)
        return {
            "ident": ctx.ident[node.name], "unit": self.instance(node), "desc": desc,
            "a_buf": ctx.buffer(node.inputs[0].name), "b_buf": ctx.buffer(node.inputs[1].name),
            "out_act": ctx.buffer(out) if rq is not None else ctx.dummy["act"],
            "out_acc": ctx.dummy["acc"] if rq is not None else ctx.buffer(out),
        }
