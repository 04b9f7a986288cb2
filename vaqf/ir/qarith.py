"""Integer rounding, saturation and requantization: the arithmetic every op reference is built on.

Everything here is exact integer arithmetic on int64 numpy arrays (no float rounding anywhere except
``round_real``, which quantizes host-side float inputs). ``hls/vaqf/qarith.h`` implements the same
functions in C++; the two are compared bit for bit by the C-simulation tests.

Rounding modes follow the QONNX ``rounding_mode`` table (ROUND = HALF_EVEN, CEIL, FLOOR, UP = away from
zero, DOWN = toward zero, HALF_UP = ties away from zero, HALF_DOWN = ties toward zero), plus HALF_CEIL
(ties toward +inf, the ``AP_RND`` mode of ap_fixed).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum

import numpy as np

__all__ = ["Dyadic", "Overflow", "Rounding", "requantize", "round_div", "round_real", "rshift_round",
           "saturate"]


class Rounding(str, Enum):
    HALF_EVEN = "HALF_EVEN"
    HALF_UP = "HALF_UP"
    HALF_DOWN = "HALF_DOWN"
    HALF_CEIL = "HALF_CEIL"
    CEIL = "CEIL"
    FLOOR = "FLOOR"
    UP = "UP"
    DOWN = "DOWN"

    @property
    def cpp_id(self) -> int:
        """The integer the C++ kernels use for this mode (``vaqf::Rounding`` in qarith.h)."""
        return list(Rounding).index(self)

    @classmethod
    def parse(cls, name: str) -> Rounding:
        """Accept QONNX spellings (``ROUND`` means half-to-even) in any case."""
        key = name.strip().upper()
        if key == "ROUND":
            key = "HALF_EVEN"
        try:
            return cls(key)
        except ValueError:
            options = ", ".join(m.value for m in cls)
            raise ValueError(f"unknown rounding mode {name!r}; expected ROUND or one of {options}") from None


class Overflow(str, Enum):
    SAT = "SAT"          # clamp to [min, max]
    SAT_SYM = "SAT_SYM"  # clamp to [-max, max] (symmetric, as a narrow signed range)
    WRAP = "WRAP"        # two's-complement wrap-around

    @property
    def cpp_id(self) -> int:
        return list(Overflow).index(self)


def _apply_rounding(q: np.ndarray, above_half: np.ndarray, tie: np.ndarray, nonzero_rem: np.ndarray,
                    negative: np.ndarray, mode: Rounding) -> np.ndarray:
    """Given floor quotient ``q`` and facts about the remainder, add the rounding increment."""
    if mode is Rounding.FLOOR:
        inc = np.zeros_like(q)
    elif mode is Rounding.CEIL:
        inc = nonzero_rem
    elif mode is Rounding.DOWN:
        inc = nonzero_rem & negative
    elif mode is Rounding.UP:
        inc = nonzero_rem & ~negative
    else:
        if mode is Rounding.HALF_EVEN:
            tie_inc = (q & 1) == 1
        elif mode is Rounding.HALF_UP:
            tie_inc = ~negative
        elif mode is Rounding.HALF_DOWN:
            tie_inc = negative
        elif mode is Rounding.HALF_CEIL:
            tie_inc = np.ones_like(q, dtype=bool)
        else:  # pragma: no cover - enum is closed
            raise AssertionError(mode)
        inc = above_half | (tie & tie_inc)
    return q + inc.astype(np.int64)


def round_div(num: np.ndarray | int, den: np.ndarray | int, mode: Rounding = Rounding.HALF_EVEN) -> np.ndarray:
    """``num / den`` rounded to an integer with ``mode``; ``den`` > 0; exact for all int64 inputs."""
    n = np.asarray(num, dtype=np.int64)
    d = np.asarray(den, dtype=np.int64)
    if np.any(d <= 0):
        raise ValueError("round_div needs a positive denominator")
    q = np.floor_divide(n, d)
    r = n - q * d  # 0 <= r < d
    rest = d - r
    return _apply_rounding(q, r > rest, r == rest, r != 0, n < 0, mode)


def rshift_round(x: np.ndarray, shift: np.ndarray | int, mode: Rounding = Rounding.HALF_EVEN) -> np.ndarray:
    """``x / 2**shift`` rounded with ``mode``; shift in [0, 62], per element or broadcast. Returns a new array."""
    s = np.asarray(shift, dtype=np.int64)
    if np.any(s < 0) or np.any(s > 62):
        raise ValueError("shift must be within [0, 62]")
    n = np.asarray(x, dtype=np.int64)
    if mode is Rounding.HALF_EVEN and s.size and int(s.min()) >= 1:
        # the mode of every requantization, on large arrays: one new array instead of seven (fresh arrays
        # cost page faults, the main cost here). With n = q*2**s + r (0 <= r < 2**s), h = 2**(s-1) and
        # b = q & 1: floor((n + h - 1 + b) / 2**s) = q + 1 exactly when r + b > h, i.e. r > h, or r == h and
        # q is odd: half to even. Used when n + h cannot overflow; round_div's path below otherwise.
        half = np.left_shift(np.int64(1), s - 1)
        if int(n.max(initial=0)) <= np.iinfo(np.int64).max - int(half.max()):
            out = np.right_shift(n, s)
            out &= 1
            out += n
            out += half - 1
            out >>= s
            return out
    # round_div by 2**s, with the floor quotient and remainder from an arithmetic shift and a mask: the same
    # q and r as floor_divide (exact for every int64), several times faster (floor_divide does not vectorize)
    d = np.left_shift(np.int64(1), s)
    q = np.right_shift(n, s)
    r = np.bitwise_and(n, d - 1)  # 0 <= r < d
    rest = d - r
    return _apply_rounding(q, r > rest, r == rest, r != 0, n < 0, mode)


def round_real(x: np.ndarray, mode: Rounding = Rounding.HALF_EVEN) -> np.ndarray:
    """Round float values to integers (host-side quantization of float inputs)."""
    a = np.asarray(x, dtype=np.float64)
    if mode is Rounding.HALF_EVEN:  # IEEE round-to-nearest-even, exact: the same integers, several times faster
        return np.rint(a).astype(np.int64)
    q = np.floor(a).astype(np.int64)
    # a - floor(a) is not exact for -0.5 < a < 0 (1 + a rounds: -0.49999999999999994 gave exactly 0.5, a
    # false tie); a - trunc(a) always is (Sterbenz), so decide on the magnitude m of the fractional part:
    # the distance above the floor is m for a >= 0 and 1 - m for a < 0.
    m = np.abs(a - np.trunc(a))
    neg = a < 0
    nonzero = m != 0
    above_half = np.where(neg, nonzero & (m < 0.5), m > 0.5)
    return _apply_rounding(q, above_half, m == 0.5, nonzero, neg, mode)


def saturate(x: np.ndarray, lo: int, hi: int, mode: Overflow = Overflow.SAT) -> np.ndarray:
    """Bring integers into [lo, hi]. WRAP assumes [lo, hi] is a full two's-complement or unsigned range."""
    a = np.asarray(x, dtype=np.int64)
    if mode is Overflow.SAT:
        return np.clip(a, lo, hi)
    if mode is Overflow.SAT_SYM:
        m = min(hi, -lo) if lo < 0 else hi
        return np.clip(a, -m if lo < 0 else lo, m)
    span = hi - lo + 1
    return (a - lo) % span + lo


