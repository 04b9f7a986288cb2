"""Float ops that cost nothing once absorbed: a model's float ops ahead of its input quantizer (done by the host,
``vaqf.ir.host``), BatchNormalization and constant Sub/Div/Mul/Add on a dense layer's own result (folded into its
weights' signs, scale, bias and the requantization's sub-step offset), bipolar activations. Each against qonnx's
reference executor on QONNX graphs built here, exactly on integer outputs."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from vaqf.errors import UnsupportedOpError
from vaqf.frontend.onnx_import import import_onnx
from vaqf.ir.host import apply_ops, bipolar, transform_op
from vaqf.sim.simulator import Simulator

QD = "qonnx.custom_op.general"


def _model(nodes, inits, in_shape, out_name, out_shape) -> onnx.ModelProto:
    g = helper.make_graph(nodes, "m", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(in_shape))],
                          [helper.make_tensor_value_info(out_name, TensorProto.FLOAT, list(out_shape))],
                          [numpy_helper.from_array(np.asarray(v, np.float32), k) for k, v in inits.items()])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(QD, 1)],
                             ir_version=9)


def _quant(src: str, dst: str, scale: str, bits: str, signed: int = 1, narrow: int = 0) -> onnx.NodeProto:
    return helper.make_node("Quant", [src, scale, "zero", bits], [dst], domain=QD, signed=signed, narrow=narrow,
                            rounding_mode="ROUND", name=f"q_{dst}")


def _qonnx(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.core.onnx_exec import execute_onnx
    from qonnx.transformation.infer_shapes import InferShapes

    mw = ModelWrapper(model).transform(InferShapes())
    out = mw.graph.output[0].name
    return np.concatenate([execute_onnx(mw, {"x": x[i:i + 1]})[out] for i in range(len(x))])


def _sim(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    g = import_onnx(model)
    return Simulator(g).run([x]).dequantized[0]


def test_host_ops_apply_in_the_models_float32_order():
    ops = [transform_op("mul", np.float32(2)), transform_op("sub", np.float32(1)),
           transform_op("rdiv", np.array([[1.0, 2.0, 4.0]], np.float32))]
    x = np.array([[0.25, 0.75, 0.625]], np.float32)
    np.testing.assert_array_equal(apply_ops(x, ops), np.float32([1.0, 2.0, 4.0]) / (x * 2 - 1))
    np.testing.assert_array_equal(bipolar(np.array([-0.0, 0.0, -1e-30, 3.0])), [1, 1, -1, 1])
    with pytest.raises(ValueError, match="unknown host op"):
        transform_op("pow", np.float32(2))


@pytest.mark.parametrize("first", ["Mul", "Div", "SubFrom"])
def test_input_float_ops_go_to_the_host_and_match_qonnx_exactly(first):
    """Per-channel Mul/Div (or c - x), then a scalar Add, ahead of the input quantizer: host ops recorded in
    order; the integers equal qonnx's on inputs that straddle rounding boundaries and saturate."""
    c = np.array([[0.5, 1.5, -2.0, 3.0]], np.float32)
    op = {"Mul": helper.make_node("Mul", ["x", "c"], ["a"], name="scale"),
          "Div": helper.make_node("Div", ["x", "c"], ["a"], name="scale"),
          "SubFrom": helper.make_node("Sub", ["c", "x"], ["a"], name="scale")}[first]
    nodes = [op, helper.make_node("Add", ["a", "h"], ["b"], name="shift"), _quant("b", "y", "s", "bits")]
    m = _model(nodes, {"c": c, "h": 0.25, "s": 0.0625, "zero": 0.0, "bits": 4.0}, (1, 4), "y", (1, 4))
    g = import_onnx(m)
    t = g.metadata["input_transform"]["x"]
    assert [o[0] for o in t["ops"]] == [{"Mul": "mul", "Div": "div", "SubFrom": "rsub"}[first], "add"]
    assert t["bipolar"] is False
    x = np.random.default_rng(0).uniform(-1, 1, (64, 4)).astype(np.float32)
    np.testing.assert_array_equal(_sim(m, x).reshape(-1, 4), _qonnx(m, x).reshape(-1, 4))


def test_a_non_scalar_input_op_after_a_reshape_is_refused_by_name():
    nodes = [helper.make_node("Reshape", ["x", "shape"], ["r"], name="flat"),
             helper.make_node("Mul", ["r", "c"], ["a"], name="per_channel"), _quant("a", "y", "s", "bits")]
    inits = {"c": np.ones((1, 4)), "s": 0.1, "zero": 0.0, "bits": 8.0}
    m = _model(nodes, inits, (1, 2, 2), "y", (1, 4))
    m.graph.initializer.append(numpy_helper.from_array(np.array([1, 4], np.int64), "shape"))
    with pytest.raises(UnsupportedOpError, match="per_channel.*after it is reshaped"):
        import_onnx(m)


