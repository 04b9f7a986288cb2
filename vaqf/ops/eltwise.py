"""Cost of the elementwise unit shared by relu and standalone requantization."""

from __future__ import annotations

import math

from vaqf.hw.cost import Cost

LANE_CHOICES = (1, 2, 4, 8, 16, 32)


def eltwise_cost(elements: int, lanes: int, bits: int, lut_per_bit: float, dsp_per_lane: int) -> Cost:
    """``lanes`` elements per cycle through a pipeline of depth ~8: cycles = ceil(n / lanes) + 8.

    Counted with the primitives of :mod:`vaqf.hw.cost` (UltraScale+ CLB, UG574): ``lut_per_bit`` LUTs
    per data bit per lane: a compare-and-select (relu: compare with the zero point on the carry chain,
    the select merged into the same LUT) is ~1 LUT/bit; a requantization's rounding shift and clamp ~3
    LUT/bit (one level of 4:1 shift muxes, the rounding increment, the clamp compare and select). Plus
    150 LUTs of loop control and address generation (two counters and compares). FF: two pipeline
    registers per data bit and lane. DSP48E2: ``dsp_per_lane`` (2 for a 32 x 24-bit requantization
    multiply, 0 for relu).
    """
    cycles = math.ceil(elements / lanes) + 8
    lut = 150 + math.ceil(lanes * bits * lut_per_bit)
    ff = 200 + lanes * bits * 2
    return Cost(cycles, lut, ff, dsp_per_lane * lanes, 0, 0, 0)
