"""vaqf.ir.qarith against exact rational arithmetic (fractions.Fraction), for every mode."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from vaqf.ir.qarith import Dyadic, Overflow, Rounding, requantize, round_div, round_real, rshift_round, saturate

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
ALL_ROUNDINGS = list(Rounding)


def ref_round(x: Fraction, mode: Rounding) -> int:
    """Round an exact rational with the mode's textbook definition (independent of the code under test)."""
    fl = math.floor(x)
    ce = math.ceil(x)
    if fl == ce:
        return fl
    sign = 1 if x > 0 else -1
    mag = abs(x)
    half = Fraction(1, 2)
    if mode is Rounding.FLOOR:
        return fl
    if mode is Rounding.CEIL:
        return ce
    if mode is Rounding.DOWN:  # toward zero
        return sign * math.floor(mag)
    if mode is Rounding.UP:  # away from zero
        return sign * math.ceil(mag)
    rem = x - fl
    if rem != half:
        return fl if rem < half else ce
    return {  # exactly halfway between fl and ce
        Rounding.HALF_EVEN: fl if fl % 2 == 0 else ce,
        Rounding.HALF_UP: sign * math.ceil(mag),      # ties away from zero
        Rounding.HALF_DOWN: sign * math.floor(mag),   # ties toward zero
        Rounding.HALF_CEIL: ce,                       # ties toward +inf
    }[mode]


def test_ref_round_matches_the_mode_table() -> None:
    """The reference itself, on the classic table of ties (2.5, -2.5, 1.5, -1.5) and non-ties."""
    table = {
        Rounding.HALF_EVEN: (2, -2, 2, -2, 3, -3),
        Rounding.HALF_UP: (3, -3, 2, -2, 3, -3),
        Rounding.HALF_DOWN: (2, -2, 1, -1, 3, -3),
        Rounding.HALF_CEIL: (3, -2, 2, -1, 3, -3),
        Rounding.CEIL: (3, -2, 2, -1, 3, -2),
        Rounding.FLOOR: (2, -3, 1, -2, 2, -3),
        Rounding.UP: (3, -3, 2, -2, 3, -3),
        Rounding.DOWN: (2, -2, 1, -1, 2, -2),
    }
    xs = (Fraction(5, 2), Fraction(-5, 2), Fraction(3, 2), Fraction(-3, 2), Fraction(27, 10), Fraction(-27, 10))
    for mode, want in table.items():
        assert tuple(ref_round(x, mode) for x in xs) == want, mode
    assert set(table) == set(Rounding)


# ---- round_div ------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ALL_ROUNDINGS, ids=lambda m: m.value)
def test_round_div_exhaustive_small(mode: Rounding) -> None:
    """Every numerator in [-64, 64] over every denominator in 1..9: all ties and signs, vectorized."""
    num, den = np.meshgrid(np.arange(-64, 65), np.arange(1, 10), indexing="ij")
    got = round_div(num, den, mode)
    want = np.array([[ref_round(Fraction(int(n), int(d)), mode) for n, d in zip(rn, rd, strict=True)]
                     for rn, rd in zip(num, den, strict=True)])
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("mode", ALL_ROUNDINGS, ids=lambda m: m.value)
@given(num=st.integers(INT64_MIN, INT64_MAX), den=st.integers(1, INT64_MAX))
@example(num=INT64_MAX, den=2)
@example(num=INT64_MIN, den=2)
@example(num=INT64_MIN + 1, den=INT64_MAX)
@example(num=-(2**62) - 1, den=2**62)
def test_round_div_matches_fraction(mode: Rounding, num: int, den: int) -> None:
    assert int(round_div(num, den, mode)) == ref_round(Fraction(num, den), mode)


@pytest.mark.parametrize("mode", ALL_ROUNDINGS, ids=lambda m: m.value)
@given(pairs=st.lists(st.tuples(st.integers(-(2**40), 2**40), st.integers(1, 2**20)), min_size=1, max_size=40))
def test_round_div_elementwise_arrays(mode: Rounding, pairs: list[tuple[int, int]]) -> None:
    num = np.array([p[0] for p in pairs], dtype=np.int64)
    den = np.array([p[1] for p in pairs], dtype=np.int64)
    want = [ref_round(Fraction(n, d), mode) for n, d in pairs]
    np.testing.assert_array_equal(round_div(num, den, mode), want)


@pytest.mark.parametrize("den", [0, -1, -7])
def test_round_div_rejects_non_positive_denominator(den: int) -> None:
    with pytest.raises(ValueError, match="positive"):
        round_div(5, den)
    with pytest.raises(ValueError, match="positive"):
        round_div(np.array([1, 2]), np.array([3, den]))


