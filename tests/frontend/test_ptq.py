"""Post-training quantization of a float ONNX MLP built in the test (no torch needed)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tests.helpers import float_mlp_model, qonnx_model
from vaqf.api import load_model
from vaqf.errors import VaqfError
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


def _large_bias_mlp(rng: np.random.Generator) -> onnx.ModelProto:
    """An MLP whose first layer has a channel with near-zero weights and a real bias (a pruned channel):
    bias / (input scale x weight scale) is far beyond 2**31."""
    w1 = rng.normal(0, 0.5, (8, 16)).astype(np.float32)
    w1[:, 3] = 1e-7 * rng.normal(size=8)
    b1 = rng.normal(0, 0.5, 16).astype(np.float32)
    b1[3] = 2.5
    w2 = rng.normal(0, 0.5, (16, 4)).astype(np.float32)
    inits = [numpy_helper.from_array(a, n) for a, n in ((w1, "w1"), (b1, "b1"), (w2, "w2"))]
    nodes = [helper.make_node("Gemm", ["x", "w1", "b1"], ["h"], name="fc1"),
             helper.make_node("Relu", ["h"], ["a"], name="relu"),
             helper.make_node("MatMul", ["a", "w2"], ["y"], name="fc2")]
    g = helper.make_graph(nodes, "bias", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)


@pytest.mark.cxx
def test_a_bias_beyond_32_bits_raises_that_channels_weight_scale(rng: np.random.Generator, tmp_path,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    import onnxruntime as ort

    import vaqf
    from vaqf.api import compile_model

    model = _large_bias_mlp(rng)
    x = rng.normal(size=(200, 8)).astype(np.float32)
    with caplog.at_level("WARNING"):
        res = compile_model(model, tmp_path / "proj", weights="int8", calib=x[:64])
    assert "node 'fc1': the bias of 1 output channel(s) did not fit 32 bits" in caplog.text
    fc1 = next(n for n in res.graph.topo() if n.op == "dense")
    assert np.abs(fc1.attrs["bias"]).max() <= 2**30 < abs(2.5 / (fc1.inputs[0].info.scale[0] * 1e-7 / 127))
    others = [c for c in range(16) if c != 3]
    np.testing.assert_array_equal(np.abs(fc1.attrs["weight"][others]).max(axis=1), 127)  # untouched rows
    want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    got = vaqf.load(res.project).predict(x)
    assert np.linalg.norm(got - want) <= 0.03 * np.linalg.norm(want)
    out = vaqf.load(res.project).csim(x[:2])
    assert out.bit_exact == 2


def test_a_bias_beyond_32_bits_on_weights_quantized_in_the_model_is_refused(rng: np.random.Generator) -> None:
    """The same channel with its weights already quantized (int8, weights=keep): the model's quantization is
    not changed; the error names the node, the channel and what to do."""
    model = qonnx_model(rng)
    bias = next(t for t in model.graph.initializer if t.name == "b1")
    b = numpy_helper.to_array(bias).copy()
    b[2] = 1e12
    bias.CopyFrom(numpy_helper.from_array(b.astype(np.float32), "b1"))
    with pytest.raises(VaqfError, match=r"output channel\(s\) \[2\] does not fit 32 bits.*Int32Bias"):
        import_onnx(model)
