"""Cost: cycles, resources and DDR traffic of a piece of hardware doing some work."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

RESOURCE_KEYS = ("lut", "ff", "dsp", "bram18", "uram")


@dataclass(frozen=True)
class Cost:
    cycles: int = 0
    lut: int = 0
    ff: int = 0
    dsp: int = 0
    bram18: int = 0
    uram: int = 0
    ddr_bytes: int = 0

    def __add__(self, other: Cost) -> Cost:
        return Cost(**{f.name: getattr(self, f.name) + getattr(other, f.name) for f in fields(self)})

    def max(self, other: Cost) -> Cost:
        """Elementwise max: the hardware a shared unit needs to serve both uses."""
        return Cost(**{f.name: max(getattr(self, f.name), getattr(other, f.name)) for f in fields(self)})

    def resources(self) -> dict[str, int]:
        return {k: getattr(self, k) for k in RESOURCE_KEYS}

    def with_cycles(self, cycles: int) -> Cost:
        return Cost(cycles, self.lut, self.ff, self.dsp, self.bram18, self.uram, self.ddr_bytes)

    def hardware_only(self) -> Cost:
        return Cost(0, self.lut, self.ff, self.dsp, self.bram18, self.uram, 0)


def bram18_for(depth: int, width: int) -> int:
    """BRAM18 primitives for a depth x width memory (UltraScale aspect ratios 16Kx1 ... 512x36).

    Picks the aspect ratio that needs the fewest primitives; tiny memories (< 1 Kb) go to LUTRAM (0).
    """
    if depth <= 0 or width <= 0:
        return 0
    if depth * width < 1024:
        return 0
    best = math.inf
    for d, w in ((16384, 1), (8192, 2), (4096, 4), (2048, 9), (1024, 18), (512, 36)):
        best = min(best, math.ceil(depth / d) * math.ceil(width / w))
    return int(best)