def test_round_div_default_is_half_even() -> None:
    np.testing.assert_array_equal(round_div(np.array([1, 3, 5, -1, -3, -5]), 2), [0, 2, 2, 0, -2, -2])


# ---- rshift_round ---------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ALL_ROUNDINGS, ids=lambda m: m.value)
@given(x=st.integers(INT64_MIN, INT64_MAX), shift=st.integers(0, 62))
@example(x=3 << 61, shift=62)
@example(x=-(3 << 61), shift=62)
@example(x=-1, shift=62)
@example(x=INT64_MIN, shift=1)
def test_rshift_round_matches_fraction(mode: Rounding, x: int, shift: int) -> None:
    assert int(rshift_round(np.int64(x), shift, mode)) == ref_round(Fraction(x, 2**shift), mode)


@pytest.mark.parametrize("mode", ALL_ROUNDINGS, ids=lambda m: m.value)
def test_rshift_round_ties_every_shift(mode: Rounding) -> None:
    """Exact ties k + 1/2 (odd k and even k, both signs) at every shift, per-element shift array."""
    for k in (0, 1, 2, 5, -1, -2, -3):
        # (k + 1/2) * 2**shift for every shift at which it fits in int64
        shifts = np.array([s for s in range(1, 63) if abs(2 * k + 1) << (s - 1) <= INT64_MAX], dtype=np.int64)
        x = (2 * k + 1) * (np.int64(1) << (shifts - 1))
        want = [ref_round(Fraction(2 * k + 1, 2), mode)] * shifts.size
        np.testing.assert_array_equal(rshift_round(x, shifts, mode), want)
        np.testing.assert_array_equal(rshift_round(x - 1, shifts, mode),
                                      [ref_round(Fraction(int(v), 2 ** int(s)), mode)
                                       for v, s in zip(x - 1, shifts, strict=True)])


@pytest.mark.parametrize("shift", [-1, 63, 100])
def test_rshift_round_rejects_shift_out_of_range(shift: int) -> None:
    with pytest.raises(ValueError, match="shift"):
        rshift_round(np.int64(5), shift)
    with pytest.raises(ValueError, match="shift"):
        rshift_round(np.array([5, 6]), np.array([3, shift]))


# ---- round_real -----------------------------------------------------------------------------

finite_doubles = st.floats(min_value=-(2.0**62), max_value=2.0**62, allow_nan=False, allow_infinity=False)


@pytest.mark.parametrize("mode", ALL_ROUNDINGS, ids=lambda m: m.value)
@given(x=finite_doubles)
@example(x=-0.49999999999999994)  # the largest double below 1/2 in magnitude: 1 + x rounds to 0.5
@example(x=0.49999999999999994)
@example(x=-0.5)
@example(x=0.5)
@example(x=-2.5)
@example(x=-1e-300)
@example(x=-(2.0**-60))
@example(x=4503599627370495.5)  # 2**52 - 0.5, the last tie a double can hold
@example(x=-4503599627370495.5)
@example(x=-0.0)
def test_round_real_matches_fraction(mode: Rounding, x: float) -> None:
    assert int(round_real(np.float64(x), mode)) == ref_round(Fraction(x), mode)


@pytest.mark.parametrize("mode", ALL_ROUNDINGS, ids=lambda m: m.value)
@given(halves=st.lists(st.integers(-(2**40), 2**40), min_size=1, max_size=50))
def test_round_real_ties_arrays(mode: Rounding, halves: list[int]) -> None:
    """k/2 for integer k: half of them exact ties, the rest integers (float path, vectorized)."""
    x = np.array(halves, dtype=np.float64) / 2
    np.testing.assert_array_equal(round_real(x, mode), [ref_round(Fraction(h, 2), mode) for h in halves])


def test_round_real_float32_input() -> None:
    x = np.array([0.5, 1.5, -0.5, -1.5, 2.4999998], dtype=np.float32)
    np.testing.assert_array_equal(round_real(x), [0, 2, 0, -2, 2])


# ---- saturate -------------------------------------------------------------------------------


def ref_wrap(x: int, bits: int, signed: bool) -> int:
    """Two's-complement (or unsigned) truncation to ``bits`` bits by masking and sign extension."""
    v = x & ((1 << bits) - 1)
    if signed and v >= 1 << (bits - 1):
        v -= 1 << bits
    return v


