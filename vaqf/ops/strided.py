"""The mover: the data-movement unit shared by strided_copy, transpose, slice, concat, reshape, const and im2col.

One kernel (``hls/vaqf/move.h`` ``vaqf::move``) with a mode field, so every layer calls the same
``mover_run``: mode COPY (a strided copy between two buffers of one kind), mode CONST (a constant from DDR)
and mode IM2COL (convolution windows). The hardware of all three loops exists once, and every layer's cost
charges their sum (:func:`mover_hardware`).

A copy visits every index ``o`` of an N-d box ``dims`` (row-major) and moves input element
``in_base + sum(o * in_strides)`` to output element ``out_base + sum(o * out_strides)``, the flat indices
being row-major over each side's IR shape. On chip the two sides are stored as padded rows of L-lane words
(:mod:`vaqf.hw.layout`), so :func:`plan_copy` converts each side's element strides into (word, column) steps:
a stride ``s = q*d + m`` (``d`` the row length, ``0 <= m < d``) adds ``q`` rows of words and ``m`` columns,
with one carry into the next row when the column passes ``d``. The kernel then needs no division.

Two ways to move: one element per cycle (the read is an L:1 lane multiplexer, the write a lane decode: the
allowed pattern 3 of docs/hls.md), or, where every run of the innermost axis starts at lane 0 on both sides
and stays within a row on both sides, one whole word per cycle (lanes at compile-time banks, the run's last
word written under a lane mask).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from vaqf.errors import VaqfError
from vaqf.hw.cost import DDR_LATENCY, Cost, memory_cost, mux_luts
from vaqf.hw.layout import LANE_CHOICES, lane_knob, last_dim, row_words
from vaqf.ir import IntType, Node, TensorInfo

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

#: the fields of ``vaqf::move_desc``, in declaration order (the template emits them in this order)
DESC_FIELDS = ("mode", "acc", "words", "n", "tail", "dims", "in_w", "in_c", "out_w", "out_c",
               "in_w0", "in_c0", "out_w0", "out_c0", "in_d", "in_rw", "out_d", "out_rw",
               "offset", "ddr_words", "parts",
               "c", "h", "w", "ho", "wo", "kh", "kw", "sh", "sw", "pt", "pl", "zp")


def contiguous_strides(shape: tuple[int, ...]) -> list[int]:
    strides = [1] * len(shape)
    for i in range(len(shape) - 2, -1, -1):
        strides[i] = strides[i + 1] * shape[i + 1]
    return strides


def empty_desc(mode: int) -> dict[str, Any]:
    """A descriptor with every field zero (the kernel reads only the fields of its mode)."""
    d: dict[str, Any] = {f: 0 for f in DESC_FIELDS}
    for f in ("dims", "in_w", "in_c", "out_w", "out_c"):
        d[f] = [0] * MAX_DIMS
    d["dims"] = [1] * MAX_DIMS
    d["mode"] = mode
    return d


def desc_values(d: dict[str, Any]) -> list[str]:
    """The descriptor's initializer entries in struct order (arrays as brace lists)."""
    out = []
    for f in DESC_FIELDS:
        v = d[f]
        out.append("{" + ", ".join(str(int(x)) for x in v) + "}" if isinstance(v, list) else str(int(v)))
    return out


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


