"""Float CNNs beyond plain 2-D convolutions, quantized after training (PTQ) and compiled: depthwise-separable
convolutions (grouped weights as block-diagonal dense weights), 1-D convolutions and pooling, nearest-neighbour
upsampling with skip concatenations (a small U-Net), a BatchNormalization that no convolution precedes, and the
batch-axis forms exporters write (Flatten axis 0, a fixed leading dimension). Each: the simulated outputs follow
onnxruntime's float outputs, and the generated project C-simulates bit-exact."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import vaqf
from vaqf.api import compile_model
from vaqf.frontend.onnx_import import ImportOptions, import_onnx
from vaqf.sim.simulator import Simulator

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")
nn = torch.nn


def _export(model: nn.Module, path: Path, shape: tuple[int, ...]) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model.eval(), (torch.zeros(1, *shape),), str(path), dynamo=False, opset_version=17,
                          input_names=["x"], output_names=["y"], dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}})
    m = onnx.load(str(path))
    m.ir_version = min(m.ir_version, 10)
    onnx.save(m, str(path))
    return path


def _float(path: Path, x: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return np.concatenate([sess.run(None, {sess.get_inputs()[0].name: x[i:i + 1]})[0] for i in range(len(x))])


def _assert_follows(got: np.ndarray, want: np.ndarray, rel: float) -> None:
    """The quantized outputs within ``rel`` of the float outputs (relative L2), and the same class wherever the
    float model's top two differ by more than 5% of its output range (most samples)."""
    got, want = got.reshape(len(want), -1), want.reshape(len(want), -1)
    assert np.linalg.norm(got - want) <= rel * np.linalg.norm(want)
    top2 = np.sort(want, axis=1)[:, -2:]
    clear = top2[:, 1] - top2[:, 0] > 0.05 * np.ptp(want)
    assert clear.mean() >= 0.5
    assert float((got.argmax(1) == want.argmax(1))[clear].mean()) >= 0.98


def _compile_and_check(model: nn.Module, shape: tuple[int, ...], tmp_path: Path, rel: float = 0.05,
                       csim: int = 2):
    rng = np.random.default_rng(0)
    x = rng.normal(0, 1, size=(160,) + shape).astype(np.float32)
    path = _export(model, tmp_path / "m.onnx", shape)
    res = compile_model(path, tmp_path / "proj", weights="int8", calib=x[:64])
    _assert_follows(vaqf.load(res.project).predict(x[64:]), _float(path, x[64:]), rel)
    if csim:
        out = vaqf.load(res.project).csim(x[:csim])
        assert out.inputs == csim and out.bit_exact == csim
    return res, path


def _ops(graph) -> set[str]:
    return {n.op for n in graph.topo()}


def _scaled_head(model: nn.Module, factor: float = 4.0) -> nn.Module:
    """An untrained network's logits crowd together; scaling the last layer spreads them (clear classes)."""
    with torch.no_grad():
        last = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
        last.weight *= factor
    return model


@pytest.mark.cxx
def test_depthwise_separable_cnn_runs_as_block_diagonal_dense_layers(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = _scaled_head(nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.ReLU(),  # depthwise
        nn.Conv2d(8, 16, 1), nn.ReLU(),  # pointwise
        nn.Conv2d(16, 16, 3, stride=2, padding=1, groups=4), nn.ReLU(),  # grouped
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 5)))
    res, path = _compile_and_check(model, (3, 8, 8), tmp_path)
    assert {n.op_type for n in onnx.load(str(path)).graph.node} >= {"Conv", "GlobalAveragePool"}
    dense = [n for n in res.graph.topo() if n.op == "dense"]
    assert len(dense) == 5
    # the depthwise layer's weight matrix: output channel m reads only input channel m (its 9 taps), and the
    # compiler runs it in the dense-block form, without the zeros
    w = dense[1].attrs["weight"]
    assert w.shape == (8, 72) and np.all((w != 0).sum(axis=1) <= 9)
    assert dense[1].attrs.get("blocks") is not None