int_ranges = st.tuples(st.integers(1, 32), st.booleans()).map(
    lambda t: (t[0], t[1], -(2 ** (t[0] - 1)) if t[1] else 0, 2 ** (t[0] - 1) - 1 if t[1] else 2 ** t[0] - 1))


@given(rng_=int_ranges, xs=st.lists(st.integers(INT64_MIN, INT64_MAX), min_size=1, max_size=20))
@example(rng_=(8, True, -128, 127), xs=[INT64_MAX, INT64_MIN, 128, -129, 255, 256])
def test_saturate_all_overflow_modes(rng_: tuple[int, bool, int, int], xs: list[int]) -> None:
    bits, signed, lo, hi = rng_
    a = np.array(xs, dtype=np.int64)
    np.testing.assert_array_equal(saturate(a, lo, hi, Overflow.SAT), [min(max(x, lo), hi) for x in xs])
    sym = min(hi, -lo) if signed else hi
    sym_lo = -sym if signed else lo
    np.testing.assert_array_equal(saturate(a, lo, hi, Overflow.SAT_SYM), [min(max(x, sym_lo), sym) for x in xs])
    np.testing.assert_array_equal(saturate(a, lo, hi, Overflow.WRAP), [ref_wrap(x, bits, signed) for x in xs])


def test_saturate_examples() -> None:
    a = np.array([-200, -128, -127, 0, 127, 128, 300])
    np.testing.assert_array_equal(saturate(a, -128, 127), [-128, -128, -127, 0, 127, 127, 127])
    np.testing.assert_array_equal(saturate(a, -128, 127, Overflow.SAT_SYM), [-127, -127, -127, 0, 127, 127, 127])
    np.testing.assert_array_equal(saturate(a, -128, 127, Overflow.WRAP), [56, -128, -127, 0, 127, -128, 44])
    np.testing.assert_array_equal(saturate(a, 0, 255, Overflow.SAT_SYM), [0, 0, 0, 0, 127, 128, 255])
    np.testing.assert_array_equal(saturate(a, 0, 255, Overflow.WRAP), [56, 128, 129, 0, 127, 128, 44])


def test_saturate_narrow_range_sat_sym_is_sat() -> None:
    a = np.arange(-130, 131)
    np.testing.assert_array_equal(saturate(a, -127, 127, Overflow.SAT_SYM), saturate(a, -127, 127, Overflow.SAT))


# ---- requantize -----------------------------------------------------------------------------


def ref_requantize(acc: int, mantissa: int, shift: int, zp: int, lo: int, hi: int, mode: Rounding) -> int:
    return min(max(ref_round(Fraction(acc * mantissa, 2**shift), mode) + zp, lo), hi)


requant_cases = st.tuples(
    st.integers(-(2**31), 2**31 - 1),  # a 32-bit accumulator
    st.integers(1, 2**31 - 1),         # multipliers are checked to be below 2**31
    st.integers(0, 62),
    st.integers(-128, 255),
    st.sampled_from([(-128, 127), (-127, 127), (0, 255), (-8, 7), (0, 15), (-(2**15), 2**15 - 1)]),
)


@pytest.mark.parametrize("mode", ALL_ROUNDINGS, ids=lambda m: m.value)
@given(case=requant_cases)
def test_requantize_matches_exact_formula(mode: Rounding, case: tuple) -> None:
    acc, m, s, zp, (lo, hi) = case
    got = requantize(np.int64(acc), m, s, zp, lo, hi, mode)
    assert int(got) == ref_requantize(acc, m, s, zp, lo, hi, mode)


@given(data=st.data())
def test_requantize_per_channel_broadcasts_on_last_axis(data: st.DataObject) -> None:
    channels = data.draw(st.integers(1, 6))
    rows = data.draw(st.integers(1, 4))
    mant = data.draw(st.lists(st.integers(1, 2**24), min_size=channels, max_size=channels))
    shift = data.draw(st.lists(st.integers(10, 40), min_size=channels, max_size=channels))
    acc = data.draw(st.lists(st.integers(-(2**30), 2**30), min_size=rows * channels, max_size=rows * channels))
    zp = data.draw(st.integers(-5, 5))
    mode = data.draw(st.sampled_from(ALL_ROUNDINGS))
    a = np.array(acc, dtype=np.int64).reshape(rows, channels)
    got = requantize(a, np.array(mant), np.array(shift), zp, -128, 127, mode)
    want = [[ref_requantize(int(a[r, c]), mant[c], shift[c], zp, -128, 127, mode) for c in range(channels)]
            for r in range(rows)]
    np.testing.assert_array_equal(got, want)