def _word_runs(dims: list[int], si: list[int], so: list[int], in_base: int, out_base: int, d_in: int,
               d_out: int, lanes: int) -> int | None:
    """The longest run g (a divisor of the innermost axis) that can move whole words, or None.

    A run of g elements moves as ceil(g / L) words when it is contiguous on both sides (stride 1), starts at
    lane 0 on both sides, and stays inside one row on both sides; g = 1 never pays off.
    """
    if not dims or si[-1] != 1 or so[-1] != 1:
        return None
    n = dims[-1]
    best, best_trips = None, math.prod(dims)  # element mode's trips
    for g in sorted({g for g in range(2, n + 1) if n % g == 0}, reverse=True):
        trips = math.prod(dims[:-1]) * (n // g) * -(-g // lanes)
        if trips >= best_trips:
            continue
        dd = dims[:-1] + [n // g]
        ok = True
        for strides, base, d in ((si, in_base, d_in), (so, out_base, d_out)):
            col = _flat_index(dd, strides[:-1] + [g], base) % d
            if np.any(col % lanes) or np.any(col + g > d):
                ok = False
                break
        if ok:
            best, best_trips = g, trips
    return best


def plan_copy(dims: list[int], in_strides: list[int], out_strides: list[int], in_base: int, out_base: int,
              src: TensorInfo, dst: TensorInfo, lanes: int, acc: bool = False,
              name: str = "copy") -> dict[str, Any]:
    """The ``vaqf::move_desc`` of one strided copy from ``src`` to ``dst`` (element strides of the IR
    shapes), for words of ``lanes`` lanes: whole words where the runs line up, else one element per cycle."""
    keep = [i for i, n in enumerate(dims) if n != 1]
    dd = [int(dims[i]) for i in keep]
    si = [int(in_strides[i]) for i in keep]
    so = [int(out_strides[i]) for i in keep]
    d_in, d_out = last_dim(src), last_dim(dst)
    rw_in, rw_out = row_words(d_in, lanes), row_words(d_out, lanes)
    g = _word_runs(dd, si, so, in_base, out_base, d_in, d_out, lanes)
    tail = 0
    if g is not None:  # the innermost axis becomes (runs of g) x (words of a run, stepping L columns)
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
    d = empty_desc(MODE_COPY)
    d.update({"acc": int(acc), "words": int(g is not None), "n": int(math.prod(dd)), "tail": tail,
              "dims": [1] * pad + dd, "in_w": [0] * pad + iw, "in_c": [0] * pad + ic,
              "out_w": [0] * pad + ow, "out_c": [0] * pad + oc,
              "in_d": d_in, "in_rw": rw_in, "out_d": d_out, "out_rw": rw_out})
    d["in_w0"], d["in_c0"] = _start(in_base, d_in, rw_in)
    d["out_w0"], d["out_c0"] = _start(out_base, d_out, rw_out)
    return d


def copy_cycles(desc: dict[str, Any]) -> int:
    """Cycles of one copy call: its trips at II=1 plus the loop's pipeline depth (VAQF_LOOP in move.h)."""
    return int(desc["n"]) + COPY_DEPTH if desc["n"] else 0


def const_cycles(ddr_words: int) -> int:
    """Cycles of one constant load: the DDR round trip once, one DDR word per cycle, the pipeline depth."""
    return int(ddr_words) + DDR_LATENCY + CONST_DEPTH if ddr_words else 0


def im2col_cycles(table_words: int, n: int) -> int:
    """The channel-table fill (a DDR burst) then the window loop, one output element per cycle."""
    return int(table_words) + DDR_LATENCY + FILL_DEPTH + int(n) + WINDOW_DEPTH


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


def mover_hardware(lanes: int, act_bits: int, word_bits: int = 128, max_chans: int = 0) -> Cost:
    """The mover's hardware, the sum of its three loops (every layer runs on the same ``vaqf::move``).

    Copy loop, instantiated twice (act_t and acc_t buffers; ``acc_bits`` charged at ACC_CHARGE_BITS):
    - read lane multiplexer: ``mux_luts(L)`` LUTs per bit of an element (the element mode's L:1 load);
    - write data: per lane a 2:1 select between the word's own lane and the multiplexed element (L x bits);
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
    for bits in (act_bits, ACC_CHARGE_BITS):
        lut += mux_luts(lanes) * bits + lanes * bits + lanes + addr
        ff += addr_ff + 2 * lanes * bits
    lut += lanes + 4 * ADDR_BITS
    ff += word_bits + 2 * ADDR_BITS
    lut += mux_luts(lanes) * act_bits + lanes * act_bits + lanes + 17 * ADDR_BITS
    ff += 10 * ADDR_BITS + 2 * lanes * act_bits + word_bits
    g = max(1, word_bits // 32)
    table = memory_cost(-(-max(max_chans, 1) // g), 32)
    return Cost(lut=lut + g * table.lut, ff=ff, bram18=g * table.bram18)


class MoverSpec:
    """Unit plumbing shared by the ops that run on the mover: the lane knob, the config struct."""

    #: int fields of vaqf::move_desc (hls/vaqf/move.h), for the call-site multiplexer (vaqf.hw.model.sharing_cost)
    desc_fields = 68

    def unit(self, node: Node) -> str:
        return "mover"

    def knobs(self, node: Node) -> dict[str, list[int]]:
        """The design's lane count (the search forces it to L); the mover has no other knob."""
        return {"lanes": list(LANE_CHOICES)}

    def unit_params(self, unit: str, nodes: list[Node], knobs: dict[str, int], word_bits: int) -> dict[str, Any]:
        """Trip-count maxima over every layer the unit runs (LOOP_TRIPCOUNT) and the loops' depths."""
        from vaqf.ops import get_spec

        lanes = int(knobs.get("lanes", 1))
        trips = {"copy": 1, "const": 1, "window": 1, "table": 1}
        max_chans = 1
        for n in nodes:
            for k, v in get_spec(n.op).mover_trips(n, lanes, word_bits).items():
                trips[k] = max(trips[k], int(v))
            for d in get_spec(n.op).mover_descs(n, lanes, word_bits):
                if d["mode"] == MODE_IM2COL:
                    max_chans = max(max_chans, int(d["c"]))
        g = max(1, word_bits // 32)
        return {"max_copy": trips["copy"], "max_const": trips["const"], "max_window": trips["window"],
                "max_table": trips["table"], "max_chans": -(-max_chans // g) * g,
                "copy_depth": COPY_DEPTH, "const_depth": CONST_DEPTH, "fill_depth": FILL_DEPTH,
                "window_depth": WINDOW_DEPTH}

    def buffer_kinds(self, node: Node, in_kinds: list[str]) -> list[str]:
        return list(in_kinds)

    def copy_params(self, node: Node, ctx: Any, descs: list[dict[str, Any]]) -> dict[str, Any]:
        """Template values of a layer made of copies, one ``mover_run`` call per copy."""
        out = node.outputs[0].name
        acc = ctx.buffer(out).startswith("acc")
        calls = []
        for i, d in enumerate(descs):
            d = dict(d, acc=int(acc))
            src = ctx.buffer(node.inputs[min(i, len(node.inputs) - 1)].name) if node.inputs else ctx.dummy["act"]
            dst = ctx.buffer(out)
            calls.append({"values": desc_values(d),
                          "ain": ctx.dummy["act"] if acc else src, "aout": ctx.dummy["act"] if acc else dst,
                          "cin": src if acc else ctx.dummy["acc"], "cout": dst if acc else ctx.dummy["acc"]})
        return {"ident": ctx.ident[node.name], "unit": self.unit(node), "calls": calls}

    # ---- what every mover op provides: its descriptors (one per mover_run call) ----
    def mover_descs(self, node: Node, lanes: int, word_bits: int) -> list[dict[str, Any]]:
        raise NotImplementedError

    def mover_trips(self, node: Node, lanes: int, word_bits: int) -> dict[str, int]:
        """The trips of each loop the node's calls run (the config struct's LOOP_TRIPCOUNT maxima)."""
        out = {"copy": 0, "const": 0, "window": 0, "table": 0}
        for d in self.mover_descs(node, lanes, word_bits):
            if d["mode"] == MODE_COPY:
                out["copy"] = max(out["copy"], int(d["n"]))
            elif d["mode"] == MODE_CONST:
                out["const"] = max(out["const"], int(d["ddr_words"]))
            else:
                out["window"] = max(out["window"], int(d["n"]))
                out["table"] = max(out["table"], int(d["ddr_words"]))
        return out

    def mover_cycles(self, node: Node, lanes: int, word_bits: int) -> int:
        """What the kernel's counters count for the node: each call's loops (move.h, conv.h)."""
        total = 0
        for d in self.mover_descs(node, lanes, word_bits):
            if d["mode"] == MODE_COPY:
                total += copy_cycles(d)
            elif d["mode"] == MODE_CONST:
                total += const_cycles(d["ddr_words"])
            else:
                total += im2col_cycles(d["ddr_words"], d["n"])
        return total

    def cost(self, node: Node, knobs: dict[str, int], board: Any) -> Cost:
        """Cycles: :meth:`mover_cycles` at the design's lanes (trips at II=1, each loop's depth once, a DDR
        round trip per reader). Hardware: the whole mover (:func:`mover_hardware`), the same for every layer."""
        lanes = lanes_of(knobs, node)
        wb = int(board.axi_bits)
        descs = self.mover_descs(node, lanes, wb)
        if not descs:
            return Cost()  # a reshape sharing its buffer: no call, so nothing of the mover is used for it
        chans = max([int(d["c"]) for d in descs if d["mode"] == MODE_IM2COL] or [0])
        hw = mover_hardware(lanes, node_bits(node), wb, chans)
        return hw.with_cycles(self.mover_cycles(node, lanes, wb))

    def template_params(self, node: Node, ctx: Any) -> dict[str, Any]:
        return self.copy_params(node, ctx, self.mover_descs(node, ctx.lanes, self.word_bits(ctx)))

    @staticmethod
    def word_bits(ctx: Any) -> int:
        return int(ctx.word_bits)