def _gemm_bn(after: str, gamma: np.ndarray, rng: np.random.Generator, standalone: bool = False) -> onnx.ModelProto:
    """x -> Quant (4-bit) -> Gemm (2-bit quantized weights) -> BatchNormalization -> ``after`` quantizer."""
    k, n = 16, 6
    w = rng.integers(-1, 2, (n, k)).astype(np.float32)
    nodes = [_quant("x", "xq", "s_in", "b4"), _quant("w", "wq", "one", "b2", narrow=1),
             helper.make_node("Gemm", ["xq", "wq"], ["acc"], transB=1, name="fc")]
    if standalone:
        nodes.append(helper.make_node("Relu", ["acc"], ["r"], name="relu"))
    nodes.append(helper.make_node("BatchNormalization", ["r" if standalone else "acc", "g", "b", "mu", "var"],
                                  ["bn"], name="bn"))
    if after == "bipolar":
        nodes.append(helper.make_node("BipolarQuant", ["bn", "one"], ["y"], domain=QD, name="sign"))
    else:
        nodes.append(_quant("bn", "y", "one", "b2", narrow=1))
    inits = {"s_in": 0.125, "one": 1.0, "zero": 0.0, "b4": 4.0, "b2": 2.0, "w": w.T.copy().T, "g": gamma,
             "b": rng.normal(0, 1, n), "mu": rng.normal(0, 3, n), "var": rng.uniform(0.5, 6, n)}
    return _model(nodes, inits, (1, k), "y", (1, n))


@pytest.mark.parametrize("after", ["bipolar", "quant2"])
def test_batchnorm_after_a_quantized_gemm_folds_exactly(after):
    """BatchNormalization with scales of both signs (and a zero) after a Gemm on quantized weights, then a
    bipolar or 2-bit quantizer: folded into the dense layer (rows negated; a FLOOR bias for the sign, a
    requantization offset for the 2-bit levels), equal to qonnx on every output of 400 inputs."""
    rng = np.random.default_rng(5)
    gamma = np.array([1.3, -0.7, 0.0, 2.1, -1.9, 0.4])
    m = _gemm_bn(after, gamma, rng)
    g = import_onnx(m)
    ops = [n.op for n in g.nodes]
    assert "batchnorm" not in ops and ops.count("dense") == 1
    dense = next(n for n in g.nodes if n.op == "dense")
    assert np.all(np.asarray(dense.attrs["weight"])[2] == 0)  # the gamma = 0 channel is its constant
    if after == "quant2":
        rq = next(n for n in g.nodes if n.op == "requant").attrs
        assert rq.get("offset") is not None and np.any(rq["offset"] != 0)
    x = rng.uniform(-1.2, 1.2, (400, 16)).astype(np.float32)
    np.testing.assert_array_equal(_sim(m, x).reshape(-1, 6), _qonnx(m, x).reshape(-1, 6))


def test_a_batchnorm_that_cannot_fold_names_itself():
    m = _gemm_bn("quant2", np.ones(6), np.random.default_rng(0), standalone=True)
    with pytest.raises(UnsupportedOpError, match="'bn'.*BatchNormalization.*right after a convolution or a dense"):
        import_onnx(m)


def test_tensornorm_tail_folds_into_the_last_dense():
    """Sub, Div, Mul (negative entries) and Add with one value per channel on a Gemm's result, the graph's
    output: no op left but the dense; within half an accumulator step of qonnx (the bias is rounded once)."""
    rng = np.random.default_rng(2)
    k, n = 12, 5
    w = rng.integers(-1, 2, (n, k)).astype(np.float32)
    nodes = [_quant("x", "xq", "s_in", "b4"), _quant("w", "wq", "one", "b2", narrow=1),
             helper.make_node("Gemm", ["xq", "wq"], ["acc"], transB=1, name="fc"),
             helper.make_node("Sub", ["acc", "mu"], ["t1"], name="sub"),
             helper.make_node("Div", ["t1", "sd"], ["t2"], name="div"),
             helper.make_node("Mul", ["t2", "ga"], ["t3"], name="mul"),
             helper.make_node("Add", ["t3", "be"], ["y"], name="add")]
    inits = {"s_in": 0.125, "one": 1.0, "zero": 0.0, "b4": 4.0, "b2": 2.0, "w": w, "mu": rng.normal(0, 1, n),
             "sd": rng.uniform(0.5, 2, n), "ga": np.array([1.0, -2.0, 0.5, -0.25, 3.0]), "be": rng.normal(0, 1, n)}
    m = _model(nodes, inits, (1, k), "y", (1, n))
    g = import_onnx(m)
    assert [nd.op for nd in g.nodes] == ["dense"]
    x = rng.uniform(-1, 1, (100, k)).astype(np.float32)
    step = np.asarray(g.outputs[0].info.scale, dtype=np.float64)
    err = np.abs(_sim(m, x).reshape(-1, n) - _qonnx(m, x).reshape(-1, n))
    assert np.all(err <= 0.5 * step + 1e-6), err.max(axis=0) / step


def test_a_per_channel_activation_scale_off_the_channel_axis_is_refused_by_name():
    """A Quant after a convolution whose scale varies along the last axis (a 1-D scale broadcasts there), not
    the channels: refused naming the quantizer and the shape, before anything is calibrated."""
    w = np.random.default_rng(0).integers(-3, 4, size=(4, 2, 1, 1)).astype(np.float32)
    nodes = [_quant("x", "xq", "s", "bits"), _quant("w", "wq", "ws", "bits"),
             helper.make_node("Conv", ["xq", "wq"], ["c"], name="conv"),
             _quant("c", "y", "cs", "bits", signed=1)]
    inits = {"s": 0.1, "zero": 0.0, "bits": 4.0, "w": w, "ws": 1.0, "cs": np.array([0.1, 0.2, 0.3, 0.4])}
    m = _model(nodes, inits, (1, 2, 4, 4), "y", (1, 4, 4, 4))
    with pytest.raises(UnsupportedOpError, match=r"q_y.*shape \[4\] on a rank-4 activation.*channel axis"):
        import_onnx(m)
