"""What the host does to a float input before the accelerator sees it: the elementwise float ops a model
applies to its input ahead of the first quantizer (``2x - 1`` of the BNN-PYNQ networks, a per-channel
normalization), and the quantizer itself (rounding to the input's type, or the sign of a bipolar input).

The transform is graph metadata (``input_transform``: input name -> ``{"ops": [[kind, values, shape], ...],
"bipolar": bool}``), applied in the model's own float32 arithmetic, op by op in the file's order, so the
integers equal what the model's quantizer computes from the same float input."""

from __future__ import annotations

from typing import Any

import numpy as np

#: the elementwise float ops a transform may hold, as numpy functions on float32
HOST_OPS = {"mul": np.multiply, "div": np.divide, "add": np.add, "sub": np.subtract,
            "rsub": lambda a, c: np.subtract(c, a), "rdiv": lambda a, c: np.divide(c, a)}


def transform_op(kind: str, const: np.ndarray) -> list:
    """One step of a transform as JSON-ready data: the op, the constant's values and its shape."""
    if kind not in HOST_OPS:
        raise ValueError(f"unknown host op {kind!r}")
    c = np.asarray(const, dtype=np.float32)
    return [kind, [float(v) for v in c.reshape(-1)], list(c.shape)]


def apply_ops(x: np.ndarray, ops: list[Any]) -> np.ndarray:
    """The float ops in order on ``x`` (float32 throughout, as the model computes them; ``rsub`` is c - x,
    ``rdiv`` c / x)."""
    a = np.asarray(x, dtype=np.float32)
    for kind, values, shape in ops:
        a = HOST_OPS[kind](a, np.asarray(values, dtype=np.float32).reshape(shape))
    return a.astype(np.float32, copy=False)


def bipolar(a: np.ndarray) -> np.ndarray:
    """The bipolar quantizer: +1 where the value is at least 0, else -1 (int64)."""
    return np.where(np.asarray(a) >= 0, 1, -1).astype(np.int64)
