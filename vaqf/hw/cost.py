"""Cost: cycles, resources and DDR traffic of a piece of hardware doing some work.

Also the small first-principles building blocks every op's cost model shares (memories, adders,
multiplexers, DSP48E2 multipliers), so that one LUT is counted the same way everywhere. The sources are
the Xilinx UltraScale(+) architecture guides: CLB (UG574: a LUT6 per bit of a carry-chain adder, LUT6 +
F7/F8 muxes, 64-bit distributed RAM per LUT), block RAM (UG573: BRAM18 aspect ratios 16Kx1 ... 512x36),
DSP48E2 (UG579: a 27x18 signed multiplier with a 27-bit pre-adder and a 48-bit accumulator).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

RESOURCE_KEYS = ("lut", "ff", "dsp", "bram18", "uram")

#: cycles from a DDR burst request to its first beat (AXI round trip on Zynq UltraScale+ HP ports); the
#: generated header passes it to the kernels' cycle counters as VAQF_DDR_LATENCY
DDR_LATENCY = 64

#: memories below this many bits go to distributed RAM (LUTRAM) rather than a BRAM18
LUTRAM_MAX_BITS = 1024
#: bits one LUT6 stores as distributed RAM (RAM64X1S, UG574)
LUTRAM_BITS_PER_LUT = 64


@dataclass(frozen=True)
class Cost:
    cycles: int = 0
    lut: int = 0
    ff: int = 0
    dsp: int = 0
    bram18: int = 0
    uram: int = 0
    ddr_bytes: int = 0

    def values(self) -> tuple[int, ...]:
        """The fields in declaration order (cycles, lut, ff, dsp, bram18, uram, ddr_bytes)."""
        return (self.cycles, self.lut, self.ff, self.dsp, self.bram18, self.uram, self.ddr_bytes)

    def __add__(self, other: Cost) -> Cost:
        return Cost(*(a + b for a, b in zip(self.values(), other.values(), strict=True)))

    def max(self, other: Cost) -> Cost:
        """Elementwise max: the hardware a shared unit needs to serve both uses."""
        return Cost(*(max(a, b) for a, b in zip(self.values(), other.values(), strict=True)))

    def resources(self) -> dict[str, int]:
        return {k: getattr(self, k) for k in RESOURCE_KEYS}

    def with_cycles(self, cycles: int) -> Cost:
        return Cost(cycles, self.lut, self.ff, self.dsp, self.bram18, self.uram, self.ddr_bytes)

    def hardware_only(self) -> Cost:
        return Cost(0, self.lut, self.ff, self.dsp, self.bram18, self.uram, 0)


def bram18_for(depth: int, width: int) -> int:
    """BRAM18 primitives for a depth x width memory (UltraScale aspect ratios 16Kx1 ... 512x36, UG573).

    Picks the aspect ratio that needs the fewest primitives; tiny memories (< 1 Kb) go to LUTRAM (0).
    """
    if depth <= 0 or width <= 0:
        return 0
    if depth * width < LUTRAM_MAX_BITS:
        return 0
    best = math.inf
    for d, w in ((16384, 1), (8192, 2), (4096, 4), (2048, 9), (1024, 18), (512, 36)):
        best = min(best, math.ceil(depth / d) * math.ceil(width / w))
    return int(best)


def lutram_luts(depth: int, width: int) -> int:
    """LUTs of a depth x width memory held in distributed RAM: one LUT6 per 64 bits of each column."""
    if depth <= 0 or width <= 0:
        return 0
    return math.ceil(depth / LUTRAM_BITS_PER_LUT) * width


def memory_cost(depth: int, width: int) -> Cost:
    """A depth x width on-chip memory: BRAM18s (:func:`bram18_for`), or LUTRAM when under 1 Kb."""
    if depth <= 0 or width <= 0:
        return Cost()
    if depth * width < LUTRAM_MAX_BITS:
        return Cost(lut=lutram_luts(depth, width))
    return Cost(bram18=bram18_for(depth, width))


def mux_luts(inputs: int) -> int:
    """LUT6s per bit of an ``inputs``:1 multiplexer (UG574).

    One LUT6 is a 4:1 mux; the slice's F7/F8 muxes combine four of them into a 16:1 mux at no LUT
    cost; wider muxes repeat the construction on the 16:1 outputs.
    """
    if inputs <= 1:
        return 0
    luts = math.ceil(inputs / 4)
    rest = math.ceil(inputs / 16)
    return luts + (mux_luts(rest) if rest > 1 else 0)


def barrel_luts(bits: int, shifts: int) -> int:
    """LUT6s of a run-time right shifter of ``bits`` bits over ``shifts`` positions: one 4:1 mux (a LUT6)
    per bit per two shift stages (UG574)."""
    stages = max(1, (max(shifts, 2) - 1).bit_length())
    return bits * -(-stages // 2)


def adder_tree_luts(leaves: int, bits: int) -> int:
    """LUTs of a balanced tree summing ``leaves`` signed ``bits``-bit operands.

    A carry-chain adder costs one LUT6 per result bit (UG574: the LUT computes the propagate signal,
    CARRY8 the carries); a signed sum of two w-bit operands has w+1 bits. Level l of the tree has
    floor(n_l / 2) adders of bits + l result bits (an odd operand passes to the next level).
    """
    total = 0
    n = max(int(leaves), 1)
    level = 0
    while n > 1:
        level += 1
        total += (n // 2) * (bits + level)
        n = (n + 1) // 2
    return total


def tree_depth(leaves: int) -> int:
    return math.ceil(math.log2(max(int(leaves), 1))) if leaves > 1 else 0


def dsp48e2_per_product(a_bits: int, b_bits: int) -> int:
    """DSP48E2 slices for one signed a_bits x b_bits product (UG579).

    One slice multiplies 27 x 18 bits signed; wider operands are split into 26- and 17-bit unsigned
    pieces, each pair of pieces needing one slice.
    """
    hi, lo = max(a_bits, b_bits), min(a_bits, b_bits)
    if hi <= 27 and lo <= 18:
        return 1
    return math.ceil(hi / 26) * math.ceil(lo / 17)


def signed_bits_for_range(lo: int, hi: int) -> int:
    """Bits of the narrowest two's-complement integer holding every value in [lo, hi]."""
    return max(max(int(hi), 0).bit_length(), max(-int(lo) - 1, 0).bit_length()) + 1