@pytest.mark.cxx
def test_conv1d_and_1d_pooling_run_as_height_one_images(tmp_path: Path) -> None:
    torch.manual_seed(1)
    model = _scaled_head(nn.Sequential(
        nn.Conv1d(4, 8, 5, padding=2), nn.ReLU(), nn.MaxPool1d(2),
        nn.Conv1d(8, 12, 3, stride=2), nn.ReLU(), nn.AvgPool1d(2),
        nn.Conv1d(12, 12, 3, padding=1, groups=3), nn.ReLU(), nn.AdaptiveAvgPool1d(1),
        nn.Flatten(), nn.Linear(12, 4)))
    res, path = _compile_and_check(model, (4, 32), tmp_path)
    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert {"Conv", "MaxPool", "AveragePool", "GlobalAveragePool"} <= ops
    assert sum(n.op == "dense" for n in res.graph.topo()) == 4


class _UNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.enc1 = nn.Sequential(nn.Conv2d(2, 8, 3, padding=1), nn.ReLU())
        self.enc2 = nn.Sequential(nn.MaxPool2d(2), nn.Conv2d(8, 12, 3, padding=1), nn.ReLU())
        self.mid = nn.Sequential(nn.MaxPool2d(2), nn.Conv2d(12, 12, 3, padding=1), nn.ReLU())
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.dec2 = nn.Sequential(nn.Conv2d(24, 8, 3, padding=1), nn.ReLU())
        self.out = nn.Conv2d(8 + 8 + 2, 3, 1)

    def forward(self, x):
        e1 = self.enc1(x)
        e2 = self.enc2(e1)
        d2 = self.dec2(torch.cat([self.up(self.mid(e2)), e2], 1))
        return self.out(torch.cat([self.up(d2), e1, x], 1))  # a three-way skip concatenation


@pytest.mark.cxx
def test_unet_with_nearest_upsampling_and_skip_concats(tmp_path: Path) -> None:
    torch.manual_seed(2)
    model = _UNet()
    rng = np.random.default_rng(0)
    x = rng.normal(0, 1, size=(80, 2, 8, 8)).astype(np.float32)
    path = _export(model, tmp_path / "unet.onnx", (2, 8, 8))
    types = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert {"Resize", "Concat"} <= types
    res = compile_model(path, tmp_path / "proj", weights="int8", calib=x[:48])
    got, want = vaqf.load(res.project).predict(x[48:]), _float(path, x[48:])
    assert got.shape == want.shape == (32, 3, 8, 8)
    assert np.linalg.norm(got - want) <= 0.05 * np.linalg.norm(want)
    assert "concat" in _ops(res.graph)
    out = vaqf.load(res.project).csim(x[:2])
    assert out.inputs == 2 and out.bit_exact == 2


class _BnNet(nn.Module):
    """BatchNormalization on the input and after a ReLU (where no layer precedes it to fold into)."""

    def __init__(self) -> None:
        super().__init__()
        self.bn_in = nn.BatchNorm1d(10)
        self.fc1 = nn.Linear(10, 24)
        self.bn_mid = nn.BatchNorm1d(24)
        self.fc2 = nn.Linear(24, 4)

    def forward(self, x):
        return self.fc2(self.bn_mid(torch.relu(self.fc1(self.bn_in(x)))))


def _randomise_bn(model: nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm1d):
                n = m.num_features
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.5)
                m.running_var.copy_(torch.rand(n, generator=g) * 2 + 0.3)
                m.weight.copy_(torch.randn(n, generator=g))  # negative gammas included
                m.bias.copy_(torch.randn(n, generator=g) * 0.3)