@dataclass(frozen=True)
class Dyadic:
    """An exact dyadic rational ``mantissa * 2**-shift`` (mantissa > 0, 0 <= shift <= 62).

    Requantization multipliers are Dyadic so rescaling is one integer multiply and one rounding shift.
    """

    mantissa: int
    shift: int

    @property
    def value(self) -> float:
        return math.ldexp(self.mantissa, -self.shift)

    @classmethod
    def from_float(cls, value: float, mantissa_bits: int = 24) -> Dyadic:
        """Nearest dyadic with ``mantissa_bits`` significant bits (relative error <= 2**-mantissa_bits)."""
        if not (value > 0 and math.isfinite(value)):
            raise ValueError(f"a requantization multiplier must be positive and finite, got {value}")
        frac, exp = math.frexp(value)  # value = frac * 2**exp, frac in [0.5, 1)
        m = int(round_real(np.float64(math.ldexp(frac, mantissa_bits))))
        shift = mantissa_bits - exp
        if m == 1 << mantissa_bits:
            m >>= 1
            shift -= 1
        if shift < 0:
            m <<= -shift
            shift = 0
        if shift > 62:
            m = int(rshift_round(np.int64(m), shift - 62))
            shift = 62
            if m == 0:
                raise ValueError(f"requantization multiplier {value!r} is too small to represent")
        return cls(m, shift)


def requantize(acc: np.ndarray, mantissa: np.ndarray | int, shift: np.ndarray | int, zero_point: int,
               lo: int, hi: int, rounding: Rounding = Rounding.HALF_EVEN,
               overflow: Overflow = Overflow.SAT, offset: np.ndarray | int | None = None) -> np.ndarray:
    """``saturate(round((acc * mantissa + offset) / 2**shift) + zero_point)``; per-channel arrays broadcast on
    the last axis. ``offset`` (default 0) is a bias finer than one accumulator step, in product units.

    The product must fit in int64: callers check ``acc_bits + mantissa_bits <= 63``.
    """
    prod = np.asarray(acc, dtype=np.int64) * np.asarray(mantissa, dtype=np.int64)
    if offset is not None:
        prod = prod + np.asarray(offset, dtype=np.int64)
    q = rshift_round(prod, shift, rounding)
    if isinstance(q, np.ndarray) and np.ndim(zero_point) == 0 and overflow is Overflow.SAT:  # in place: q is new
        q += zero_point
        return np.clip(q, lo, hi, out=q)
    return saturate(q + zero_point, lo, hi, overflow)
