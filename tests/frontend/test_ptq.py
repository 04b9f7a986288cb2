"""Post-training quantization of a float ONNX MLP built in the test (no torch needed)."""

from __future__ import annotations

import numpy as np
import pytest

from tests.helpers import float_mlp_model
from vaqf.api import load_model
from vaqf.frontend.onnx_import import ImportOptions, import_onnx
from vaqf.frontend.ptq import activation_quant, quantize_weight
from vaqf.ir import BinaryType, IntType
from vaqf.sim.simulator import Simulator

DIMS = (8, 16, 16, 12, 4)


def _dense_types(graph) -> list:
    return [n.attrs["w_type"] for n in graph.topo() if n.op == "dense"]


def test_binary_keeps_first_and_last_layer_int8(rng: np.random.Generator) -> None:
    model = float_mlp_model(rng, DIMS)
    calib = rng.normal(size=(64, DIMS[0])).astype(np.float32)
    types = _dense_types(load_model(model, weights="binary", calib=calib))
    assert types[0] == IntType(8, True, narrow=True) and types[-1] == IntType(8, True, narrow=True)
    assert all(isinstance(t, BinaryType) for t in types[1:-1]) and len(types) == 4
    every = import_onnx(model, ImportOptions(weights="binary", calib=calib, first_last_int8=False))
    assert all(isinstance(t, BinaryType) for t in _dense_types(every))


@pytest.mark.parametrize("weights, bits", [("int8", 8), ("int4", 4), ("keep", 8)])
def test_integer_modes(weights: str, bits: int, rng: np.random.Generator) -> None:
    model = float_mlp_model(rng, DIMS)
    calib = rng.normal(size=(64, DIMS[0])).astype(np.float32)
    g = load_model(model, weights=weights, calib=calib)
    assert _dense_types(g) == [IntType(bits, True, narrow=True)] * 4
    x = g.inputs[0]
    assert x.info.qtype == IntType(8, True, narrow=True)  # calibration data has both signs
    hidden = [n.outputs[0].info.qtype for n in g.topo() if n.op == "dense"][:-1]
    assert all(q == IntType(8, signed=False) for q in hidden)  # after ReLU: the unsigned range


@pytest.mark.parametrize("act_bits", [4, 6, 8])
def test_act_bits(act_bits: int, rng: np.random.Generator) -> None:
    model = float_mlp_model(rng, DIMS)
    calib = rng.normal(size=(64, DIMS[0])).astype(np.float32)
    g = load_model(model, weights="int8", calib=calib, act_bits=act_bits)
    assert g.inputs[0].info.qtype.bits == act_bits
    res = Simulator(g).run([calib])
    assert res.outputs[0].shape == (64, DIMS[-1])


def test_quantize_weight_modes(rng: np.random.Generator) -> None:
    w = rng.normal(size=(5, 9))
    w[2] = 0.0  # an all-zero row must not divide by zero
    ints, scale, qt = quantize_weight(w, "int4")
    assert qt == IntType(4, True, narrow=True) and np.abs(ints).max() <= 7
    assert np.all(np.abs(ints[[0, 1, 3, 4]]).max(axis=1) == 7)  # the largest weight of each row maps to 7
    np.testing.assert_array_equal(ints[2], 0)
    assert np.all(np.abs(ints * scale[:, None] - w)[[0, 1, 3, 4]] <= scale[[0, 1, 3, 4], None] / 2 * (1 + 1e-6))
    b, bscale, bqt = quantize_weight(w, "binary")
    assert isinstance(bqt, BinaryType) and set(np.unique(b)) <= {-1, 1}
    np.testing.assert_allclose(bscale[[0, 1, 3, 4]], np.abs(w[[0, 1, 3, 4]]).mean(axis=1), rtol=1e-6)
    for s in (scale, bscale):
        np.testing.assert_array_equal(s, s.astype(np.float32))  # float32 scales: exact dyadics


def test_activation_quant() -> None:
    qt, scale = activation_quant(0.0, 6.0, 8)
    assert qt == IntType(8, signed=False) and scale == np.float32(6.0 / 255)
    qt, scale = activation_quant(-3.0, 1.0, 8)
    assert qt == IntType(8, True, narrow=True) and scale == np.float32(3.0 / 127)
    qt, scale = activation_quant(0.0, 0.0, 8)  # a constant-zero tensor still gets a usable scale
    assert scale > 0
