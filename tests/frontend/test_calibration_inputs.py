"""Calibration arrays: the shape the model takes (named in the error), real finite numbers, and no
onnxruntime internals in any message."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.helpers import float_mlp_model, qonnx_model
from vaqf.errors import VaqfError
from vaqf.frontend.calibrate import collect_ranges, load_calibration, ort_compatible
from vaqf.frontend.onnx_import import ImportOptions, import_onnx


def _import(rng: np.random.Generator, calib: np.ndarray) -> None:
    import_onnx(float_mlp_model(rng), ImportOptions(calib=calib))  # input [batch, 8]


def test_a_good_calibration_array_imports(rng: np.random.Generator) -> None:
    _import(rng, rng.normal(size=(16, 8)).astype(np.float32))


@pytest.mark.parametrize("shape", [(8,), (16, 9), (16, 8, 1), (4, 2, 4)])
def test_wrong_shape_names_the_expected_shape(shape: tuple[int, ...], rng: np.random.Generator) -> None:
    with pytest.raises(VaqfError, match=r"takes \[N, 8\]") as e:
        _import(rng, rng.normal(size=shape).astype(np.float32))
    assert "\n" not in str(e.value) and "onnxruntime" not in str(e.value).lower()


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_calibration_is_an_error(bad: float, rng: np.random.Generator) -> None:
    x = rng.normal(size=(16, 8)).astype(np.float32)
    x[3, 3] = bad
    with pytest.raises(VaqfError, match="1 NaN or infinite"):
        _import(rng, x)


@pytest.mark.parametrize("x", [np.ones((4, 8), np.complex64), np.array([["a"] * 8] * 4), np.zeros((0, 8))],
                         ids=["complex", "str", "empty"])
def test_calibration_files_of_the_wrong_kind(x: np.ndarray, tmp_path: Path) -> None:
    p = tmp_path / "c.npy"
    np.save(p, x)
    with pytest.raises(VaqfError, match="c.npy"):
        load_calibration(p)


def test_npz_calibration_file_is_an_error(tmp_path: Path) -> None:
    p = tmp_path / "c.npz"
    np.savez(p, x=np.ones((4, 8)))
    with pytest.raises(VaqfError, match=r"\.npz archive"):
        load_calibration(p)


def test_qonnx_model_under_onnxruntime_is_a_clear_error(rng: np.random.Generator) -> None:
    with pytest.raises(VaqfError, match="QONNX model sets its own quantization") as e:
        ort_compatible(qonnx_model(rng))
    assert "registered function" not in str(e.value)
    with pytest.raises(VaqfError, match="leave out --calib"):
        collect_ranges(qonnx_model(rng), np.ones((2, 16), np.float32), ["x"])
