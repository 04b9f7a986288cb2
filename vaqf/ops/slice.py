"""slice: rows of a tensor along axes with start/stop/step (class-token readout, qkv split)."""

from __future__ import annotations

import numpy as np

from vaqf.errors import VaqfError
from vaqf.ir import Node, TensorInfo
from vaqf.ops.attrs import Attr, int_list
from vaqf.ops.base import OpSpec, register


def slice_ranges(node: Node, shape: tuple[int, ...]) -> list[range]:
    """Per axis, the indices kept (attrs: starts/ends/steps already normalized to the shape)."""
    rs = [range(d) for d in shape]
    for a, s, e, st in zip(node.attrs["axes"], node.attrs["starts"], node.attrs["ends"], node.attrs["steps"],
                           strict=True):
        rs[int(a)] = range(int(s), int(e), int(st))
    return rs


def reference(x: np.ndarray, axes: list[int], starts: list[int], ends: list[int], steps: list[int]) -> np.ndarray:
    """x[start:end:step] along each IR axis of ``axes`` (array axis + 1: the samples come first), others whole;
    starts/ends/steps are normalized (non-negative, inside the shape, steps positive)."""
    idx = [slice(None)] * x.ndim
    for a, s, e, st in zip(axes, starts, ends, steps, strict=True):
        idx[int(a) + 1] = slice(int(s), int(e), int(st))
    return np.ascontiguousarray(x[tuple(idx)])


@register
class Slice(OpSpec):
    name = "slice"
    unit_kind = "mover"  # vaqf/units/mover.py
    moves_elements = True
    attributes = (
        Attr("axes", int_list(lo=0), "the IR axes sliced"),
        Attr("starts", int_list(lo=0), "per sliced axis, the first index"),
        Attr("ends", int_list(), "per sliced axis, the end (exclusive)"),
        Attr("steps", int_list(lo=1), "per sliced axis, the step"),
    )

    def infer(self, node: Node, inputs: list[TensorInfo]) -> list[TensorInfo]:
        (x,) = inputs
        rs = slice_ranges(node, x.shape)
        if any(len(r) == 0 for r in rs):
            raise VaqfError(f"{node.name}: slice is empty")
        last = len(x.shape) - 1
        if x.per_channel and last in [int(a) for a in node.attrs["axes"]]:
            raise VaqfError(f"{node.name}: slicing the channel axis of a per-channel tensor")
        return [TensorInfo(tuple(len(r) for r in rs), x.qtype, x.scale, x.zero_point)]

    def reference(self, node: Node, inputs: list[np.ndarray]) -> list[np.ndarray]:
        a = node.attrs
        return [reference(inputs[0], a["axes"], a["starts"], a["ends"], a["steps"])]
