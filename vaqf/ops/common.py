"""Helpers shared by op specs: requantization parameters and their checks."""

from __future__ import annotations

import numpy as np

from vaqf.errors import VaqfError
from vaqf.ir import IntType, TensorInfo
from vaqf.ir.qarith import Dyadic

MANTISSA_BITS = 24


def requant_params(in_scale: np.ndarray, out_scale: float, channels: int, out_qtype: IntType, out_zp: int,
                   rounding: str, where: str) -> dict:
    """Per-channel dyadic multipliers for rescaling from ``in_scale`` to ``out_scale``."""
    ratio = np.broadcast_to(np.asarray(in_scale, dtype=np.float64) / float(out_scale), (channels,))
    mant = np.empty(channels, dtype=np.int64)
    shift = np.empty(channels, dtype=np.int64)
    for c, r in enumerate(ratio):
        try:
            d = Dyadic.from_float(float(r), MANTISSA_BITS)
        except ValueError as e:
            raise VaqfError(f"{where}: cannot rescale ({e})") from e
        if d.mantissa >= 2**31:
            raise VaqfError(f"{where}: rescale factor {r:.4g} is too large for a 32-bit multiplier")
        mant[c], shift[c] = d.mantissa, d.shift
    if not out_qtype.min <= out_zp <= out_qtype.max:
        raise VaqfError(f"{where}: zero point {out_zp} outside {out_qtype}")
    return {"mantissa": mant, "shift": shift, "zero_point": int(out_zp), "qtype": out_qtype,
            "scale": np.asarray([out_scale], dtype=np.float64), "rounding": rounding}


def requant_out_info(shape: tuple[int, ...], rq: dict) -> TensorInfo:
    return TensorInfo(shape, rq["qtype"], rq["scale"], rq["zero_point"])


def check_product_fits(acc_bits: int, mantissa: np.ndarray, where: str) -> None:
    m_bits = int(np.max(mantissa)).bit_length() if np.size(mantissa) else 0
    if acc_bits + m_bits + 1 > 64:
        raise VaqfError(f"{where}: a {acc_bits}-bit accumulator times a {m_bits}-bit multiplier overflows "
                        "64 bits; use fewer activation or weight bits")


def max_abs(qt_min: int, qt_max: int, zero_point: int) -> int:
    return max(abs(qt_min - zero_point), abs(qt_max - zero_point))


def absorb_gemm_epilogue(node, epilogue) -> bool:
    """Relu and requantization epilogues of the GEMM-like ops (dense, matmul)."""
    if epilogue.kind == "relu" and not node.attrs.get("relu"):
        # relu after requantization equals relu before it: requant(0) is the zero point and requant
        # is monotone, so max(requant(a), zp) == requant(max(a, 0)).
        node.attrs["relu"] = True
        return True
    if epilogue.kind == "requant" and node.attrs.get("requant") is None:
        check_product_fits(int(node.attrs["acc_bits"]), epilogue.params["mantissa"], node.name)
        node.attrs["requant"] = dict(epilogue.params)
        return True
    return False
