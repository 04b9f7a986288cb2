"""The mover (hls/vaqf/move.h, hls/vaqf/conv.h, templates/units/mover.j2): the data-movement unit shared by
strided_copy, transpose, slice, concat, reshape, const and im2col (what each op means is in vaqf/ops).

One kernel (``vaqf::move``) with a mode field, so every layer calls the same ``mover_run``: mode COPY (a
strided copy between two buffers of one kind), mode CONST (a constant from DDR) and mode IM2COL (convolution
windows). The hardware of all three loops exists once, and every layer's cost charges their sum
(:func:`mover_hardware`).

A copy visits every index ``o`` of an N-d box ``dims`` (row-major) and moves input element
``in_base + sum(o * in_strides)`` to output element ``out_base + sum(o * out_strides)``, the flat indices
being row-major over each side's IR shape (:func:`copy_boxes`: each op's copies). On chip the two sides are
stored as padded rows of L-lane words (:mod:`vaqf.hw.layout`), so :func:`plan_copy` converts each side's
element strides into (word, column) steps: a stride ``s = q*d + m`` (``d`` the row length, ``0 <= m < d``)
adds ``q`` rows of words and ``m`` columns, with one carry into the next row when the column passes ``d``.
The kernel then needs no division.

Two ways to move: one element per cycle (the read is an L:1 lane multiplexer, the write a lane decode: the
allowed pattern 3 of docs/hls.md), or, where every run of the innermost axis starts at lane 0 on both sides
and stays within a row on both sides, one whole word per cycle (lanes at compile-time banks, the run's last
word written under a lane mask). That choice is the unit's per-layer mode (:meth:`MoverUnit.mode`): per copy
call, the run length moved as whole words (0: one element per cycle).

Const: the DDR blob is laid out in the on-chip word layout at the design's lanes L: every on-chip word of L
lanes is ceil(L / G) DDR words of G = WORD_BITS/32 int32 fields, so the mover reads one burst of consecutive
whole DDR words, one per cycle, and writes each into its word's lanes (HLS-REVIEW M17).

Im2col: the first word of every swept channel (chans[c] * H * ceil(W/L)) is a DDR blob read by one burst into
a table of WORD_BITS/32 banks; the window loop then moves one output element per cycle (an L:1 lane
multiplexer on the read, a lane decode on the write), the padding giving the zero point.

Reshape: when both shapes put every element at the same (word, lane) (vaqf.hw.layout.same_layout) the output
shares the input's buffer (vaqf.hw.memory.aliases), costs no cycle and emits no call; otherwise it is a
row-major copy.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from vaqf.errors import VaqfError
from vaqf.hw.board import Board
from vaqf.hw.cost import DDR_LATENCY, Cost, memory_cost, mux_luts
from vaqf.hw.layout import LANE_CHOICES, lane_knob, last_dim, row_words, rows_of, same_layout
from vaqf.ir import IntType, Node, TensorInfo
from vaqf.ops.im2col import conv_geometry, swept_channels
from vaqf.ops.packing import pack_int32
from vaqf.ops.slice import slice_ranges
from vaqf.units.base import Descriptor, Unit, register_unit

if TYPE_CHECKING:
    from vaqf.units.base import EmitContext

#: axes of a copy box (``COPY_DIMS`` of move.h)
MAX_DIMS = 8
#: pipeline depth of the copy loop: position mux, word read (BRAM latency 2), lane mux, write
COPY_DEPTH = 5
#: pipeline depth of the constant loop after the DDR round trip: word register, lane select, write
CONST_DEPTH = 3
#: pipeline depth of the channel-table fill of im2col after the DDR round trip
FILL_DEPTH = 3
#: pipeline depth of the im2col window loop: table read, address add, word read, lane mux, write
WINDOW_DEPTH = 7
#: bits of the kernel's address and counter registers (word indices of buffers up to 2^20 words)
ADDR_BITS = 20
#: container bits the accumulator copy path is charged at (acc_t is at most this wide in practice)
ACC_CHARGE_BITS = 32

MODE_COPY, MODE_CONST, MODE_IM2COL = 0, 1, 2

#: the ops that are copies on the copy loop (the others: const, im2col)
COPY_OPS = ("strided_copy", "transpose", "slice", "concat", "reshape")

_ARRAYS = ("dims", "in_w", "in_c", "out_w", "out_c")


@dataclass(frozen=True)
class MoveDesc(Descriptor):
    """``vaqf::move_desc``: one ``mover_run`` call (a layer makes one per copy; the kernel reads only the
    fields of its mode, the others stay zero)."""

    cpp = "vaqf::move_desc"
    array_lengths = {f: MAX_DIMS for f in _ARRAYS}
    mode: int = MODE_COPY
    acc: int = 0
    words: int = 0
    n: int = 0
    tail: int = 0
    dims: tuple[int, ...] = (1,) * MAX_DIMS
    in_w: tuple[int, ...] = (0,) * MAX_DIMS
    in_c: tuple[int, ...] = (0,) * MAX_DIMS
    out_w: tuple[int, ...] = (0,) * MAX_DIMS
    out_c: tuple[int, ...] = (0,) * MAX_DIMS
    in_w0: int = 0
    in_c0: int = 0
    out_w0: int = 0
    out_c0: int = 0
    in_d: int = 0
    in_rw: int = 0
    out_d: int = 0
    out_rw: int = 0
    offset: int = 0
    ddr_words: int = 0
    parts: int = 0
    c: int = 0
    h: int = 0
    w: int = 0
    ho: int = 0
    wo: int = 0
    kh: int = 0
    kw: int = 0
    sh: int = 0
    sw: int = 0
    pt: int = 0
    pl: int = 0
    zp: int = 0


class Box(NamedTuple):
    """One strided copy in IR terms: the box, each side's element strides and base, the two sides."""

    dims: list[int]
    in_strides: list[int]
    out_strides: list[int]
    in_base: int
    out_base: int
    src: TensorInfo
    dst: TensorInfo


