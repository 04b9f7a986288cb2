"""strided_copy: out[o] = in[base + sum(o_k * stride_k)] over the output box (a composed data movement).

``passes.simplify.ComposeCopies`` replaces chains such as reshape -> transpose -> slice (the split of a
fused qkv projection into heads) by one strided copy straight from the source, so the intermediate
permuted tensor is never written.
"""

from __future__ import annotations

import numpy as np

from vaqf.errors import VaqfError
from vaqf.ir import Node, TensorInfo
from vaqf.ops.attrs import Attr, int_list, integer
from vaqf.ops.base import OpSpec, register


def source_index(shape: tuple[int, ...], strides: list[int], base: int) -> np.ndarray:
    idx = np.full(shape, base, dtype=np.int64)
    for axis, (n, st) in enumerate(zip(shape, strides, strict=True)):
        view = [1] * len(shape)
        view[axis] = n
        idx = idx + (np.arange(n, dtype=np.int64) * st).reshape(view)
    return idx


def reference(x: np.ndarray, shape: list[int], strides: list[int], base: int) -> np.ndarray:
    """``out[b, o...] = x[b].flat[base + sum(o_k * strides_k)]`` over the output box ``shape``."""
    shape_t = tuple(int(d) for d in shape)
    idx = source_index(shape_t, strides, int(base))
    return x.reshape(x.shape[0], -1)[:, idx.reshape(-1)].reshape((x.shape[0],) + shape_t)


@register
class StridedCopy(OpSpec):
    name = "strided_copy"
    unit_kind = "mover"  # vaqf/units/mover.py
    moves_elements = True
    attributes = (
        Attr("shape", int_list(lo=1), "the output box"),
        Attr("strides", int_list(), "per output axis, the step over the input's flat elements"),
        Attr("base", integer(lo=0), "the flat input index of output element [0, ..., 0]"),
    )

    def infer(self, node: Node, inputs: list[TensorInfo]) -> list[TensorInfo]:
        (x,) = inputs
        shape = tuple(int(d) for d in node.attrs["shape"])
        idx = source_index(shape, node.attrs["strides"], int(node.attrs["base"]))
        if idx.size and (idx.min() < 0 or idx.max() >= x.size):
            raise VaqfError(f"{node.name}: strided copy reads outside its input")
        if x.per_channel:
            raise VaqfError(f"{node.name}: a strided copy needs a per-tensor scale")
        return [TensorInfo(shape, x.qtype, x.scale, x.zero_point)]

    def reference(self, node: Node, inputs: list[np.ndarray]) -> list[np.ndarray]:
        a = node.attrs
        return [reference(inputs[0], a["shape"], a["strides"], a["base"])]
