"""The on-chip activation layout: L-lane words with padded rows, so every parallel access banks by construction.

Every activation and accumulator buffer is ``T buf[WORDS][L]`` with ``ARRAY_PARTITION complete dim=2``: L
banks, bank b holding lane b of every word. A value of IR shape ``[..., d]`` is stored as ``rows =
size / d`` rows of ``row_words(d, L) = ceil(d / L)`` words each: element (r, k) lives in word
``r * ceil(d / L) + k // L``, lane ``k % L``. The lanes past ``d`` in a row's last word are padding:
no unit reads them as data.

L (``lanes``) is one number per design: every unit reads and writes L lanes per word (the GEMM units'
SIMD, the elementwise units' lanes). A unit's unrolled lane loop touches lane l of one word per cycle, a
compile-time bank, so its accesses never collide (docs/hls.md). Units that move single elements (the
movers) use one bank per cycle, selected at run time: a write decodes the bank, a read goes through an
L:1 multiplexer, which their cost charges.
"""

from __future__ import annotations

import math

from vaqf.ir import TensorInfo

#: the lane counts a design may choose (powers of two, as the kernels' word loops require)
LANE_CHOICES = (1, 2, 4, 8, 16, 32, 64, 128, 256)


def row_words(d: int, lanes: int) -> int:
    """Words of one row of ``d`` elements."""
    return max(1, -(-int(d) // int(lanes)))


def last_dim(info: TensorInfo) -> int:
    """The row length of a value: its last axis (1 for a scalar)."""
    return int(info.shape[-1]) if len(info.shape) else 1


def rows_of(info: TensorInfo) -> int:
    """Rows of a value: its size over its last axis."""
    d = last_dim(info)
    return int(info.size // d) if d else 0


def value_words(info: TensorInfo, lanes: int) -> int:
    """Words a value occupies in its buffer."""
    return rows_of(info) * row_words(last_dim(info), lanes)


def word_index(info: TensorInfo, flat: int, lanes: int) -> tuple[int, int]:
    """(word, lane) of element ``flat`` (row-major over the value's IR shape)."""
    d = last_dim(info)
    r, k = divmod(int(flat), d)
    return r * row_words(d, lanes) + k // lanes, k % lanes


def same_layout(a: TensorInfo, b: TensorInfo, lanes: int) -> bool:
    """Whether two shapes of the same elements put every element at the same (word, lane): a reshape between
    them is free (the buffer is shared). True when the row length is the same, or both are whole words."""
    da, db = last_dim(a), last_dim(b)
    return a.size == b.size and (da == db or (da % lanes == 0 and db % lanes == 0))


def lane_choices_up_to(n: int) -> list[int]:
    """Lane counts worth trying for rows of at most ``n`` elements: up to the first power of two >= n."""
    top = 1 << max(0, math.ceil(math.log2(max(1, n))))
    return [v for v in LANE_CHOICES if v <= top]


def lane_knob(knobs: dict[str, int]) -> int | None:
    """The lane count a unit's knobs give: ``simd`` (GEMM units) or ``lanes`` (the others)."""
    v = knobs.get("simd", knobs.get("lanes"))
    return None if v is None else int(v)


def design_lanes(knobs: dict[str, dict[str, int]]) -> int:
    """The design's lanes per word: the one lane count all its units share (1 when no unit has one)."""
    from vaqf.errors import VaqfError

    values = {v for v in (lane_knob(k) for k in knobs.values()) if v is not None}
    if len(values) > 1:
        detail = ", ".join(f"{u} {lane_knob(k)}" for u, k in sorted(knobs.items()) if lane_knob(k) is not None)
        raise VaqfError(f"the design's units disagree on the lanes of an activation word ({detail}); every unit "
                        "reads and writes the same words: give them one lane count (simd / lanes), or search again")
    return values.pop() if values else 1
