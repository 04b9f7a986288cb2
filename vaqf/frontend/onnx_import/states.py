"""What an ONNX tensor means to the importer while it walks the graph, and the import options."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx

from vaqf.ir import QType, Value


# ---- tensor states ----------------------------------------------------------------------------
@dataclass
class Const:
    array: np.ndarray


@dataclass
class QConst:
    ints: np.ndarray      # integer meaning (zero point already subtracted)
    scale: np.ndarray     # broadcastable to ints
    qtype: QType

    def real(self) -> np.ndarray:
        return self.ints.astype(np.float64) * self.scale


@dataclass
class Raw:
    inner: Any            # Act or QConst after quantization
    scale: np.ndarray
    zero_point: np.ndarray


@dataclass
class FloatInput:
    name: str
    shape: tuple[int, ...]
    reshapes: list[tuple[int, ...]] = field(default_factory=list)
    ops: list = field(default_factory=list)  # float ops the host applies first (vaqf.ir.host.transform_op)


@dataclass
class Act:
    value: Value
    quantized: bool       # produced by a quantizer (activation precision), not a wide accumulator
    dense: Any = None               # the dense node whose raw accumulator this is: an Add folds into its bias, a
                                    # BatchNormalization into its constants
    relu_applied: bool = False      # a following Relu was already fused into the producer
    channel_scale: np.ndarray | None = None  # per-channel activation scales (axis 1): the real scale of channel c
                                    # is the value's scale times channel_scale[c] (<= 1); only depthwise
                                    # convolutions, max pooling and Relu read such a tensor


@dataclass
class ImportOptions:
    weights: str = "keep"         # keep | binary | int8 | int4
    act_bits: int | None = None   # bits for post-training activation quantization (default 8)
    calib: np.ndarray | None = None
    first_last_int8: bool = True  # with --weights binary: the input and output layers stay int8


def _renamed(node: onnx.NodeProto, output: str) -> onnx.NodeProto:
    """A copy of ``node`` whose first output is ``output`` (names the requant it causes)."""
    n = onnx.NodeProto()
    n.CopyFrom(node)
    del n.output[:]
    n.output.append(output)
    n.name = output
    return n


def _per_axis(arr: np.ndarray, ndim: int, axis: int) -> np.ndarray:
    """Broadcast a per-axis scale/zero point (1-D) against a tensor of rank ``ndim`` along ``axis``."""
    a = np.asarray(arr)
    if a.ndim == 0 or a.size == 1:
        return a.reshape(())
    axis = axis + ndim if axis < 0 else axis
    shape = [1] * ndim
    shape[axis] = a.size
    return a.reshape(shape)

