"""The dataflow hardware: stages, their folding knobs, cycles per frame and resources.

Each stage is one function of the generated top's DATAFLOW region (``hls/vaqf/dataflow/``), running one
flattened pipelined loop per frame at II = 1 over every frame of a call; ``trips`` below is that loop's trip
count per frame, which the C-simulation's counters record (``VAQF_DF_FRAME``), and ``depth`` its pipeline
depth, paid once per call (plus the AXI read latency for the input stage). A pipeline of stages joined by
FIFOs that hold a frame of their edge runs frame f+1 in stage l while stage l+1 runs frame f, so its
steady-state interval is the largest ``trips`` of any stage (``docs/dataflow.md``).

Resources are counted from the building blocks of :mod:`vaqf.hw.cost` (UG574 LUT6 carry chains and muxes,
UG573 BRAM18 aspect ratios, LUTRAM under 1 Kb, UG579 DSP48E2), each term named in the function that adds it.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

import numpy as np

from vaqf.dataflow.pipeline import DataflowUnsupported, Layer
from vaqf.hw.cost import Cost, adder_tree_luts, barrel_luts, dsp48e2_per_product, memory_cost, tree_depth
from vaqf.ir import BinaryType
from vaqf.ops.common import max_abs

#: counters, loop-exit compare and stream handshakes of one stage's flattened loop (three to five 16-bit
#: counters at one LUT per bit, the valid/ready logic): LUTs and FFs
CONTROL_LUT = 60
CONTROL_FF = 80
#: epilogues: a layer whose output has at most this many levels compares against thresholds (FINN's
#: MultiThreshold: 2**bits - 1 comparators per channel); wider outputs use a dyadic requantizer
MAX_THRESHOLD_LEVELS = 16
#: the widest stream or weight word a layer's knobs may ask for: ap_[u]int holds up to 4096 bits once
#: AP_INT_MAX_W is raised (UG1399; the project's top header raises it past 1024), and the reader's staging
#: register holds a stream word plus a bus word
MAX_WORD_BITS = 2048
#: stream FIFOs up to this depth are shift registers (SRLC32E: 32 bits of one column per LUT, UG574)
SRL_DEPTH = 32
#: a 64-bit rounding shifter, its 64-bit adders, and clamp compares (qarith.h requantize): LUTs
REQUANT_LUT = barrel_luts(64, 63) + 64 + 2 * 64
#: pipeline depths (the config struct carries them to the counters): reader/packer, DWC, pool, window
IO_DEPTH = 3
DWC_DEPTH = 2
POOL_DEPTH = 3
SWG_DEPTH = 3
#: the AXI shell of a dataflow accelerator: s_axilite control (start, frame count, two addresses), one m_axi
#: read master for the input frames and one m_axi write master for the outputs (HLS adapters with their
#: burst buffers in LUTRAM); the engine's shell has a third master for weights (vaqf.hw.model.SHELL)
SHELL = Cost(0, lut=200 + 600 + 600, ff=300 + 900 + 900, dsp=0, bram18=0, uram=0)


def choices(n: int) -> list[int]:
    """Folding factors of a dimension n: the powers of two dividing it, and n itself."""
    out = {1, int(n)}
    p = 2
    while p <= n:
        if n % p == 0:
            out.add(p)
        p *= 2
    return sorted(out)


def signed_bits(lo: int, hi: int) -> int:
    return max(max(int(hi), 0).bit_length(), max(-int(lo) - 1, 0).bit_length()) + 1


@dataclass
class Mvau:
    """Matrix-vector-activation unit geometry and datapath widths for one dense or conv layer."""

    rows: int
    k: int
    n: int
    in_bits: int          # stream element bits
    in_signed: bool
    w_bits: int           # 1 for bipolar weights (bit 1 = +1)
    bipolar: bool
    acc_bits: int
    mode: str             # "thresholds" | "requant" | "acc"
    levels: int           # output levels (thresholds mode)
    thr_bits: int
    out_bits: int
    bias_bits: int

    @property
    def op_bits(self) -> int:
        """Signed width of an activation operand (an unsigned element gains a sign bit)."""
        return self.in_bits + (0 if self.in_signed else 1)

    @property
    def product_bits(self) -> int:
        return self.op_bits + (1 if self.bipolar else self.w_bits)

    def depth(self, simd: int) -> int:
        """Weight read, product, adder tree levels, accumulate, epilogue, output register."""
        return 5 + tree_depth(simd) + (1 if self.mode == "requant" else 0)

    def trips(self, pe: int, simd: int) -> int:
        return self.rows * (self.n // pe) * (self.k // simd)

    def cost(self, pe: int, simd: int) -> Cost:
        nf, sf = self.n // pe, self.k // simd
        p = self.product_bits
        if self.bipolar:
            prod = self.op_bits                   # conditional negation: an XOR per bit, the +1 in the tree's carry
        else:
            prod = self.w_bits * self.op_bits     # a small LUT multiplier: one LUT6 per partial-product bit
        lut = pe * simd * prod
        lut += pe * adder_tree_luts(simd, p)      # PE adder trees
        lut += pe * self.acc_bits                 # PE accumulators
        ff = pe * self.acc_bits * 2 + pe * simd * p // 2 + CONTROL_FF
        dsp = 0
        res = Cost()
        if self.mode == "thresholds":
            lut += pe * (self.levels - 1) * self.thr_bits + pe * (self.levels - 1)  # comparators, their count
            res += _times(memory_cost(nf, self.thr_bits), pe * (self.levels - 1))    # thr[PE][NF][L-1] banks
        else:
            lut += pe * self.acc_bits                                                # the bias adder
            res += _times(memory_cost(nf, self.bias_bits), pe)
            if self.mode == "requant":
                lut += pe * REQUANT_LUT
                dsp += pe * dsp48e2_per_product(self.acc_bits + 1, 32)
                res += _times(memory_cost(nf, 32) + memory_cost(nf, 6), pe)          # mantissa, shift per channel
        # weights: per PE a ROM of nf*sf words of simd*w_bits bits, in banks of at most 64 bits
        chunks, cw = weight_chunks(simd * self.w_bits)
        res += _times(memory_cost(nf * sf, cw), pe * chunks)
        if nf > 1:  # the input vector, kept for the other output folds
            res += memory_cost(sf, simd * self.in_bits)
        lut += CONTROL_LUT
        return res + Cost(0, lut, ff, dsp)


def weight_chunks(bits: int) -> tuple[int, int]:
    """(banks, bits per bank) of a weight word of ``bits``: as few banks of at most 64 bits as hold it, equal."""
    n = max(1, math.ceil(bits / 64))
    return n, math.ceil(bits / n)


def _times(c: Cost, n: int) -> Cost:
    return Cost(c.cycles, c.lut * n, c.ff * n, c.dsp * n, c.bram18 * n, c.uram * n)


def mvau_of(layer: Layer) -> Mvau:
    """The MVAU of a dense or conv layer, with its epilogue chosen from the output's levels."""
    node = layer.node
    a = node.attrs
    w = layer.weight
    bipolar = isinstance(a["w_type"], BinaryType)
    wq = a["w_type"]
    w_bits = 1 if bipolar else int(wq.bits)
    xe = layer.in_elem
    xmax = max(abs(int(xe.min)), abs(int(xe.max)))
    raw = int((np.abs(w.astype(np.int64)).sum(axis=1) * xmax).max(initial=0))
    fold = folded_bias(layer)
    bmax = int(np.abs(fold).max(initial=0))
    acc_bits = signed_bits(-(raw + bmax), raw + bmax)
    rq = a.get("requant")
    out = layer.out_elem
    levels = int(out.max) - int(out.min) + 1
    if rq is not None and levels <= MAX_THRESHOLD_LEVELS and np.all(np.asarray(rq["mantissa"]) > 0):
        mode = "thresholds"
    elif rq is not None:
        if rq.get("offset") is not None:  # the dyadic requantizer of mvau.h has no offset
            raise DataflowUnsupported(f"{node.name}: a folded BatchNormalization ahead of a quantizer of more than "
                                      f"{MAX_THRESHOLD_LEVELS} levels needs the engine's sub-step offset")
        mode = "requant"
    else:
        mode = "acc"
    thr = thresholds(layer) if mode == "thresholds" else None
    thr_bits = signed_bits(int(thr.min(initial=0)), int(thr.max(initial=0))) if thr is not None else 0
    return Mvau(layer.rows, layer.k, layer.n, int(xe.bits), bool(xe.signed), w_bits, bipolar, acc_bits, mode,
                levels, thr_bits, int(out.bits), signed_bits(-bmax, bmax))


