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


#: the container of a bipolar activation: values -1 and +1 (and 0, what a convolution's padding reads)
BIPOLAR_CONTAINER = IntType(2, True, narrow=True)


def bipolar_params(out_scale: float, channels: int) -> dict:
    """The requantization to a bipolar output (+1 where the input is at least its zero point, else -1) with the
    same epilogue as any other: saturate(2 * x + 1) into [-1, 1] is exactly that sign on integers."""
    return {"mantissa": np.full(channels, 2, dtype=np.int64), "shift": np.zeros(channels, dtype=np.int64),
            "zero_point": 1, "qtype": BIPOLAR_CONTAINER, "scale": np.asarray([out_scale], dtype=np.float64),
            "rounding": "HALF_EVEN", "bipolar": True}


def requant_out_info(shape: tuple[int, ...], rq: dict) -> TensorInfo:
    """The output of a requantization: its type and scale; its zero point (0 for a bipolar output, whose
    zero_point attribute is the +1 of saturate(2 * x + 1))."""
    return TensorInfo(shape, rq["qtype"], rq["scale"], 0 if rq.get("bipolar") else rq["zero_point"])


def check_product_fits(acc_bits: int, mantissa: np.ndarray, where: str) -> None:
    m_bits = int(np.max(mantissa)).bit_length() if np.size(mantissa) else 0
    if acc_bits + m_bits + 1 > 64:
        raise VaqfError(f"{where}: a {acc_bits}-bit accumulator times a {m_bits}-bit multiplier overflows "
                        "64 bits; use fewer activation or weight bits")


def max_abs(qt_min: int, qt_max: int, zero_point: int) -> int:
    return max(abs(qt_min - zero_point), abs(qt_max - zero_point))


def absorb_gemm_epilogue(node, epilogue) -> bool:
    """Relu and requantization epilogues of the GEMM-like ops (dense, matmul)."""
    rq = node.attrs.get("requant")
    if epilogue.kind == "relu" and not node.attrs.get("relu") and not (
            rq is not None and (rq.get("bipolar") or rq.get("offset") is not None)):
        # relu after requantization equals relu before it: requant(0) is the zero point and requant
        # is monotone, so max(requant(a), zp) == requant(max(a, 0)).
        node.attrs["relu"] = True
        return True
    if epilogue.kind == "requant" and node.attrs.get("requant") is None:
        if epilogue.params.get("offset") is not None and node.op != "dense":
            return False  # a sub-step offset is the dense epilogue's alone (folded BatchNormalization)
        check_product_fits(int(node.attrs["acc_bits"]), epilogue.params["mantissa"], node.name)
        node.attrs["requant"] = dict(epilogue.params)
        return True
    return False
