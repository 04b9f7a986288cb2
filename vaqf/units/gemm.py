"""The GEMM unit (hls/vaqf/dense.h, templates/units/gemm.j2): dense layers on a PE x SIMD array, one instance
per weight container width (``dense_binary``: bipolar weights, add/subtract in LUTs; ``dense_int<W>``: W-bit
weights on DSPs). Each layer runs in one of three forms (the per-layer mode, :data:`FORMS`): every row, the
live rows only (pruned rows written from their constants), or block by block over gathered input columns;
the unit streams the layer's DDR region (:func:`dense_stream`) in the order it consumes it. The GEMM's
meaning (integer sums, accumulator type, the ``blocks`` attribute) is the op's (vaqf/ops/dense.py)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from vaqf.errors import IRError, VaqfError
from vaqf.hw.board import Board
from vaqf.hw.cost import (
    DDR_LATENCY,
    Cost,
    adder_tree_luts,
    dsp48e2_per_product,
    memory_cost,
    mux_luts,
    signed_bits_for_range,
    tree_depth,
)
from vaqf.hw.layout import LANE_CHOICES
from vaqf.hw.layout import row_words as lane_row_words
from vaqf.ir import Node
from vaqf.ir.qarith import Rounding
from vaqf.ops.dense import SIMD_CHOICES, block_list, is_binary, lane_slots, nonzero_rows
from vaqf.ops.packing import container_bits, pack_rows
from vaqf.units.base import Descriptor, Unit, get_unit, register_unit

if TYPE_CHECKING:
    from vaqf.units.base import EmitContext

PE_CHOICES = (1, 2, 4, 8, 16, 32, 64, 128)
#: requantizers draining the PE accumulators in parallel
EPI_CHOICES = (1, 2, 4, 8, 16)
#: LUTs of the unit's loop control and address generation (see dense_resources)
CONTROL_LUT = 300
#: bits of a requantization multiplier (vaqf.ops.common.MANTISSA_BITS, unsigned) and of its shift (<= 62)
MANTISSA_BITS = 24
SHIFT_BITS = 6
#: bits of a requantization offset in the constant word (signed; |offset| < 2**MANTISSA_BITS)
OFFSET_BITS = 26


def weight_container(node: Node) -> int:
    return 1 if is_binary(node) else container_bits(node.attrs["w_type"].bits)


@dataclass(frozen=True)
class DenseDesc(Descriptor):
    """``vaqf::dense_desc``: one dense layer (its geometry in the layer's form, its DDR region, its epilogue)."""

    cpp = "vaqf::dense_desc"
    rows: int
    in_dim: int
    out_dim: int
    in_words: int
    out_words: int
    steps: int
    slots: int
    dead: int
    scatter: int
    n_blocks: int
    ddr_offset: int
    ddr_words: int
    zp_out: int
    out_lo: int
    out_hi: int
    rounding: int
    relu: int
    requant: int


def max_block_steps(node: Node, simd: int) -> int:
    b = node.attrs.get("blocks")
    if b is None or np.asarray(b["steps"]).size == 0:
        return 0
    return int(np.asarray(b["steps"])[:, SIMD_CHOICES.index(simd)].max())


#: the ways a dense layer can run (see GemmUnit.cost), the unit's per-layer mode: every row (consecutive
#: outputs), the live rows only (outputs scattered through the row table, then the pruned rows' constants), or
#: block by block over each block's gathered columns (scattered outputs, then the pruned rows)
FORMS = ("all", "skip", "blocks")
#: bits of one lane's word index in a block's column table (an input row of up to 2**16 words)
INDEX_BITS = 16
#: pipeline depths of the kernel's loops, the config struct's LOAD_DEPTH and DEAD_DEPTH (the block loop's is
#: :func:`gemm_depth`): a stream read and a register or BRAM write; a requantizer and a store
LOAD_DEPTH = 3
DEAD_DEPTH = 8


def gemm_depth(simd: int) -> int:
    """Pipeline depth of the block loop: weight-word read (2), product (2), the SIMD adder tree
    (ceil(log2 SIMD) levels), the accumulator (1), and the epilogue behind it (requantizer multiply 2,
    shift and round 2, clamp 1, store 1)."""
    return 11 + tree_depth(simd)


#: bits of one slot's constants (folded bias, multiplier, shift, output column: four 32-bit lanes)
CONST_BITS = 128


def const_beats(word_bits: int) -> int:
    """DDR words one slot's constants take: ceil(CONST_BITS / word_bits), 1 from 128-bit words up (the
    lanes past the four are zero). The kernel assembles them in a 128-bit shift register, one beat a cycle."""
    return max(1, -(-CONST_BITS // word_bits))


def _knobs(knobs: dict[str, int]) -> tuple[int, int, int]:
    """(PE, SIMD, EPI) of a knob set, EPI limited to min(PE, SIMD): EPI consecutive outputs per cycle must
    lie in one activation word for one store per bank."""
    pe, simd = int(knobs["pe"]), int(knobs["simd"])
    return pe, simd, max(1, min(int(knobs.get("epi", 1)), pe, simd))


@dataclass(frozen=True)
class Geometry:
    """Loop trip counts and DDR words of one layer on the unit (what hls/vaqf/dense.h iterates)."""

    rows: int
    steps: int
    slots: int
    blocks: int
    dead: int
    load_items: int
    compute_items: int
    words: int
    dead_items: int  # trips of the dead-row loop: per pruned row, its constant's beats overlapped with the rows


def _geometry(node: Node, pe: int, simd: int, epi: int, word_bits: int, form: str) -> Geometry:
    n_out, k = node.attrs["weight"].shape
    rows = int(node.attrs["rows"])
    wc = weight_container(node)
    cw = const_beats(word_bits)
    sw = simd * wc
    beats = max(1, sw // word_bits)
    table_items = table_words = 0
    if form == "blocks":
        # every block padded to the layer's largest step count (one descriptor field for the loops)
        steps = max_block_steps(node, simd)
        blocks = sum(math.ceil(r.size / pe) for r, _ in block_list(node))
        slots = blocks * pe
        dead = int(n_out) - live_rows(node)
        tw = simd * INDEX_BITS
        table_items = steps * max(1, tw // word_bits)
        table_words = math.ceil(steps * tw / word_bits)
    else:
        steps = lane_row_words(k, simd)
        slots = int(n_out) if form == "all" else live_rows(node)
        dead = int(n_out) - slots
        blocks = math.ceil(slots / pe)
    drain = math.ceil(pe / epi) if form == "all" else pe
    load_items = pe * cw + table_items + pe * steps * beats
    compute_items = (rows + 1) * max(steps, drain)
    weight_words = math.ceil(pe * steps * sw / word_bits)
    return Geometry(rows, steps, slots, blocks, dead, load_items, compute_items,
                    blocks * (pe * cw + table_words + weight_words) + dead * cw, dead * (rows + cw - 1))


def layer_cycles(node: Node, pe: int, simd: int, epi: int, word_bits: int, form: str) -> tuple[int, int]:
    """(cycles, DDR words) of one layer in ``form``: what the kernel's VAQF counters add (see GemmUnit.cost)."""
    g = _geometry(node, pe, simd, epi, word_bits, form)
    cycles = DDR_LATENCY
    if g.blocks:
        cycles += g.load_items + LOAD_DEPTH
        cycles += (g.blocks - 1) * (max(g.compute_items, g.load_items) + gemm_depth(simd))
        cycles += g.compute_items + gemm_depth(simd)
    if g.dead * g.rows:
        cycles += g.dead_items + DEAD_DEPTH
    return cycles, g.words


def _form(node: Node, pe: int, simd: int, epi: int, word_bits: int) -> str:
    """The fastest form (ties to "all", then "skip"); "skip" only when some rows are all zeros, "blocks"
    only when the layer has recorded blocks."""
    best, cycles = "all", layer_cycles(node, pe, simd, epi, word_bits, "all")[0]
    candidates = []
    if node.attrs.get("blocks") is None:
        if live_rows(node) < int(node.attrs["weight"].shape[0]):
            candidates.append("skip")
    else:
        # blocks cover the live rows only: "skip" is the plain form of the same rows
        candidates += ["skip", "blocks"]
    for form in candidates:
        c = layer_cycles(node, pe, simd, epi, word_bits, form)[0]
        if c < cycles:
            best, cycles = form, c
    return best


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
    """Integer products one DSP48E2 computes per cycle for this layer: 1 (0 for binary weights).

    The kernel writes one multiply per product; two-products-per-slice packing (WP486) is not written
    out, so it is not charged (HLS-REVIEW C2). Wider operands take ``dsp48e2_per_product`` slices.
    """
    return 0 if is_binary(node) else 1


def in_operand_bits(node: Node) -> int:
    """Signed bits of the activation operand as the multiplier sees it: the input integer itself (the zero
    point is in the folded bias, :func:`folded_bias`)."""
    x = node.inputs[0].info.qtype
    return signed_bits_for_range(int(x.min), int(x.max))


def dense_resources(node: Node, pe: int, simd: int, epi: int = 1, form: str = "all",
                    word_bits: int = 128) -> DenseResources:
    """LUT, FF, DSP48E2 and BRAM18 of the PE x SIMD dense unit of hls/vaqf/dense.h running ``node``.

    Counted from the datapath, with the UltraScale+ primitives of :mod:`vaqf.hw.cost` (a LUT6 per
    result bit of a carry-chain adder, LUT6 + F7/F8 multiplexers, 64 bits of LUTRAM per LUT). p is
    :func:`product_bits`, ``acc`` the layer's accumulator width, q = acc + MANTISSA_BITS + 1 the width of
    the requantization product, SW = SIMD x W the weight word.

    - ``control`` (300): the loop counters and compares of the block/item loops, the row and word base
      adders and the state machine, roughly ten 16..32-bit adders and compares.
    - ``products``: binary weights: each of the PE x SIMD lanes negates its activation when the weight
      bit is 0, an XOR and the adder's carry-in, one LUT per bit of the p-bit result. Integer weights:
      one DSP48E2 per product (``dsp48e2_per_product`` of the W-bit weight and the activation's own
      bits, :func:`in_operand_bits`), no packing (:func:`dsp_packing`), no LUTs.
    - ``adder_tree``: per PE a balanced tree over SIMD p-bit products (:func:`adder_tree_luts`).
    - ``accumulator``: per PE one acc-bit adder (the bias load at the first step shares its LUTs).
    - ``output_mux``: requantizer e takes slot t x EPI + e: EPI acc-bit PE/EPI:1 muxes; form "skip" adds
      requantizer 0's PE:1 mux on the accumulators.
    - ``constants``: per PE the 2:1 mux choosing the bias of the running ping-pong half (32 bits); per
      requantizer the mantissa and shift (31 bits) of its slot from the 2 x PE constant registers (a
      2PE/EPI:1 mux); form "skip" adds requantizer 0's 2PE:1 mux on the output column (32 bits).
    - ``epilogue``: EPI requantizers (``requant_narrow``), each: the rounding right shift of the q-bit
      product (three levels of 4:1 muxes, 3q), the rounding compare and increment (q), the clamp to
      [lo, hi] (two q-bit compares and a select, ~q) and the zero-point add (q); form "skip" adds the
      dead-row loop's own requantizer (another 6q and its DSPs). A layer whose requantization has a
      sub-step offset (a folded BatchNormalization, :func:`has_offset`) adds per requantizer the q-bit
      offset adder (q) and the offset's 26 bits to its constant mux; without one the kernel's CFG::OFFSET
      is false and neither exists.
    - ``store``: per bank one data mux (the requantizer of its lane, requantizer 0 in scatter mode, the
      dead-row requantizer): acc bits x a 4:1 mux (one LUT), and its write-enable compare.
    - ``loader``: a DDR word holding several weight words is read through a WORD_BITS/SW:1 mux on SW bits;
      a weight word wider than a DDR word is assembled in an SW-bit shift register (FF); DDR words
      narrower than a slot's 128 constant bits (:func:`const_beats`) are assembled in a 128-bit shift
      register (FF; the dead-row loop's constant register is the one it already has).
    - ``weight_lutram``: each PE holds two halves of steps weight words of SW bits (one word per MAC
      step, ping-pong; steps = ceil(K/SIMD), or the blocks' step count in form "blocks"); under 1 Kb in
      LUTRAM, larger in BRAM18s (``bram18``).
    - form "blocks" only: ``gather``, per bank an INDEX_BITS adder of the row base and its column-table
      entry plus the 2:1 select against the plain step, and the table loader's WORD_BITS/TW:1 mux (TW =
      SIMD x INDEX_BITS); ``table_lutram``, the column table's two halves of steps TW-bit words (LUTRAM
      or BRAM18s); a TW-bit shift register (FF) when TW is wider than a DDR word.

    The MVU part (control .. output_mux) is cross-checked against FINN-R's MVAU estimate in
    tests/hw/test_cost.py. FF: a pipeline register per adder-tree and product bit, the accumulators and
    their drained copies, the 2 x PE constant words (95 bits used), the requantizers' pipelines. DSP48E2:
    the products plus each requantizer's acc x 25-bit multiply.
    """
    w = node.attrs["weight"]
    k = int(w.shape[1])
    acc = int(node.attrs["acc_bits"])
    p = product_bits(node)
    wc = weight_container(node)
    q = acc + MANTISSA_BITS + 1
    scatter = form != "all"
    gather = form == "blocks"
    steps = max_block_steps(node, simd) if gather else math.ceil(k / simd)
    sw = simd * wc
    if is_binary(node):
        products = pe * simd * p
        dsp = 0
    else:
        products = 0
        dsp = pe * simd * dsp48e2_per_product(wc, in_operand_bits(node))
    tree = pe * adder_tree_luts(simd, p)
    weights = memory_cost(2 * steps, sw)  # two halves per PE: ping-pong
    out_mux = epi * acc * mux_luts(max(1, pe // epi)) + (acc * mux_luts(pe) if scatter else 0)
    offset = has_offset(node)
    constants = pe * 32 + epi * (MANTISSA_BITS + 1 + SHIFT_BITS + (OFFSET_BITS if offset else 0)) * mux_luts(
        2 * pe // epi)
    if scatter:
        constants += 32 * mux_luts(2 * pe)
    requantizers = epi + (1 if scatter else 0)
    loader_lut = sw * mux_luts(word_bits // sw) if sw < word_bits else 0
    terms = {
        "control": CONTROL_LUT,
        "products": products,
        "adder_tree": tree,
        "accumulator": pe * acc,
        "output_mux": out_mux,
        "constants": constants,
        "epilogue": requantizers * (7 if offset else 6) * q,
        "store": simd * (acc + 2),
        "loader": loader_lut,
        "weight_lutram": pe * weights.lut,
    }
    bram = pe * weights.bram18
    if gather:
        tw = simd * INDEX_BITS
        table = memory_cost(2 * steps, tw)
        # per bank the row base plus its table entry (an INDEX_BITS adder) and the 2:1 word/entry select
        terms["gather"] = simd * 2 * INDEX_BITS + (tw * mux_luts(word_bits // tw) if tw < word_bits else 0)
        terms["table_lutram"] = table.lut
        bram += table.bram18
    ff = (400 + (products if is_binary(node) else 0) + tree + pe * 2 * acc + 2 * pe * 95 + 3 * q * requantizers
          + (sw if sw > word_bits else 0) + (CONST_BITS if const_beats(word_bits) > 1 else 0))
    dsp += requantizers * dsp48e2_per_product(acc, MANTISSA_BITS + 1)
    if gather and simd * INDEX_BITS > word_bits:
        ff += simd * INDEX_BITS  # the table word's shift register
    return DenseResources(terms, ff, dsp, bram)


def has_offset(node: Node) -> bool:
    """Whether the layer's requantization adds a sub-step offset (bits 70..95 of its constant words)."""
    rq = node.attrs.get("requant")
    return rq is not None and rq.get("offset") is not None


def folded_bias(node: Node) -> np.ndarray:
    """bias[n] - zp_in * sum_k w[n, k]: the zero point folded into the bias (product_bits' docstring), so
    the activation enters the multipliers as its own integer (HLS-REVIEW C2)."""
    w = np.asarray(node.attrs["weight"], dtype=np.int64)
    if is_binary(node):
        w = np.where(w > 0, 1, -1)
    return np.asarray(node.attrs["bias"], dtype=np.int64) - int(node.attrs["zp_in"]) * w.sum(axis=1)


def _constant_words(node: Node, slots: np.ndarray, word_bits: int) -> np.ndarray:
    """const_beats(word_bits) DDR words per slot (-1: an idle slot, zeros): 32-bit lanes folded bias,
    multiplier, shift (6 bits) with the requantization offset above it (26 bits), output column, then zeros
    to the words' end (a 64-bit word: two words per slot, [bias, multiplier] then [shift, column]; 32-bit:
    four)."""
    acc_bits = int(node.attrs["acc_bits"])
    bias = folded_bias(node)
    if acc_bits > 32 and np.abs(bias).max(initial=0) > 2**31 - 1:
        raise VaqfError(f"{node.name}: the bias with the input zero point folded in does not fit 32 bits")
    rq = node.attrs.get("requant")
    n_out = node.attrs["weight"].shape[0]
    mant = np.zeros(n_out, np.int64) if rq is None else np.broadcast_to(np.asarray(rq["mantissa"], np.int64), n_out)
    shift = np.zeros(n_out, np.int64) if rq is None else np.broadcast_to(np.asarray(rq["shift"], np.int64), n_out)
    offset = np.zeros(n_out, np.int64) if rq is None or rq.get("offset") is None else \
        np.broadcast_to(np.asarray(rq["offset"], np.int64), n_out)
    if np.any(np.abs(mant) >= 2**MANTISSA_BITS) or np.any((shift < 0) | (shift > 62)) or \
            np.any(np.abs(offset) >= 2**MANTISSA_BITS):
        raise VaqfError(f"{node.name}: a requantization multiplier or offset needs more than {MANTISSA_BITS} bits "
                        "or a shift is outside [0, 62]; the epilogue's requantizer is sized for those")
    lanes = const_beats(word_bits) * word_bits // 32
    out = np.zeros((slots.size, lanes), dtype=np.int64)
    live = slots >= 0
    o = slots[live]
    # lane 0 wraps to 32 bits: when acc_bits <= 32 the kernel's adds are exact modulo 2**acc_bits
    out[live, 0] = ((bias[o] + 2**31) % 2**32) - 2**31
    out[live, 1] = mant[o]
    out[live, 2] = shift[o] | (offset[o] << 6)  # bits 64..69 the shift, 70..95 the offset (signed)
    out[live, 3] = o
    out[~live, 3] = -1  # an idle slot: the scattering forms write nothing for it
    return (out & 0xFFFFFFFF).astype(np.uint32).reshape(-1)


def dense_stream(node: Node, pe: int, simd: int, word_bits: int, form: str) -> np.ndarray:
    """The layer's DDR region as uint32 lanes, in consumption order (hls/vaqf/dense.h):

    per block of PE slots, PE constant words (:func:`_constant_words`), then the block's weights as one
    bit stream, padded to whole words: slot p's row, step t, lane l at weight element (p * steps + t) *
    SIMD + l, W bits each (bit 1 = +1 for bipolar weights), zero past K and for idle slots; then, in form
    "skip", one constant word per pruned row. Slots: the rows in order (form "all") or the live rows
    (:func:`row_table`)."""
    w = np.asarray(node.attrs["weight"], dtype=np.int64)
    n_out, k = w.shape
    if is_binary(node):
        w = (w > 0).astype(np.int64)
    wc = weight_container(node)
    if form == "blocks":
        return _block_stream(node, w, pe, simd, word_bits)
    steps = lane_row_words(k, simd)
    table, live = row_table(node)
    order = np.arange(n_out, dtype=np.int64) if form == "all" else table[:live]
    blocks = math.ceil(order.size / pe)
    parts = []
    for b in range(blocks):
        slots = np.full(pe, -1, dtype=np.int64)
        chunk = order[b * pe:(b + 1) * pe]
        slots[:chunk.size] = chunk
        parts.append(_constant_words(node, slots, word_bits))
        mat = np.zeros((pe, steps * simd), dtype=np.int64)
        mat[:chunk.size, :k] = w[chunk]
        parts.append(pack_rows(mat.reshape(1, -1), wc, word_bits))
    if form == "skip" and live < n_out:
        parts.append(_constant_words(node, table[live:], word_bits))
    return np.concatenate(parts) if parts else np.zeros(word_bits // 32, np.uint32)


def _block_stream(node: Node, w: np.ndarray, pe: int, simd: int, word_bits: int) -> np.ndarray:
    """Form "blocks": per block of PE slots (a block's rows in PE chunks, idle slots at a chunk's end), PE
    constant words; the column table, steps words of SIMD x INDEX_BITS bits (lane s of step t: the word,
    within the input row, of the block's column in slot t * SIMD + s of :func:`lane_slots`, 0 for an empty
    slot), padded to whole DDR words; then the weights in slot order (slot p, step t, lane s: the weight of
    that column, 0 for an empty slot), as in the other forms. Steps: the layer's largest block's, every
    block padded to it with empty slots. Then one constant word per pruned row."""
    steps = max_block_steps(node, simd)
    wc = weight_container(node)
    parts = []
    for rows, cols in block_list(node):
        lay = np.full(steps * simd, -1, dtype=np.int64)
        slots_cols = lane_slots(cols, simd)
        lay[:slots_cols.size] = slots_cols
        index = np.where(lay >= 0, lay // simd, 0)
        if index.max(initial=0) >= 2**INDEX_BITS:
            raise VaqfError(f"{node.name}: an input row of more than {2**INDEX_BITS} words does not fit the "
                            f"{INDEX_BITS}-bit column table of the block form")
        table = pack_rows(index.reshape(1, -1), INDEX_BITS, word_bits)
        gathered = np.where(lay[None, :] >= 0, w[:, np.maximum(lay, 0)], 0)  # [n_out, steps * simd]
        for c0 in range(0, rows.size, pe):
            chunk = rows[c0:c0 + pe]
            slots = np.full(pe, -1, dtype=np.int64)
            slots[:chunk.size] = chunk
            parts.append(_constant_words(node, slots, word_bits))
            parts.append(table)
            mat = np.zeros((pe, steps * simd), dtype=np.int64)
            mat[:chunk.size] = gathered[chunk]
            parts.append(pack_rows(mat.reshape(1, -1), wc, word_bits))
    full, live = row_table(node)
    if live < w.shape[0]:
        parts.append(_constant_words(node, full[live:], word_bits))
    return np.concatenate(parts) if parts else np.zeros(word_bits // 32, np.uint32)


def blocks_pay_off(node: Node) -> bool:
    """Whether the block form of the layer's recorded blocks is the fastest for at least one (PE, SIMD) of
    its knobs on the default board (ZCU102): passes.sparsity.FindDenseBlocks keeps them then."""
    from vaqf.hw.board import get_board

    board = get_board("zcu102")
    ks = get_unit("gemm").knobs(node)
    return any(_form(node, pe, simd, 1, board.axi_bits) == "blocks" for pe in ks["pe"] for simd in ks["simd"])


@register_unit
class GemmUnit(Unit):
    kind = "gemm"
    header = "dense.h"
    template = "gemm.j2"
    descriptors = (DenseDesc,)

    def blocks_pay_off(self, node: Node) -> bool:
        return blocks_pay_off(node)
    lane_knob = "simd"
    # the kernel's input is read across a whole block while outputs are written: never in place
    in_place = False
    desc_fields = len(dataclasses.fields(DenseDesc))

    def instance(self, node: Node) -> str:
        # one GEMM instance per weight container width: an instance's weight decoder is fixed in hardware
        return "dense_binary" if is_binary(node) else f"dense_int{weight_container(node)}"

    def knobs(self, node: Node) -> dict[str, list[int]]:
        """PE (output rows per block), SIMD (input lanes per MAC step: every lane count of
        vaqf.hw.layout.LANE_CHOICES, which the search sets to the design's lanes L; lanes past K are masked
        in the kernel and idle in the cost) and EPI (requantizers, used up to min(PE, SIMD))."""
        n_out = node.attrs["weight"].shape[0]
        pes = [p for p in PE_CHOICES if p <= max(1, n_out)]
        return {"pe": pes, "simd": list(LANE_CHOICES), "epi": [e for e in EPI_CHOICES if e <= pes[-1]]}

    def cost_key(self, node: Node) -> tuple:
        """Besides shapes, types and the weight zero pattern (``vaqf.hw.model.cost_key``): the recorded
        blocks' shapes and MAC steps, which the block form's cycles read."""
        b = node.attrs.get("blocks")
        if b is None:
            return (has_offset(node),)
        return (tuple(map(tuple, np.asarray(b["shape"]).tolist())), tuple(map(tuple, np.asarray(b["steps"]).tolist())),
                has_offset(node))

    def mode(self, node: Node, knobs: dict[str, int], board: Board | None) -> str | None:
        """How the layer runs with these knobs on this board: one of :data:`FORMS`, the fastest (see
        :meth:`cost`); None without the unit's knobs."""
        if "pe" not in knobs or "simd" not in knobs or board is None:
            return None
        pe, simd, epi = _knobs(knobs)
        return _form(node, pe, simd, epi, board.axi_bits)

    def cost(self, node: Node, knobs: dict[str, int], board: Board) -> Cost:
        """Cycles and resources of one dense layer on a PE x SIMD unit (hls/vaqf/dense.h).

        Cycles, exactly what the kernel's counters count (:func:`layer_cycles`): DDR_LATENCY once for the
        reader's first beat (the reader then keeps ahead: the compute consumes at most one word a cycle);
        the first block's load (PE slot constants of const_beats(WORD_BITS) = ceil(128 / WORD_BITS) DDR
        words each, one cycle per word, then PE x steps weight words of SIMD x W bits, each one cycle, or
        SIMD x W / WORD_BITS cycles when wider than a DDR word) plus its pipeline depth; per block
        of PE output slots max((rows + 1) x span, next block's load) plus the block loop's depth, span =
        max(steps, drain), steps = ceil(K / SIMD), drain = ceil(PE / EPI) (EPI consecutive outputs per
        cycle) or PE (form "skip": outputs scattered through the row table, one per cycle); form "skip" then
        writes the pruned rows' constants, one element per cycle after the row's const_beats - 1 first beats,
        pruned x (rows + const_beats - 1) cycles plus a depth.
        Form "blocks" (recorded blocks, gathered columns): steps = the largest block's lane_slots step
        count, per block of PE slots (a block's rows in PE chunks) the load adds the column table, steps
        words of SIMD x 16 bits (max(1, TW / WORD_BITS) cycles each), and outputs scatter as in "skip".
        :meth:`mode` picks the fastest of "all" (every row computed, zero rows give the bias), "skip"
        (live rows only) and "blocks". DDR bytes: the words the reader reads.
        Resources: :func:`dense_resources` (each LUT, FF, DSP48E2 and BRAM18 term with its source).
        """
        pe, simd, epi = _knobs(knobs)
        form = _form(node, pe, simd, epi, board.axi_bits)
        cycles, words = layer_cycles(node, pe, simd, epi, board.axi_bits, form)
        res = dense_resources(node, pe, simd, epi, form, board.axi_bits)
        return Cost(cycles, res.lut, res.ff, res.dsp, res.bram18, res.uram, words * board.axi_bits // 8)

    def config(self, instance: str, nodes: list[Node], knobs: dict[str, int], word_bits: int) -> dict[str, Any]:
        """The instance's config struct, sized for every layer it runs in the form each runs in (the forms
        :meth:`mode` gives at ``word_bits``, the design's DDR word: the board's AXI width)."""
        pe, simd, epi = _knobs(knobs)
        los = [int(n.inputs[0].info.qtype.min) for n in nodes]
        his = [int(n.inputs[0].info.qtype.max) for n in nodes]
        signed = min(los) < 0
        in_bits = signed_bits_for_range(min(los), max(his)) if signed else max(1, max(his).bit_length())
        items, blocks, dead, words = [1], [1], [1], [1]
        for n in nodes:
            form = _form(n, pe, simd, epi, word_bits)
            g = _geometry(n, pe, simd, epi, word_bits, form)
            items.append(max(g.load_items, g.compute_items))
            blocks.append(g.blocks + 1)
            dead.append(g.dead_items)
            words.append(g.words)
        return {
            "pe": pe, "simd": simd, "epi": epi,
            "wbits": max(weight_container(n) for n in nodes),
            "binary": int(is_binary(nodes[0])),
            "in_bits": in_bits, "in_signed": int(signed),
            "acc_bits": max(int(n.attrs["acc_bits"]) for n in nodes),
            "max_steps": max(max(lane_row_words(n.attrs["weight"].shape[1], simd), max_block_steps(n, simd))
                             for n in nodes),
            "max_rows": max(int(n.attrs["rows"]) for n in nodes),
            "max_items": max(items), "max_blocks": max(blocks), "max_dead": max(dead), "max_words": max(words),
            "depth": gemm_depth(simd), "load_depth": LOAD_DEPTH, "dead_depth": DEAD_DEPTH,
            "offset": int(any(has_offset(n) for n in nodes)),
        }

    def ddr_blobs(self, node: Node, word_bits: int, knobs: dict[str, int],
                  board: Board | None) -> dict[str, np.ndarray]:
        """The layer's one DDR region, in the order the kernel consumes it (:func:`dense_stream`), in the
        layer's form (:meth:`mode`); without a design's knobs, the region at PE = SIMD = 1 (its size is what a
        design's region is near)."""
        if "pe" not in knobs or "simd" not in knobs:
            return {"stream": dense_stream(node, 1, 1, word_bits, _form(node, 1, 1, 1, word_bits))}
        pe, simd, epi = _knobs(knobs)
        form = self.mode(node, knobs, board) if board is not None else _form(node, pe, simd, epi, word_bits)
        return {"stream": dense_stream(node, pe, simd, word_bits, form)}

    def buffer_kinds(self, node: Node, in_kinds: list[str]) -> list[str]:
        if in_kinds != ["act"]:
            raise VaqfError(f"{node.name}: a dense layer reads activations, not accumulators")
        return ["act" if node.attrs.get("requant") is not None else "acc"]

    def describe(self, node: Node, ctx: EmitContext) -> dict[str, Any]:
        w = node.attrs["weight"]
        n_out, k = w.shape
        rq = node.attrs.get("requant")
        out = node.outputs[0].name
        unit = self.instance(node)
        knobs = ctx.knobs.get(unit)
        if knobs is None:
            raise VaqfError(f"{node.name}: the design has no knobs for unit {unit}")
        pe, simd, epi = _knobs(knobs)
        if simd != ctx.lanes:
            raise VaqfError(f"{node.name}: unit {unit} has SIMD {simd} but the design's activation "
                            f"words have {ctx.lanes} lanes; the GEMM reads one word per MAC step, so they must match")
        form = ctx.mode(node)
        if form not in FORMS:
            raise IRError(f"{node.name}: the design records no GEMM form for the layer (got {form!r})")
        word_bits = ctx.word_bits  # the design's DDR word: the region's layout and the reader's width
        g = _geometry(node, pe, simd, epi, word_bits, form)
        desc = DenseDesc(
            rows=g.rows, in_dim=int(k), out_dim=int(n_out),
            in_words=lane_row_words(k, simd), out_words=lane_row_words(n_out, simd),
            steps=g.steps, slots=g.slots, dead=g.dead, scatter=int(form != "all"),
            n_blocks=len(block_list(node)) if form == "blocks" else 0,
            ddr_offset=ctx.offset(node, "stream"), ddr_words=g.words,
            zp_out=int(rq["zero_point"]) if rq is not None else 0,
            out_lo=int(rq["qtype"].min) if rq is not None else 0,
            out_hi=int(rq["qtype"].max) if rq is not None else 0,
            rounding=Rounding(rq["rounding"]).cpp_id if rq is not None else 0,
            relu=int(bool(node.attrs.get("relu"))), requant=int(rq is not None))
        return {
            "ident": ctx.ident[node.name],
            "unit": unit,
            "desc": desc,
            "in_buf": ctx.buffer(node.inputs[0].name),
            "out_act": ctx.buffer(out) if rq is not None else ctx.dummy["act"],
            "out_acc": ctx.dummy["acc"] if rq is not None else ctx.buffer(out),
        }
