"""Post-training quantization: weight quantizers and activation scales from calibration ranges."""

from __future__ import annotations

import numpy as np

from vaqf.errors import VaqfError
from vaqf.ir import BinaryType, IntType, QType
from vaqf.ir.qarith import Rounding, round_real

WEIGHT_MODES = ("keep", "binary", "int8", "int4")


def f32(x: np.ndarray | float) -> np.ndarray:
    """Round scales to float32 so every scale is an exact 24-bit dyadic number."""
    return np.asarray(x, dtype=np.float32).astype(np.float64)


def quantize_weight(w: np.ndarray, mode: str) -> tuple[np.ndarray, np.ndarray, QType]:
    """Quantize a float [N, K] weight per output channel. Returns (integers, scale[N], type).

    binary: sign (0 -> +1) times mean |w| of the row (the scale that minimizes the L2 error of a sign
    code). intB: symmetric narrow range, scale = max |w| / (2**(B-1) - 1), round half to even.
    """
    w = np.asarray(w, dtype=np.float64)
    if mode == "binary":
        scale = f32(np.abs(w).mean(axis=1))
        scale[scale == 0] = 1.0
        return np.where(w >= 0, 1, -1).astype(np.int8), scale, BinaryType()
    if mode in ("int8", "int4"):
        bits = int(mode[3:])
        top = 2 ** (bits - 1) - 1
        scale = f32(np.abs(w).max(axis=1) / top)
        scale[scale == 0] = 1.0
        q = np.clip(round_real(w / scale[:, None], Rounding.HALF_EVEN), -top, top)
        return q.astype(np.int8), scale, IntType(bits, True, narrow=True)
    raise VaqfError(f"unknown weight quantization {mode!r}; choose one of {', '.join(WEIGHT_MODES)}")


def activation_quant(lo: float, hi: float, bits: int) -> tuple[IntType, float]:
    """Type and scale for an activation whose calibration range is [lo, hi] (zero point 0).

    Non-negative tensors (after ReLU) use the unsigned range; others a symmetric signed range.
    """
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise VaqfError("calibration produced non-finite activations")
    if lo >= 0:
        qt = IntType(bits, signed=False)
        scale = hi / qt.max
    else:
        qt = IntType(bits, signed=True, narrow=True)
        scale = max(abs(lo), abs(hi)) / qt.max
    if scale <= 0:
        scale = 1.0 / qt.max
    return qt, float(f32(scale))