def folded_bias(layer: Layer) -> np.ndarray:
    """bias[n] - zp_in * sum_k w[n, k]: the MVAU sums raw stream elements times weights, so the input zero
    point moves into the bias (exact in integers)."""
    a = layer.node.attrs
    zp = int(a["zp_in"])
    return np.asarray(a["bias"], dtype=np.int64) - zp * layer.weight.astype(np.int64).sum(axis=1)


def thresholds(layer: Layer) -> np.ndarray:
    """Per output channel the raw sums at which the output steps up: [N, levels - 1], ascending.

    The layer's exact output is f_n(s) = requant(relu(s + bias[n])) of s = sum_k (x_k - zp) w[n, k]
    (vaqf.sim.loops.gemm_epilogue), non-decreasing in s when every multiplier is positive; output level
    lo + j is reached for s >= T_j, found by bisection on f itself over the range s can take. The MVAU
    compares its raw sum r = s - zp_in * sum_k w[n, k] (the zero point is not subtracted per element), so
    T_j minus that fold is stored: out = lo + #{j : r >= T'_j}."""
    from vaqf.ir.qarith import Rounding
    from vaqf.sim.loops import epilogue_columns, epilogue_params, gemm_epilogue

    a = layer.node.attrs
    rq = a["requant"]
    n = layer.n
    out = layer.out_elem
    lo, hi = int(out.min), int(out.max)
    cols = epilogue_columns(np.asarray(a["bias"], dtype=np.int64), rq["mantissa"], rq["shift"], n, rq.get("offset"))
    params = epilogue_params(bool(a.get("relu")), True, int(rq["zero_point"]), lo, hi,
                             Rounding(rq["rounding"]).cpp_id)
    xe = layer.in_elem
    zp = int(a["zp_in"])
    bound = int((np.abs(layer.weight.astype(np.int64)).sum(axis=1) * max_abs(int(xe.min), int(xe.max), zp)).max(
        initial=0)) + 1

    def f(s: np.ndarray) -> np.ndarray:
        res = np.empty((1, n), dtype=np.int64)
        gemm_epilogue(s.reshape(1, n).astype(np.int64), cols, params, res)
        return res[0]

    t = np.empty((n, hi - lo), dtype=np.int64)
    for j in range(1, hi - lo + 1):
        left = np.full(n, -bound, dtype=np.int64)    # f(left) < lo + j, or left is below every reachable sum
        right = np.full(n, bound, dtype=np.int64)    # f(right) >= lo + j, or right is above every reachable sum
        reach = f(right) >= lo + j
        below = f(left) >= lo + j
        while np.any(right - left > 1):
            mid = (left + right) // 2
            up = f(mid) >= lo + j
            right = np.where(up, mid, right)
            left = np.where(up, left, mid)
        t[:, j - 1] = np.where(below, -bound, np.where(reach, right, bound + 1))
    fold = layer.node.attrs["zp_in"] * layer.weight.astype(np.int64).sum(axis=1)
    return t - fold[:, None]


