"""transpose: permute axes (head split/merge in attention, patch extraction). Data moves on chip."""

from __future__ import annotations

from typing import Any

import numpy as np

from vaqf.errors import VaqfError
from vaqf.ir import Node, TensorInfo
from vaqf.ops.attrs import Attr, int_list
from vaqf.ops.base import OpSpec, register


def reference(x: np.ndarray, perm: list[int]) -> np.ndarray:
    """Output IR axis i is input IR axis perm[i] (the samples' axis stays first)."""
    return np.ascontiguousarray(np.transpose(x, [0] + [int(p) + 1 for p in perm]))


@register
class Transpose(OpSpec):
    name = "transpose"
    unit_kind = "mover"  # vaqf/units/mover.py
    moves_elements = True
    permutes_elements = True
    attributes = (Attr("perm", int_list(lo=0), "output axis i is input axis perm[i]"),)

    def infer(self, node: Node, inputs: list[TensorInfo]) -> list[TensorInfo]:
        (x,) = inputs
        perm = [int(p) for p in node.attrs["perm"]]
        if sorted(perm) != list(range(len(x.shape))):
            raise VaqfError(f"{node.name}: {perm} is not a permutation of {len(x.shape)} axes")
        if x.per_channel and perm[-1] != len(perm) - 1:
            raise VaqfError(f"{node.name}: a per-channel tensor must keep its last axis")
        return [TensorInfo(tuple(x.shape[p] for p in perm), x.qtype, x.scale, x.zero_point)]

    def reference(self, node: Node, inputs: list[np.ndarray]) -> list[np.ndarray]:
        return [reference(inputs[0], node.attrs["perm"])]

    def merge_with_consumer(self, node: Node, consumer: Node) -> dict[str, Any] | None:
        if consumer.op != node.op:
            return None
        p1 = [int(p) for p in node.attrs["perm"]]
        p2 = [int(p) for p in consumer.attrs["perm"]]
        return {"perm": [p1[p] for p in p2]}

    def is_identity(self, node: Node) -> bool:
        return [int(p) for p in node.attrs["perm"]] == list(range(len(node.attrs["perm"])))