@pytest.mark.cxx
def test_standalone_batchnorm_folds_forward_into_the_next_layer(tmp_path: Path) -> None:
    torch.manual_seed(3)
    model = _scaled_head(_BnNet(), 2.0)
    _randomise_bn(model, 3)
    path = _export(model, tmp_path / "m.onnx", (10,))
    assert sum(n.op_type == "BatchNormalization" for n in onnx.load(str(path)).graph.node) == 2
    res, _ = _compile_and_check(model, (10,), tmp_path)
    assert sum(n.op == "dense" for n in res.graph.topo()) == 2
    assert [o[0] for o in res.graph.metadata["input_transform"]["x"]["ops"]] == ["mul", "add"]


def _fixed_batch_model(n: int) -> onnx.ModelProto:
    """A Keras-style export: a fixed leading dimension ``n`` on input and output, a Reshape to [n, -1], and a
    Flatten with axis 0 (all batch-1 forms once the batch is free)."""
    rng = np.random.default_rng(5)
    w1 = rng.normal(0, 0.3, (24, 12)).astype(np.float32)
    w2 = rng.normal(0, 1.0, (12, 3)).astype(np.float32)
    inits = [numpy_helper.from_array(np.array([n, 24], np.int64), "target"),
             numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(np.zeros(12, np.float32), "b1"),
             numpy_helper.from_array(w2, "w2")]
    nodes = [helper.make_node("Reshape", ["x", "target"], ["r"], name="flat"),
             helper.make_node("Gemm", ["r", "w1", "b1"], ["h"], name="fc1"),
             helper.make_node("Relu", ["h"], ["a"], name="relu"),
             helper.make_node("MatMul", ["a", "w2"], ["y"], name="fc2")]
    g = helper.make_graph(nodes, "keras", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [n, 4, 6])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [n, 3])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)


def test_a_fixed_leading_dimension_is_read_as_the_batch_axis(caplog) -> None:
    model = _fixed_batch_model(32)
    before = model.SerializeToString()
    x = np.random.default_rng(6).normal(size=(96, 4, 6)).astype(np.float32)
    with caplog.at_level(logging.WARNING):
        g = import_onnx(model, ImportOptions(weights="int8", calib=x[:32]))
    assert "fixed leading dimension of 32" in caplog.text
    assert model.SerializeToString() == before  # the caller's model is not changed
    assert g.inputs[0].info.shape[1:] == (4, 6)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    want = np.concatenate([sess.run(None, {"x": x[i:i + 32]})[0] for i in range(32, 96, 32)])
    _assert_follows(Simulator(g).run([x[32:]]).dequantized[0], want, 0.05)


def test_flatten_axis_zero_on_a_batch_of_one() -> None:
    """Conv, Relu, Flatten(axis=0) on a [1, C, H, W] input (a [1, C*H*W] matrix), Gemm."""
    rng = np.random.default_rng(4)
    inits = [numpy_helper.from_array(rng.normal(0, 0.3, (4, 2, 3, 3)).astype(np.float32), "wc"),
             numpy_helper.from_array(rng.normal(0, 0.1, 4).astype(np.float32), "bc"),
             numpy_helper.from_array(rng.normal(0, 0.5, (3, 100)).astype(np.float32), "wf")]
    nodes = [helper.make_node("Conv", ["x", "wc", "bc"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["a"], name="relu"),
             helper.make_node("Flatten", ["a"], ["f"], name="flatten", axis=0),
             helper.make_node("Gemm", ["f", "wf"], ["y"], name="fc", transB=1)]
    g = helper.make_graph(nodes, "flat0", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 5, 5])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    x = rng.normal(size=(72, 2, 5, 5)).astype(np.float32)
    graph = import_onnx(m, ImportOptions(weights="int8", calib=x[:24]))
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    want = np.concatenate([sess.run(None, {"x": x[i:i + 1]})[0] for i in range(24, 72)])
    _assert_follows(Simulator(graph).run([x[24:]]).dequantized[0], want, 0.05)