def contiguous_strides(shape: tuple[int, ...]) -> list[int]:
    strides = [1] * len(shape)
    for i in range(len(shape) - 2, -1, -1):
        strides[i] = strides[i + 1] * shape[i + 1]
    return strides


def copy_boxes(node: Node, lanes: int) -> list[Box]:
    """The copies a layer of a copy op makes, one ``mover_run`` call each (none for a reshape sharing its
    buffer at these lanes)."""
    op = node.op
    y = node.outputs[0].info
    if op == "strided_copy":
        # one copy over the output box (whole words where the runs line up)
        shape = tuple(int(d) for d in node.attrs["shape"])
        return [Box(list(shape), [int(s) for s in node.attrs["strides"]], contiguous_strides(shape),
                    int(node.attrs["base"]), 0, node.inputs[0].info, y)]
    if op == "transpose":
        # one copy over the output box reading the permuted input strides (element by element unless the
        # last axis stays last and its runs line up)
        x = node.inputs[0].info
        perm = [int(p) for p in node.attrs["perm"]]
        out_shape = [x.shape[p] for p in perm]
        in_strides = contiguous_strides(x.shape)
        return [Box(out_shape, [in_strides[p] for p in perm], contiguous_strides(tuple(out_shape)), 0, 0, x, y)]
    if op == "slice":
        # one copy over the output box with scaled and offset input strides
        x = node.inputs[0].info
        rs = slice_ranges(node, x.shape)
        st = contiguous_strides(x.shape)
        out_shape = tuple(len(r) for r in rs)
        return [Box(list(out_shape), [s * r.step for s, r in zip(st, rs, strict=True)],
                    contiguous_strides(out_shape), sum(s * r.start for s, r in zip(st, rs, strict=True)), 0, x, y)]
    if op == "concat":
        # one copy per input into its slab of the output (whole words where its rows line up: a concat along
        # rows, or along the last axis at word boundaries)
        axis = int(node.attrs["axis"])
        ost = contiguous_strides(y.shape)
        boxes, pos = [], 0
        for v in node.inputs:
            s = v.info.shape
            boxes.append(Box(list(s), contiguous_strides(s), ost, 0, pos * ost[axis], v.info, y))
            pos += s[axis]
        return boxes
    if op == "reshape":
        # none when the buffer is shared (same layout at these lanes); else one row-major copy
        x = node.inputs[0].info
        if same_layout(x, y, lanes):
            return []
        st = contiguous_strides(y.shape)
        return [Box(list(y.shape), st, st, 0, 0, x, y)]
    raise VaqfError(f"{node.name}: {op} is not a copy on the mover")


