"""Strided copies: the data-movement unit shared by transpose, slice, concat and const.

A copy visits every index ``o`` of an N-d box ``dims`` (row-major) and moves
``in[in_base + sum(o * in_strides)]`` to ``out[out_base + sum(o * out_strides)]``. Transposes permute the
input strides, slices scale and offset them, concatenation offsets the output.
"""

from __future__ import annotations

import math
from typing import Any

from vaqf.errors import VaqfError
from vaqf.hw.cost import Cost

MAX_DIMS = 8
#: address-generation pipeline depth of the copy loop
COPY_LATENCY = 10


def contiguous_strides(shape: tuple[int, ...]) -> list[int]:
    strides = [1] * len(shape)
    for i in range(len(shape) - 2, -1, -1):
        strides[i] = strides[i + 1] * shape[i + 1]
    return strides


def copy_desc(dims: list[int], in_strides: list[int], out_strides: list[int], in_base: int = 0,
              out_base: int = 0) -> dict[str, Any]:
    """Plain values of a ``vaqf::copy_desc``: axes of size 1 dropped, padded to MAX_DIMS leading ones."""
    keep = [i for i, d in enumerate(dims) if d != 1]
    d = [dims[i] for i in keep]
    si = [in_strides[i] for i in keep]
    so = [out_strides[i] for i in keep]
    if len(d) > MAX_DIMS:
        raise VaqfError(f"a copy over {len(d)} non-trivial axes exceeds the kernel's {MAX_DIMS}")
    pad = MAX_DIMS - len(d)
    return {"ndim": MAX_DIMS, "dims": [1] * pad + d, "in_strides": [0] * pad + si, "out_strides": [0] * pad + so,
            "in_base": int(in_base), "out_base": int(out_base), "n": int(math.prod(dims))}


def copy_cost(elements: int, calls: int = 1) -> Cost:
    """One element per cycle (a BRAM read and write port each) plus the pipeline fill of every call.

    LUT/FF: eight nested index counters with stride adders (~40 LUT per axis) and two address adders.
    """
    return Cost(elements + calls * COPY_LATENCY, lut=450, ff=700, dsp=0, bram18=0, uram=0, ddr_bytes=0)


class MoverSpec:
    """Unit plumbing shared by the ops that run on the data-movement unit (no knobs, no config)."""

    def unit(self, node) -> str:
        return "mover"

    def knobs(self, node) -> dict[str, list[int]]:
        return {}

    def unit_params(self, unit: str, nodes: list, knobs: dict[str, int], word_bits: int) -> dict[str, Any]:
        return {}

    def buffer_kinds(self, node, in_kinds: list[str]) -> list[str]:
        return list(in_kinds)