def _keras_cnn() -> onnx.ModelProto:
    """What tf2onnx writes for a Keras Conv2D/MaxPool/Dense/softmax classifier: an NHWC input transposed to
    NCHW, the feature map transposed back to NHWC before the flattening Reshape, Dense as MatMul + Add."""
    rng = np.random.default_rng(8)
    inits = [numpy_helper.from_array(rng.normal(0, 0.3, (8, 3, 3, 3)).astype(np.float32), "wc"),
             numpy_helper.from_array(rng.normal(0, 0.1, 8).astype(np.float32), "bc"),
             numpy_helper.from_array(rng.normal(0, 0.25, (128, 5)).astype(np.float32), "wd"),
             numpy_helper.from_array(rng.normal(0, 0.1, 5).astype(np.float32), "bd"),
             numpy_helper.from_array(np.array([-1, 128], np.int64), "flat_shape")]
    nodes = [helper.make_node("Transpose", ["x"], ["xt"], perm=[0, 3, 1, 2], name="to_nchw"),
             helper.make_node("Conv", ["xt", "wc", "bc"], ["c"], pads=[1, 1, 1, 1], name="conv"),
             helper.make_node("Relu", ["c"], ["r"], name="relu"),
             helper.make_node("MaxPool", ["r"], ["p"], kernel_shape=[2, 2], strides=[2, 2], name="pool"),
             helper.make_node("Transpose", ["p"], ["pt"], perm=[0, 2, 3, 1], name="to_nhwc"),
             helper.make_node("Reshape", ["pt", "flat_shape"], ["f"], name="flatten"),
             helper.make_node("MatMul", ["f", "wd"], ["m"], name="dense"),
             helper.make_node("Add", ["m", "bd"], ["logits"], name="dense_bias"),
             helper.make_node("Softmax", ["logits"], ["y"], axis=-1, name="softmax")]
    g = helper.make_graph(nodes, "keras_cnn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8, 8, 3])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 5])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)


@pytest.mark.cxx
def test_keras_channels_last_cnn_with_a_softmax_head(tmp_path: Path) -> None:
    path = tmp_path / "keras.onnx"
    onnx.save(_keras_cnn(), str(path))
    x = np.random.default_rng(9).normal(size=(200, 8, 8, 3)).astype(np.float32)
    res = compile_model(path, tmp_path / "proj", weights="int8", calib=x[:64])
    assert {"softmax", "transpose", "im2col", "pool"} <= _ops(res.graph)
    want = _float(path, x[64:])
    got = vaqf.load(res.project).predict(x[64:])
    err = np.abs(got - want)  # probabilities (8-bit outputs) against the float model's
    assert err.mean() <= 0.01 and err.max() <= 0.08, (err.mean(), err.max())
    _assert_follows(got, want, 0.05)
    out = vaqf.load(res.project).csim(x[:2])
    assert out.inputs == 2 and out.bit_exact == 2


@pytest.mark.cxx
def test_keras_channels_last_cnn_streams_on_the_dataflow_pipeline(tmp_path: Path) -> None:
    """The same network without its softmax on the dataflow architecture: the NHWC input streams as it lies
    (its order pulled back through the transpose to NCHW), bit-exact, cycles as estimated, and the same
    outputs as the engine's."""
    from tests.helpers import assert_cycles_match

    model = _keras_cnn()
    del model.graph.node[-1]
    del model.graph.output[:]
    model.graph.output.append(helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 5]))
    path = tmp_path / "keras_logits.onnx"
    onnx.save(model, str(path))
    x = np.random.default_rng(9).normal(size=(64, 8, 8, 3)).astype(np.float32)
    flow = compile_model(path, tmp_path / "flow", weights="int8", calib=x, arch="dataflow")
    assert flow.design.arch == "dataflow"
    assert_cycles_match(flow.project, inputs=2)
    engine = compile_model(path, tmp_path / "engine", weights="int8", calib=x, arch="engine")
    np.testing.assert_array_equal(vaqf.load(flow.project).predict(x[:8]), vaqf.load(engine.project).predict(x[:8]))