def _side_steps(strides: list[int], d: int, rw: int) -> tuple[list[int], list[int]]:
    """(word step, column step) per axis of a side whose rows hold ``d`` elements in ``rw`` words."""
    ws, cs = [], []
    for s in strides:
        q, m = divmod(int(s), d)
        ws.append(q * rw)
        cs.append(m)
    return ws, cs


def _start(flat: int, d: int, rw: int) -> tuple[int, int]:
    r, c = divmod(int(flat), d)
    return r * rw, c


def _flat_index(dims: list[int], strides: list[int], base: int) -> np.ndarray:
    idx = np.full(tuple(dims), int(base), dtype=np.int64)
    for axis, (n, st) in enumerate(zip(dims, strides, strict=True)):
        view = [1] * len(dims)
        view[axis] = n
        idx = idx + (np.arange(n, dtype=np.int64) * int(st)).reshape(view)
    return idx.reshape(-1)


def _reduced(box: Box) -> tuple[list[int], list[int], list[int]]:
    """The box without its axes of one element (dims, input strides, output strides)."""
    keep = [i for i, n in enumerate(box.dims) if n != 1]
    return ([int(box.dims[i]) for i in keep], [int(box.in_strides[i]) for i in keep],
            [int(box.out_strides[i]) for i in keep])


