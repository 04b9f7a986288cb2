"""CNNs: Conv (im2col into the GEMM unit), BatchNorm folding, ReLU, residual add, pooling; a CNN with half
the output channels of its convolutions zeroed (refill-style structured sparsity) compiles to clearly
fewer cycles than the same CNN dense, and its C-simulation is bit-exact."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

import vaqf  # noqa: E402
from vaqf.backend.csim import run_csim  # noqa: E402
from vaqf.sim.simulator import Simulator  # noqa: E402


class SmallResNet(nn.Module):
    def __init__(self, c: int = 32) -> None:
        super().__init__()
        self.c1, self.b1 = nn.Conv2d(1, c, 3, padding=1), nn.BatchNorm2d(c)
        self.c2, self.b2 = nn.Conv2d(c, c, 3, padding=1), nn.BatchNorm2d(c)
        self.c3 = nn.Conv2d(c, 2 * c, 3, stride=2, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(2 * c, 10)

    def forward(self, x):
        x = torch.relu(self.b1(self.c1(x)))
        x = x + torch.relu(self.b2(self.c2(x)))
        x = self.pool(torch.relu(self.c3(x)))
        return self.fc(nn.functional.adaptive_avg_pool2d(x, 1).flatten(1))


def _export(model, path, fold):
    torch.onnx.export(model.eval(), (torch.zeros(1, 1, 16, 16),), str(path), dynamo=False, opset_version=17,
                      input_names=["x"], output_names=["y"], dynamic_axes={"x": {0: "b"}}, do_constant_folding=fold)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    torch.manual_seed(0)
    dense = SmallResNet()
    for bn in (dense.b1, dense.b2):
        bn.running_mean.uniform_(-0.2, 0.2)
        bn.running_var.uniform_(0.5, 2.0)
    pruned = SmallResNet()
    pruned.load_state_dict(dense.state_dict())
    with torch.no_grad():  # refill-style: half of the output channels of conv3 are entirely zero
        pruned.c3.weight[1::2] = 0
    folder = tmp_path_factory.mktemp("cnn")
    _export(dense, folder / "dense.onnx", True)
    _export(pruned, folder / "pruned.onnx", True)
    _export(dense, folder / "bn.onnx", False)  # BatchNormalization kept in the graph
    return folder


@pytest.fixture(scope="module")
def calib():
    return np.random.default_rng(0).normal(size=(64, 1, 16, 16)).astype(np.float32)


@pytest.mark.parametrize("name", ["dense", "bn"])
def test_cnn_close_to_float(models, calib, name):
    graph = vaqf.load_model(models / f"{name}.onnx", weights="int8", act_bits=8, calib=calib)
    ops = {n.op for n in graph.nodes}
    assert {"im2col", "dense", "pool", "add"} <= ops
    x = np.random.default_rng(1).normal(size=(100, 1, 16, 16)).astype(np.float32)
    ref = ort.InferenceSession(str(models / f"{name}.onnx")).run(None, {"x": x})[0]
    got = Simulator(graph).run([x]).dequantized[0]
    assert np.linalg.norm(got - ref) / np.linalg.norm(ref) < 0.05  # measured 0.006


@pytest.mark.cxx
def test_pruned_cnn_fewer_cycles_and_bit_exact(models, calib, tmp_path):
    results = {}
    for name in ("dense", "pruned"):
        graph = vaqf.load_model(models / f"{name}.onnx", weights="int8", act_bits=8, calib=calib)
        res = vaqf.compile_model(graph, tmp_path / name)
        results[name] = res
        out = run_csim(res.project, count=30)
        assert out.bit_exact == 30

    def conv3(res):
        return next(layer["cycles"] for layer in res.design.estimate["layers"]
                    if "c3" in layer["node"] and layer["op"] == "dense")

    # the pruned convolution computes half the rows; both designs are the fastest that fits
    assert conv3(results["pruned"]) < 0.75 * conv3(results["dense"])
    assert results["pruned"].design.estimate["cycles"] < results["dense"].design.estimate["cycles"]
