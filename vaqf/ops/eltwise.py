"""Cost of the elementwise unit shared by relu and standalone requantization."""

from __future__ import annotations

import math

from vaqf.hw.cost import Cost

LANE_CHOICES = (1, 2, 4, 8, 16, 32)


def eltwise_cost(elements: int, lanes: int, bits: int, lut_per_bit: float, dsp_per_lane: int) -> Cost:
    """``lanes`` elements per cycle through a pipeline of depth ~8: cycles = ceil(n / lanes) + 8.

    LUT: ``lut_per_bit`` per data bit per lane (a compare-and-select is ~1 LUT/bit; a rounding shift
    and clamp ~3 LUT/bit) plus 150 of loop control.
    """
    cycles = math.ceil(elements / lanes) + 8
    lut = 150 + math.ceil(lanes * bits * lut_per_bit)
    ff = 200 + lanes * bits * 2
    return Cost(cycles, lut, ff, dsp_per_lane * lanes, 0, 0, 0)