@dataclass
class Swg:
    """Sliding-window generator (stride 1): a line buffer of K image rows, one read and one emitted word per
    cycle; the window's bottom row is emitted after it was read (docs/dataflow.md)."""

    c: int
    h: int
    w: int
    kernel: int
    pads: list[int]
    ho: int
    wo: int
    bits: int

    def pre_rows(self) -> int:
        return max(0, self.kernel - 1 - self.pads[0])

    def pass_trips(self, simd: int) -> int:
        cf = self.c // simd
        return max(self.w * cf, self.wo * self.kernel * self.kernel * cf)

    def trips(self, simd: int) -> int:
        cf = self.c // simd
        return self.pre_rows() * self.w * cf + self.ho * self.pass_trips(simd)

    def cost(self, simd: int) -> Cost:
        cf = self.c // simd
        res = memory_cost(self.kernel * self.w * cf, simd * self.bits)   # the line buffer
        lut = CONTROL_LUT + 40                                            # row/column/tap counters, address adder
        if any(self.pads):
            lut += simd * self.bits                                       # the padding select
        return res + Cost(0, lut, CONTROL_FF + simd * self.bits)


@dataclass
class Pool:
    """Streaming max pool (window = stride): a row of running maxima, one input word per cycle."""

    c: int
    h: int
    w: int
    kernel: int
    ho: int
    wo: int
    bits: int

    def trips(self, p: int) -> int:
        return self.h * self.w * (self.c // p)

    def cost(self, p: int) -> Cost:
        cf = self.c // p
        res = memory_cost(self.wo * cf, p * self.bits)                   # running maxima of an output row
        lut = CONTROL_LUT + 2 * p * self.bits                             # compare + select per lane, twice
        return res + Cost(0, lut, CONTROL_FF + 2 * p * self.bits)


def dwc_trips(elems: int, a: int, b: int) -> int:
    return max(elems // a, elems // b)


def dwc_cost(a: int, b: int, bits: int) -> Cost:
    """A width converter between words of a and b elements (one divides the other): a b-element shift register
    filled a words at a time, or an a-element register read b elements at a time through an a/b:1 mux."""
    if a == b:
        return Cost()
    if b > a:
        return Cost(0, CONTROL_LUT // 2 + b * bits // 2, b * bits + CONTROL_FF // 2)
    from vaqf.hw.cost import mux_luts

    return Cost(0, CONTROL_LUT // 2 + b * bits * mux_luts(a // b), a * bits + CONTROL_FF // 2)


def fifo_cost(depth: int, width: int) -> Cost:
    """A stream FIFO: shift registers up to SRL_DEPTH deep, else a dual-port memory plus its pointers."""
    if depth <= SRL_DEPTH:
        return Cost(0, width * math.ceil(depth / 32) + 8, width + 8)
    ptr = max(1, (depth - 1).bit_length())
    return memory_cost(depth, width) + Cost(0, 4 * ptr + 10, 2 * ptr + width + 4)


def io_words(elems: int, s: int, bits: int, bus: int) -> tuple[int, int, int]:
    """(stream words, bus words, trips) of a packer between bus words and s-element stream words of ``bits``:
    a bus word holds floor(bus / (s * bits)) stream words, or a stream word takes ceil(s * bits / bus) beats."""
    words = elems // s
    if s * bits <= bus:
        per = bus // (s * bits)
        beats = -(-words // per)
        return words, beats, words
    beats_per = -(-(s * bits) // bus)
    return words, words * beats_per, words * beats_per


def io_cost(s: int, bits: int, bus: int) -> Cost:
    """Unpack (or pack) s elements from a bus word: an s*bits register and a select over the bus words."""
    from vaqf.hw.cost import mux_luts

    if s * bits <= bus:
        per = bus // (s * bits)
        return Cost(0, CONTROL_LUT + s * bits * mux_luts(per), CONTROL_FF + bus + s * bits)
    return Cost(0, CONTROL_LUT + s * bits, CONTROL_FF + bus + s * bits)


@dataclass
class LayerHw:
    """A layer's hardware model: its knobs' choices and, per choice, frame trips and resources."""

    layer: Layer
    mvau: Mvau | None = None
    swg: Swg | None = None
    pool: Pool | None = None
    knob_names: tuple[str, ...] = field(default_factory=tuple)

    @classmethod
    def of(cls, layer: Layer) -> LayerHw:
        if layer.kind == "pool":
            g = layer.geom
            return cls(layer, pool=Pool(g["c"], g["h"], g["w"], g["kernel"], g["ho"], g["wo"],
                                        int(layer.in_elem.bits)), knob_names=("p",))
        hw = cls(layer, mvau=mvau_of(layer), knob_names=("pe", "simd"))
        if layer.kind == "conv":
            g = layer.geom
            hw.swg = Swg(g["c"], g["h"], g["w"], g["kernel"], g["pads"], g["ho"], g["wo"], int(layer.in_elem.bits))
        return hw

    def knob_space(self) -> dict[str, list[int]]:
        if self.pool is not None:
            return {"p": choices(self.pool.c)}
        simd_dim = self.swg.c if self.swg is not None else self.layer.k
        return {"pe": choices(self.layer.n), "simd": choices(simd_dim)}

    def options(self) -> list[dict[str, int]]:
        """Every knob combination whose stream and weight words stay within MAX_WORD_BITS."""
        sp = self.knob_space()
        names = sorted(sp)
        combos = [{k: int(v) for k, v in zip(names, combo, strict=True)}
                  for combo in itertools.product(*(sp[k] for k in names))]
        return [kn for kn in combos if self.word_bits(kn) <= MAX_WORD_BITS] or combos[:1]

    def word_bits(self, knobs: dict[str, int]) -> int:
        """The widest word the layer moves at these knobs: its input and output stream words, and a PE's
        SIMD weights."""
        w_bits = self.mvau.w_bits if self.mvau is not None else 0
        return max(self.in_width(knobs) * max(int(self.layer.in_elem.bits), w_bits),
                   self.out_width(knobs) * int(self.layer.out_elem.bits))

    def in_width(self, knobs: dict[str, int]) -> int:
        """Elements per word of the layer's input stream."""
        return knobs["p"] if self.pool is not None else knobs["simd"]

    def out_width(self, knobs: dict[str, int]) -> int:
        return knobs["p"] if self.pool is not None else knobs["pe"]

    def stages(self, knobs: dict[str, int]) -> list[tuple[str, int, int, Cost]]:
        """(kind, trips per frame, pipeline depth, resources) of each stage of the layer at these knobs."""
        if self.pool is not None:
            p = knobs["p"]
            return [("pool", self.pool.trips(p), POOL_DEPTH, self.pool.cost(p))]
        pe, simd = knobs["pe"], knobs["simd"]
        out = []
        if self.swg is not None:
            out.append(("swg", self.swg.trips(simd), SWG_DEPTH, self.swg.cost(simd)))
        assert self.mvau is not None
        out.append(("mvau", self.mvau.trips(pe, simd), self.mvau.depth(simd), self.mvau.cost(pe, simd)))
        return out

    def trips(self, knobs: dict[str, int]) -> int:
        return max(t for _, t, _, _ in self.stages(knobs))

    def cost(self, knobs: dict[str, int]) -> Cost:
        total = Cost()
        for _, _, _, c in self.stages(knobs):
            total = total + c
        return total

    def inner_fifo(self, knobs: dict[str, int]) -> tuple[int, int] | None:
        """(depth, width bits) of the FIFO between a conv layer's window generator and its MVAU.

        Within a frame the MVAU reads a window (SF words) per output pixel and the generator emits one in about
        as many cycles, so one window of slack keeps the MVAU fed; at a frame boundary the generator first
        reads the next image's leading rows (pre_rows x W x CF cycles) without emitting, which the MVAU rides
        out on windows queued before: the FIFO holds that many words more."""
        if self.swg is None:
            return None
        simd = knobs["simd"]
        cf = self.swg.c // simd
        sf = self.swg.kernel * self.swg.kernel * cf
        return self.swg.pre_rows() * self.swg.w * cf + sf + 2, simd * self.swg.bits
