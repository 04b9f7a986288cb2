"""Float inputs to the simulator (vaqf simulate / csim --input, Simulator.run): only real numbers, NaN and inf
refused (or saturated on request, counted), huge values saturated like 15.0 is, never wrapped to the minimum."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import small_graph
from vaqf.errors import VaqfError
from vaqf.sim.simulator import Simulator

# the input: uint8 at scale 1/16, so 15.9375 is the largest value and 15.0 quantizes to 240


@pytest.fixture
def sim(rng: np.random.Generator) -> Simulator:
    return Simulator(small_graph(rng))


def _ints(sim: Simulator, x: np.ndarray) -> np.ndarray:
    return sim.quantize_inputs([x])[0]


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_inputs_are_an_error(sim: Simulator, bad: float) -> None:
    x = np.ones((3, 12), np.float32)
    x[1, 4] = bad
    for run in (lambda: sim.quantize_inputs([x]), lambda: sim.run([x]), lambda: sim.run([x])):
        with pytest.raises(VaqfError, match="1 (NaN|infinite)") as e:
            run()
        assert "\n" not in str(e.value) and "'x'" in str(e.value)


def test_non_finite_inputs_saturate_on_request_with_a_count(rng: np.random.Generator,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    sim = Simulator(small_graph(rng), saturate=True)
    x = np.ones((1, 12), np.float64)
    x[0, :3] = [np.nan, np.inf, -np.inf]
    with caplog.at_level(logging.WARNING):
        q = _ints(sim, x)
    assert q[0, :4].tolist() == [0, 255, 0, 16]
    assert "1 NaN values set to 0 and 2 infinite values saturated" in caplog.text


@pytest.mark.parametrize("huge", [1e30, 1e19, 3e38, 2.0**63])
def test_huge_inputs_saturate_like_any_value_above_the_range(sim: Simulator, huge: float) -> None:
    x = np.full((2, 12), 15.0)
    x[0, 0], x[1, 0] = huge, -huge
    for dtype in (np.float64, np.float32):
        q = _ints(sim, x.astype(dtype))
        assert q[0, 0] == 255 and q[1, 0] == 0 and q[0, 1] == 240
        assert sim.run([x.astype(dtype)]).outputs[0].shape == (2, 5)


@pytest.mark.parametrize("x", [
    np.ones((2, 12), np.complex64),
    np.array([["1"] * 12] * 2),
    np.array([[b"1"] * 12] * 2),
    np.zeros((2, 12), "datetime64[s]"),
    np.zeros((2, 12), "timedelta64[s]"),
    np.zeros((2, 12), [("a", "f4"), ("b", "f4")]),
    np.full((2, 12), 1.0, object),
], ids=["complex", "str", "bytes", "datetime", "timedelta", "structured", "object"])
def test_only_real_numeric_dtypes_are_accepted(sim: Simulator, x: np.ndarray) -> None:
    for run in (lambda: sim.quantize_inputs([x]), lambda: sim.run([x]), lambda: sim.run_int([x])):
        with pytest.raises(VaqfError, match="real numbers") as e:
            run()
        assert "\n" not in str(e.value)


def test_empty_inputs_are_an_error(sim: Simulator) -> None:
    with pytest.raises(VaqfError, match="empty"):
        sim.quantize_inputs([np.zeros((0, 12), np.float32)])
    with pytest.raises(VaqfError, match="empty"):
        sim.run([np.zeros((0, 12), np.float32)])


def test_big_endian_and_integer_inputs_quantize_like_native_floats(sim: Simulator) -> None:
    x = np.linspace(0, 15, 24).reshape(2, 12)
    want = _ints(sim, x)
    np.testing.assert_array_equal(_ints(sim, x.astype(">f8")), want)
    np.testing.assert_array_equal(_ints(sim, x.astype(">f4")), _ints(sim, x.astype(np.float32)))
    np.testing.assert_array_equal(_ints(sim, np.full((1, 12), 3, ">i2")), _ints(sim, np.full((1, 12), 3.0)))


def test_an_npz_archive_is_an_error(sim: Simulator, tmp_path: Path) -> None:
    np.savez(tmp_path / "x.npz", x=np.ones((2, 12)))
    with np.load(tmp_path / "x.npz") as archive:
        with pytest.raises(VaqfError, match=r"\.npz archive"):
            sim.quantize_inputs([archive])
