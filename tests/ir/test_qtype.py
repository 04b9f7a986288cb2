"""QType ranges and membership: signed, unsigned, narrow, bipolar, fixed point."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from vaqf.ir import BinaryType, FixedType, IntType, int_type_for_range, qtype_from_json
from vaqf.ir.tensor import TensorInfo


@pytest.mark.parametrize("qt, lo, hi", [
    (IntType(8), -128, 127),
    (IntType(8, narrow=True), -127, 127),
    (IntType(8, signed=False), 0, 255),
    (IntType(8, signed=False, narrow=True), 0, 254),  # QONNX: an unsigned narrow range drops the top value
    (IntType(4), -8, 7),
    (IntType(4, narrow=True), -7, 7),
    (IntType(2), -2, 1),
    (IntType(1), -1, 0),
    (IntType(1, signed=False), 0, 1),
    (IntType(32), -(2**31), 2**31 - 1),
    (IntType(16, signed=False), 0, 65535),
])
def test_int_type_range(qt: IntType, lo: int, hi: int) -> None:
    assert (qt.min, qt.max) == (lo, hi)
    assert qt.allowed([lo, hi])
    assert not qt.allowed([lo - 1])
    assert not qt.allowed([hi + 1])
    assert qt.allowed(np.zeros((0,)))  # empty is trivially in range


@given(bits=st.integers(1, 12), signed=st.booleans(), narrow=st.booleans())
def test_int_type_allowed_counts_exactly_its_values(bits: int, signed: bool, narrow: bool) -> None:
    qt = IntType(bits, signed, narrow)
    values = np.arange(-(2**bits) - 2, 2**bits + 2)
    inside = [v for v in values if qt.allowed(v)]
    assert inside == list(range(qt.min, qt.max + 1))
    assert len(inside) == 2**bits - (1 if narrow else 0)


def test_int_type_rejects_fractions_and_bad_widths() -> None:
    assert not IntType(8).allowed([1.5])
    assert IntType(8).allowed(np.array([3.0, -4.0]))
    for bits in (0, 65, -3):
        with pytest.raises(ValueError, match="bits"):
            IntType(bits)


def test_binary_type() -> None:
    b = BinaryType()
    assert (b.min, b.max, b.bits) == (-1, 1, 1)
    assert b.allowed([1, -1, 1])
    assert not b.allowed([0])
    assert not b.allowed([1, 2])


def test_fixed_type() -> None:
    f = FixedType(8, 4)  # ap_fixed<8,4>: 4 fraction bits, [-8, 7.9375]
    assert f.frac_bits == 4
    assert (f.min, f.max) == (-8.0, 7.9375)
    assert f.allowed([-8.0, 7.9375, 0.0625, -0.5])
    assert not f.allowed([0.03125])  # finer than the step
    assert not f.allowed([8.0])
    assert not f.allowed([-8.0625])
    u = FixedType(6, 2, signed=False)
    assert (u.min, u.max) == (0.0, 3.9375)
    assert not u.allowed([-0.0625])


@pytest.mark.parametrize("qt", [IntType(8), IntType(4, signed=False), IntType(8, narrow=True), BinaryType(),
                                FixedType(16, 6, True, "HALF_UP", "WRAP")])
def test_qtype_json_round_trip(qt) -> None:
    back = qtype_from_json(qt.to_json())
    assert back == qt and hash(back) == hash(qt)
    info = TensorInfo((1, 3), qt, [0.25, 0.5, 1.0], 0)
    assert TensorInfo.from_json(info.to_json()).same_meaning(info)


def test_qtype_from_json_rejects_unknown_kind() -> None:
    with pytest.raises(ValueError, match="unknown qtype"):
        qtype_from_json({"kind": "float"})


@given(lo=st.integers(-(2**40), 2**40), span=st.integers(0, 2**40))
def test_int_type_for_range_is_the_narrowest(lo: int, span: int) -> None:
    hi = lo + span
    qt = int_type_for_range(lo, hi)
    assert qt.min <= lo and hi <= qt.max
    if qt.bits > 1:
        smaller = IntType(qt.bits - 1, qt.signed)
        assert not (smaller.min <= lo and hi <= smaller.max)
    assert qt.signed == (lo < 0)


def test_tensor_info_dequantize_and_meaning() -> None:
    info = TensorInfo((1, 2), IntType(8, signed=False), [0.5, 0.25], 10)
    np.testing.assert_array_equal(info.dequantize(np.array([[10, 14]])), [[0.0, 1.0]])
    assert info.per_channel and info.size == 2
    other = TensorInfo((1, 2), IntType(8, signed=False), [0.5, 0.25], 11)
    assert not info.same_meaning(other)