def test_requantize_default_rounding_and_overflow() -> None:
    # 5 * 3 / 2 = 7.5 -> 8 (half even), + zp 120 = 128 -> saturates to 127
    assert int(requantize(np.int64(5), 3, 1, 120, -128, 127)) == 127
    assert int(requantize(np.int64(5), 3, 1, 0, -128, 127)) == 8
    assert int(requantize(np.int64(3), 3, 1, 0, -128, 127)) == 4  # 4.5 -> 4


# ---- Dyadic ---------------------------------------------------------------------------------

multipliers = st.floats(min_value=2.0**-30, max_value=2.0**30, allow_nan=False, allow_infinity=False,
                        exclude_min=False)


@given(v=multipliers)
@example(v=1 - 2**-26)       # rounds up to 2**24 and must renormalize the mantissa
@example(v=1.0)
@example(v=0.1)
@example(v=2.0**30)
@example(v=2.0**-30)
@example(v=3.0000001)
def test_dyadic_from_float_relative_error(v: float) -> None:
    d = Dyadic.from_float(v)
    assert 0 <= d.shift <= 62
    assert 0 < d.mantissa and (d.mantissa < 2**25 or d.shift == 0)  # shift never goes negative
    exact = Fraction(d.mantissa, 2**d.shift)
    assert abs(exact - Fraction(v)) <= Fraction(v) * Fraction(1, 2**24)
    assert Fraction(d.value) == exact  # .value is the dyadic itself, not a rounded float


@given(v=st.floats(min_value=2.0**-30, max_value=2.0**30, width=32))
def test_dyadic_from_float_is_exact_for_float32(v: float) -> None:
    """Scales are float32, so a ratio that is itself a float32 must be represented exactly."""
    d = Dyadic.from_float(v)
    assert Fraction(d.mantissa, 2**d.shift) == Fraction(v)


@given(bits=st.integers(4, 30), v=multipliers)
def test_dyadic_mantissa_bits(bits: int, v: float) -> None:
    d = Dyadic.from_float(v, mantissa_bits=bits)
    assert d.mantissa < 2**bits or d.shift == 0
    assert abs(Fraction(d.mantissa, 2**d.shift) - Fraction(v)) <= Fraction(v) * Fraction(1, 2**bits)


def test_dyadic_tiny_multipliers_are_clamped_to_shift_62_or_refused() -> None:
    d = Dyadic.from_float(2.0**-50)
    assert d.shift == 62
    assert Fraction(d.mantissa, 2**62) == Fraction(2) ** -50
    with pytest.raises(ValueError, match="too small"):
        Dyadic.from_float(2.0**-70)


@pytest.mark.parametrize("bad", [0.0, -1.0, float("inf"), float("nan")])
def test_dyadic_rejects_non_positive_or_non_finite(bad: float) -> None:
    with pytest.raises(ValueError, match="positive and finite"):
        Dyadic.from_float(bad)


# ---- Rounding.parse ---------------------------------------------------------------------------


@pytest.mark.parametrize("name, mode", [
    ("ROUND", Rounding.HALF_EVEN), ("round", Rounding.HALF_EVEN), (" Round ", Rounding.HALF_EVEN),
    ("HALF_EVEN", Rounding.HALF_EVEN), ("half_up", Rounding.HALF_UP), ("Half_Down", Rounding.HALF_DOWN),
    ("half_ceil", Rounding.HALF_CEIL), ("ceil", Rounding.CEIL), ("FLOOR", Rounding.FLOOR), ("up", Rounding.UP),
    ("DOWN", Rounding.DOWN),
])
def test_rounding_parse_accepts_qonnx_spellings(name: str, mode: Rounding) -> None:
    assert Rounding.parse(name) is mode


@pytest.mark.parametrize("junk", ["", "nearest", "HALF", "ROUND_HALF", "half-even", "truncate", "ROUNDING"])
def test_rounding_parse_rejects_junk(junk: str) -> None:
    with pytest.raises(ValueError, match="unknown rounding mode") as e:
        Rounding.parse(junk)
    assert "HALF_EVEN" in str(e.value) and "ROUND" in str(e.value)  # the message lists the options


def test_cpp_ids_are_the_enum_order_of_qarith_h() -> None:
    assert [m.cpp_id for m in Rounding] == list(range(8))
    assert Rounding.HALF_EVEN.cpp_id == 0 and Rounding.DOWN.cpp_id == 7
    assert [m.cpp_id for m in Overflow] == [0, 1, 2]