def _run_fits(dims: list[int], si: list[int], so: list[int], in_base: int, out_base: int, d_in: int,
              d_out: int, lanes: int, g: int) -> bool:
    """Whether runs of g elements of the innermost axis can move as words and stay in a row on both sides:
    runs of at least L elements start at lane 0 on both sides; shorter runs (g dividing L) start at a
    multiple of g on both sides, so each is inside one word and the copy rotates it by a multiple of g."""
    if not dims or si[-1] != 1 or so[-1] != 1 or g < 2 or dims[-1] % g:
        return False
    if g < lanes and lanes % g:
        return False
    align = min(g, lanes)
    dd = dims[:-1] + [dims[-1] // g]
    for strides, base, d in ((si, in_base, d_in), (so, out_base, d_out)):
        col = _flat_index(dd, strides[:-1] + [g], base) % d
        if np.any(col % align) or np.any(col + g > d):
            return False
    return True


def rotation(runs: list[int], lanes: int) -> int:
    """The rotation granularity of the copy loop for these word runs: the shortest run below L (each such run
    sits at a multiple of its length on both sides, so the word is rotated by a multiple of it: an
    (L / granularity):1 multiplexer per bank), L when every run starts at lane 0 (no rotation)."""
    short = [int(g) for g in runs if 0 < int(g) < lanes]
    return min(short) if short else int(lanes)


def _word_runs(dims: list[int], si: list[int], so: list[int], in_base: int, out_base: int, d_in: int,
               d_out: int, lanes: int) -> int:
    """The longest run g (a divisor of the innermost axis) that can move whole words, or 0 (elements).

    A run of g elements moves as ceil(g / L) words when it is contiguous on both sides (stride 1), starts at
    lane 0 on both sides, and stays inside one row on both sides; a run shorter than L (g dividing L) moves
    as one rotated word when it starts at a multiple of g on both sides (:func:`_run_fits`); g = 1 never
    pays off.
    """
    if not dims or si[-1] != 1 or so[-1] != 1:
        return 0
    n = dims[-1]
    best, best_trips = 0, math.prod(dims)  # element mode's trips
    for g in sorted({g for g in range(2, n + 1) if n % g == 0}, reverse=True):
        trips = math.prod(dims[:-1]) * (n // g) * -(-g // lanes)
        if trips >= best_trips:
            continue
        if _run_fits(dims, si, so, in_base, out_base, d_in, d_out, lanes, g):
            best, best_trips = g, trips
    return best


def word_run(box: Box, lanes: int) -> int:
    """The copy's mode at these lanes: the run length it moves as whole words, 0 for one element per cycle."""
    dd, si, so = _reduced(box)
    return _word_runs(dd, si, so, box.in_base, box.out_base, last_dim(box.src), last_dim(box.dst), lanes)


def plan_copy(dims: list[int], in_strides: list[int], out_strides: list[int], in_base: int, out_base: int,
              src: TensorInfo, dst: TensorInfo, lanes: int, acc: bool = False, name: str = "copy",
              run: int | None = None) -> MoveDesc:
    """The ``vaqf::move_desc`` of one strided copy from ``src`` to ``dst`` (element strides of the IR
    shapes), for words of ``lanes`` lanes: whole words in runs of ``run`` elements (0: one element per cycle;
    None: the longest run that lines up, :func:`word_run`)."""
    box = Box(list(dims), list(in_strides), list(out_strides), int(in_base), int(out_base), src, dst)
    dd, si, so = _reduced(box)
    d_in, d_out = last_dim(src), last_dim(dst)
    rw_in, rw_out = row_words(d_in, lanes), row_words(d_out, lanes)
    g = word_run(box, lanes) if run is None else int(run)
    if g and not _run_fits(dd, si, so, box.in_base, box.out_base, d_in, d_out, lanes, g):
        raise VaqfError(f"{name}: runs of {g} elements cannot move as whole words of {lanes} lanes")
    tail = 0
    if g:  # the innermost axis becomes (runs of g) x (words of a run, stepping L columns)
        n = dd[-1]
        dd = dd[:-1] + [n // g, -(-g // lanes)]
        si = si[:-1] + [g, lanes]
        so = so[:-1] + [g, lanes]
        tail = g - (dd[-1] - 1) * lanes
    if len(dd) > MAX_DIMS:
        raise VaqfError(f"{name}: a copy over {len(dd)} non-trivial axes exceeds the mover's {MAX_DIMS}")
    pad = MAX_DIMS - len(dd)
    iw, ic = _side_steps(si, d_in, rw_in)
    ow, oc = _side_steps(so, d_out, rw_out)
    in_w0, in_c0 = _start(box.in_base, d_in, rw_in)
    out_w0, out_c0 = _start(box.out_base, d_out, rw_out)
    return MoveDesc(mode=MODE_COPY, acc=int(acc), words=int(bool(g)), n=int(math.prod(dd)), tail=tail,
                    dims=tuple([1] * pad + dd), in_w=tuple([0] * pad + iw), in_c=tuple([0] * pad + ic),
                    out_w=tuple([0] * pad + ow), out_c=tuple([0] * pad + oc),
                    in_w0=in_w0, in_c0=in_c0, out_w0=out_w0, out_c0=out_c0,
                    in_d=d_in, in_rw=rw_in, out_d=d_out, out_rw=rw_out)


def const_desc(node: Node, lanes: int, word_bits: int, offset: int = 0) -> MoveDesc:
    """One load of the whole constant blob (``offset``: its first DDR word)."""
    info = node.outputs[0].info
    parts = -(-lanes // max(1, word_bits // 32))
    return MoveDesc(mode=MODE_CONST, offset=int(offset),
                    ddr_words=rows_of(info) * row_words(last_dim(info), lanes) * parts, parts=parts)


def im2col_desc(node: Node, lanes: int, word_bits: int, offset: int = 0) -> MoveDesc:
    """The window sweep (``offset``: the channel table's first DDR word)."""
    x = node.inputs[0].info
    _, h, w, ho, wo = conv_geometry(x.shape, node.attrs)
    kh, kw = node.attrs["kernel"]
    sh, sw = node.attrs["stride"]
    pt, pl, _, _ = node.attrs["pads"]
    c = int(swept_channels(node).size)
    rw_in = row_words(w, lanes)
    cols = c * kh * kw
    g = max(1, word_bits // 32)
    return MoveDesc(mode=MODE_IM2COL, n=ho * wo * cols, offset=int(offset), ddr_words=-(-c // g), in_rw=rw_in,
                    out_rw=row_words(cols, lanes),
                    in_w0=sh * rw_in, in_c0=-pt * rw_in,  # the kernel's running sums (no multiplier)
                    c=c, h=h, w=w, ho=ho, wo=wo, kh=kh, kw=kw, sh=sh, sw=sw, pt=pt, pl=pl, zp=x.zero_point)


def copy_cycles(desc: MoveDesc) -> int:
    """Cycles of one copy call: its trips at II=1 plus the loop's pipeline depth (VAQF_LOOP in move.h)."""
    return int(desc.n) + COPY_DEPTH if desc.n else 0


def const_cycles(ddr_words: int) -> int:
    """Cycles of one constant load: the DDR round trip once, one DDR word per cycle, the pipeline depth."""
    return int(ddr_words) + DDR_LATENCY + CONST_DEPTH if ddr_words else 0


def im2col_cycles(table_words: int, n: int) -> int:
    """The channel-table fill (a DDR burst) then the window loop, one output element per cycle."""
    return int(table_words) + DDR_LATENCY + FILL_DEPTH + int(n) + WINDOW_DEPTH


def desc_cycles(desc: MoveDesc) -> int:
    """What the kernel's counters count for one call (move.h, conv.h)."""
    if desc.mode == MODE_COPY:
        return copy_cycles(desc)
    if desc.mode == MODE_CONST:
        return const_cycles(desc.ddr_words)
    return im2col_cycles(desc.ddr_words, desc.n)


def node_bits(node: Node) -> int:
    """Signed container bits of the node's values (the act_t path is at least this wide)."""
    bits = 2
    for v in (*node.inputs, *node.outputs):
        qt = v.info.qtype
        if isinstance(qt, IntType):
            bits = max(bits, qt.bits + (0 if qt.signed else 1))
    return bits


def lanes_of(knobs: dict[str, int], node: Node) -> int:
    lanes = lane_knob(knobs)
    if lanes is None:
        raise VaqfError(f"{node.name}: the mover's knobs give no lane count (lanes)")
    return lanes


def mover_hardware(lanes: int, act_bits: int, word_bits: int = 128, max_chans: int = 0, rot: int = 0) -> Cost:
    """The mover's hardware, the sum of its three loops (every layer runs on the same ``vaqf::move``).

    Copy loop, instantiated twice (act_t and acc_t buffers; ``acc_bits`` charged at ACC_CHARGE_BITS):
    - read lane multiplexer: ``mux_luts(L)`` LUTs per bit of an element (the element mode's L:1 load);
    - write data: per lane a 2:1 select between the word's lane and the multiplexed element (L x bits);
    - the word's rotation (:func:`rotation` granularity ``rot``, 0 or L: none): per lane an (L / rot):1
      multiplexer on the word's lanes (L x bits x ``mux_luts(L / rot)``) and the lane-range write enable's
      second compare (L);
    - write enables: per lane one LUT decoding the destination lane or the word mode's mask (L);
    - address generation: per side the saved positions of 8 axes (2 registers of ADDR_BITS each) behind an
      8:1 multiplexer, one word and one column adder with the row carry (compare and add): 2 x
      (2 x ADDR_BITS x mux_luts(8) + 4 x ADDR_BITS) LUTs; the 8 index counters with their wrap compares
      (8 x 2 x ADDR_BITS); FFs for the saved positions, counters and one word of pipeline registers.
    Constant loop: per lane one write-enable LUT, two counters (2 x 2 x ADDR_BITS), a DDR word register.
    Im2col loop: read lane multiplexer and write decode as above at act bits, ten counters and three address
    adders (13 x ADDR_BITS), the padding compares (4 x ADDR_BITS); the channel table of ``max_chans`` 32-bit
    entries in WORD_BITS/32 banks (:func:`vaqf.hw.cost.memory_cost` per bank).
    """
    lut = ff = 0
    addr = 2 * (2 * ADDR_BITS * mux_luts(8) + 4 * ADDR_BITS) + MAX_DIMS * 2 * ADDR_BITS
    addr_ff = 2 * MAX_DIMS * 2 * ADDR_BITS + MAX_DIMS * ADDR_BITS
    ways = lanes // rot if 0 < rot < lanes else 1
    for bits in (act_bits, ACC_CHARGE_BITS):
        lut += mux_luts(lanes) * bits + lanes * bits + lanes + addr
        if ways > 1:
            lut += lanes * bits * mux_luts(ways) + lanes
        ff += addr_ff + 2 * lanes * bits
    lut += lanes + 4 * ADDR_BITS
    ff += word_bits + 2 * ADDR_BITS
    lut += mux_luts(lanes) * act_bits + lanes * act_bits + lanes + 17 * ADDR_BITS
    ff += 10 * ADDR_BITS + 2 * lanes * act_bits + word_bits
    g = max(1, word_bits // 32)
    table = memory_cost(-(-max(max_chans, 1) // g), 32)
    return Cost(lut=lut + g * table.lut, ff=ff, bram18=g * table.bram18)


@register_unit
class MoverUnit(Unit):
    kind = "mover"
    header = "move.h"
    template = "mover.j2"
    descriptors = (MoveDesc,)
    lane_knob = "lanes"
    # input and output are always different buffers (a copy reads and writes at different positions)
    in_place = False
    #: int fields of vaqf::move_desc, the width of the descriptor ROM (vaqf.hw.model.sharing_cost)
    desc_fields = 68

    def knobs(self, node: Node) -> dict[str, list[int]]:
        """The design's lane count (the search forces it to L); the mover has no other knob."""
        return {"lanes": list(LANE_CHOICES)}

    def mode(self, node: Node, knobs: dict[str, int], board: Board) -> Any:
        """For a copy op, ``{"runs": [g, ...]}``: per ``mover_run`` call, the run length it moves as whole
        words (0: one element per cycle; no entry for a reshape sharing its buffer); None for const and
        im2col (one way to run)."""
        if node.op not in COPY_OPS:
            return None
        lanes = lanes_of(knobs, node)
        return {"runs": [word_run(b, lanes) for b in copy_boxes(node, lanes)]}

    def descs(self, node: Node, lanes: int, word_bits: int, mode: Any = None,
              offset: int = 0) -> list[MoveDesc]:
        """The layer's descriptors, one per ``mover_run`` call, for the recorded ``mode`` (None: decide here);
        ``offset``: the first DDR word of a const's blob or im2col's channel table."""
        if node.op == "const":
            return [const_desc(node, lanes, word_bits, offset)]
        if node.op == "im2col":
            return [im2col_desc(node, lanes, word_bits, offset)]
        boxes = copy_boxes(node, lanes)
        runs = [None] * len(boxes) if mode is None else list(mode["runs"])
        if len(runs) != len(boxes):
            raise VaqfError(f"{node.name}: the design records {len(runs)} copies, the layer makes {len(boxes)} at "
                            f"{lanes} lanes")
        return [plan_copy(*b, lanes, name=node.name, run=r) for b, r in zip(boxes, runs, strict=True)]

    def calls(self, node: Node, lanes: int) -> int:
        """One call per copy box (a concat: one per input; a reshape sharing its buffer: none), one for const
        and im2col."""
        return 1 if node.op not in COPY_OPS else len(copy_boxes(node, lanes))

    def cost(self, node: Node, knobs: dict[str, int], board: Board) -> Cost:
        """Cycles: what the kernel's counters count for the layer's calls at the design's lanes (trips at
        II=1, each loop's depth once, a DDR round trip per reader: :func:`desc_cycles`). Hardware: the whole
        mover (:func:`mover_hardware`), the same for every layer."""
        lanes = lanes_of(knobs, node)
        wb = int(board.axi_bits)
        descs = self.descs(node, lanes, wb)  # the copies' mode decided as self.mode decides it
        if not descs:
            return Cost()  # a reshape sharing its buffer: no call, so nothing of the mover is used for it
        chans = max([int(d.c) for d in descs if d.mode == MODE_IM2COL] or [0])
        mode = self.mode(node, knobs, board)
        hw = mover_hardware(lanes, node_bits(node), wb, chans, rotation(mode["runs"] if mode else [], lanes))
        return hw.with_cycles(sum(desc_cycles(d) for d in descs))

    def config(self, instance: str, nodes: list[Node], knobs: dict[str, int], word_bits: int) -> dict[str, Any]:
        """Trip-count maxima over every layer the unit runs (LOOP_TRIPCOUNT) and the loops' depths."""
        lanes = int(knobs.get("lanes", 1))
        trips = {"copy": 1, "const": 1, "window": 1, "table": 1}
        max_chans = 1
        for n in nodes:
            for d in self.descs(n, lanes, word_bits):  # the mode at these lanes, as self.mode decides it
                if d.mode == MODE_COPY:
                    trips["copy"] = max(trips["copy"], int(d.n))
                elif d.mode == MODE_CONST:
                    trips["const"] = max(trips["const"], int(d.ddr_words))
                else:
                    trips["window"] = max(trips["window"], int(d.n))
                    trips["table"] = max(trips["table"], int(d.ddr_words))
                    max_chans = max(max_chans, int(d.c))
        g = max(1, word_bits // 32)
        runs = [r for n in nodes if n.op in COPY_OPS for r in self.mode(n, knobs, None)["runs"]]
        return {"log2_rot": rotation(runs, lanes).bit_length() - 1,
                "max_copy": trips["copy"], "max_const": trips["const"], "max_window": trips["window"],
                "max_table": trips["table"], "max_chans": -(-max_chans // g) * g,
                "copy_depth": COPY_DEPTH, "const_depth": CONST_DEPTH, "fill_depth": FILL_DEPTH,
                "window_depth": WINDOW_DEPTH}

    def buffer_kinds(self, node: Node, in_kinds: list[str]) -> list[str]:
        if node.op == "const":
            return ["act"]
        if node.op == "concat" and len(set(in_kinds)) != 1:
            raise VaqfError(f"{node.name}: concatenating activations with accumulators")
        return [in_kinds[0]] if node.op == "concat" else list(in_kinds)

    def ddr_blobs(self, node: Node, word_bits: int, knobs: dict[str, int],
                  board: Board | None) -> dict[str, np.ndarray]:
        if node.op == "const":
            return {"data": const_blob(node, word_bits, lane_knob(knobs) or 1)}
        if node.op == "im2col":
            # the first word of every swept channel in the input buffer, at the design's lanes
            lanes = int(knobs.get("lanes", 1))
            _, h, w, _, _ = conv_geometry(node.inputs[0].info.shape, node.attrs)
            return {"chans": pack_int32(swept_channels(node) * h * row_words(w, lanes), word_bits)}
        return {}

    def describe(self, node: Node, ctx: EmitContext) -> dict[str, Any]:
        """One descriptor and call per copy; unused buffer arguments bound to the dummies."""
        blob = {"const": "data", "im2col": "chans"}.get(node.op)
        offset = ctx.offset(node, blob) if blob else 0
        descs = self.descs(node, ctx.lanes, int(ctx.word_bits), ctx.mode(node), offset)
        out = node.outputs[0].name
        acc = ctx.buffer(out).startswith("acc")
        calls = []
        for i, d in enumerate(descs):
            src = ctx.buffer(node.inputs[min(i, len(node.inputs) - 1)].name) if node.inputs else ctx.dummy["act"]
            dst = ctx.buffer(out)
            calls.append({"desc": dataclasses.replace(d, acc=int(acc)),
                          "ain": ctx.dummy["act"] if acc else src, "aout": ctx.dummy["act"] if acc else dst,
                          "cin": src if acc else ctx.dummy["acc"], "cout": dst if acc else ctx.dummy["acc"]})
        return {"ident": ctx.ident[node.name], "unit": self.instance(node), "calls": calls}


def const_blob(node: Node, word_bits: int, lanes: int) -> np.ndarray:
    """The constant as on-chip words (padded rows of L lanes), each word ceil(L/G) DDR words of int32."""
    info = node.outputs[0].info
    data = np.asarray(node.attrs["data"], dtype=np.int64).reshape(rows_of(info), last_dim(info))
    g = max(1, word_bits // 32)
    parts = -(-lanes // g)
    rw = row_words(last_dim(info), lanes)
    img = np.zeros((data.shape[0], rw, parts * g), dtype=np.int64)
    k = np.arange(data.shape[1])
    img[:, k // lanes, k % lanes] = data
    return (img.reshape(-1) & 0xFFFFFFFF).astype(np.uint32)
