"""Value types of the integer IR.

A QType describes the integers a tensor holds; its real meaning is given by TensorInfo's scale and
zero point. Types are frozen and hashable; the C++ spelling lives in ``vaqf.backend.names``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class IntType:
    """A ``bits``-wide two's-complement (signed) or plain binary (unsigned) integer.

    ``narrow`` drops the most negative value of a signed type (symmetric range), as QONNX does.
    """

    bits: int
    signed: bool = True
    narrow: bool = False

    def __post_init__(self) -> None:
        if not 1 <= self.bits <= 64:
            raise ValueError(f"IntType bits must be in 1..64, got {self.bits}")

    @property
    def min(self) -> int:
        if not self.signed:
            return 0
        return -(2 ** (self.bits - 1)) + (1 if self.narrow else 0)

    @property
    def max(self) -> int:
        if not self.signed:
            return 2**self.bits - 1 - (1 if self.narrow else 0)
        return 2 ** (self.bits - 1) - 1

    def allowed(self, x: Any) -> bool:
        a = np.asarray(x)
        if a.size == 0:
            return True
        if not np.all(np.equal(np.floor(a), a)):
            return False
        return bool(a.min() >= self.min and a.max() <= self.max)

    def to_json(self) -> dict:
        return {"kind": "int", "bits": self.bits, "signed": self.signed, "narrow": self.narrow}

    def __str__(self) -> str:
        return f"{'' if self.signed else 'u'}int{self.bits}{'n' if self.narrow else ''}"


@dataclass(frozen=True)
class BinaryType:
    """Bipolar values {-1, +1}, stored as one bit (1 means +1)."""

    bits: int = 1
    signed: bool = True

    @property
    def min(self) -> int:
        return -1

    @property
    def max(self) -> int:
        return 1

    def allowed(self, x: Any) -> bool:
        a = np.asarray(x)
        return bool(np.all((a == 1) | (a == -1)))

    def to_json(self) -> dict:
        return {"kind": "binary"}

    def __str__(self) -> str:
        return "bipolar"


@dataclass(frozen=True)
class FixedType:
    """A fixed-point number: ``bits`` total, ``int_bits`` before the binary point (ap_fixed<W, I>).

    The integer stored is ``value * 2**(bits - int_bits)``; ``rounding`` and ``overflow`` name the
    modes of ``vaqf.ir.qarith`` used when a wider value is narrowed to this type.
    """

    bits: int
    int_bits: int
    signed: bool = True
    rounding: str = "HALF_EVEN"
    overflow: str = "SAT"

    @property
    def frac_bits(self) -> int:
        return self.bits - self.int_bits

    @property
    def min(self) -> float:
        return (-(2 ** (self.bits - 1)) if self.signed else 0) * 2.0**-self.frac_bits

    @property
    def max(self) -> float:
        top = 2 ** (self.bits - 1) - 1 if self.signed else 2**self.bits - 1
        return top * 2.0**-self.frac_bits

    def allowed(self, x: Any) -> bool:
        a = np.asarray(x, dtype=np.float64) * 2.0**self.frac_bits
        return bool(np.all(np.floor(a) == a) and a.min() >= self.min * 2.0**self.frac_bits
                    and a.max() <= self.max * 2.0**self.frac_bits) if a.size else True

    def to_json(self) -> dict:
        return {"kind": "fixed", "bits": self.bits, "int_bits": self.int_bits, "signed": self.signed,
                "rounding": self.rounding, "overflow": self.overflow}

    def __str__(self) -> str:
        return f"{'' if self.signed else 'u'}fixed<{self.bits},{self.int_bits}>"


QType = IntType | BinaryType | FixedType


def qtype_from_json(d: dict) -> QType:
    kind = d["kind"]
    if kind == "int":
        return IntType(int(d["bits"]), bool(d["signed"]), bool(d.get("narrow", False)))
    if kind == "binary":
        return BinaryType()
    if kind == "fixed":
        return FixedType(int(d["bits"]), int(d["int_bits"]), bool(d["signed"]), d["rounding"], d["overflow"])
    raise ValueError(f"unknown qtype kind {kind!r}")


def int_type_for_range(lo: int, hi: int) -> IntType:
    """The narrowest IntType holding every integer in [lo, hi]."""
    if lo >= 0:
        bits = max(1, int(hi).bit_length())
        return IntType(bits, signed=False)
    bits = max(max(int(hi), 0).bit_length(), int(-lo - 1).bit_length()) + 1  # a negative hi needs no bits
    return IntType(bits, signed=True)
