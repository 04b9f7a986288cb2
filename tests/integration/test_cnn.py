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

    from vaqf.hw.board import get_board
    from vaqf.units import get_unit

    def conv3(res, knobs):
        node = next(n for n in res.graph.nodes if n.op == "dense" and "c3" in n.name)
        return get_unit("gemm").cost(node, knobs, get_board("zcu102")).cycles

    # the pruned convolution computes half the rows; its outputs scatter one per cycle through the row
    # table, so the saving shows where the MAC steps, not the drain, set a row's pace (PE <= steps)
    knobs = {"pe": 4, "simd": 4, "epi": 1}
    assert conv3(results["pruned"], knobs) < 0.75 * conv3(results["dense"], knobs)
    # the fastest design that fits is never slower for the pruning: the all-rows form stays available
    assert results["pruned"].design.estimate["cycles"] <= results["dense"].design.estimate["cycles"]


# ---- structured sparsity beyond skipped rows (passes.sparsity) -------------------------------------


@pytest.mark.cxx
def test_downstream_channel_removal_saves_cycles_and_bit_exact(tmp_path):
    """c1 and c2 lose the same 4 of 8 output channels (weights and bias zero, as a refill-pruned net with
    masked BatchNorm exports them): the residual add's channels are constant, so c2's and c3's im2col sweep
    half the channels and their GEMMs half the columns. Against the same graph with only the pruned rows
    skipped (no sparsity passes), at the same knobs, that is clearly fewer cycles; csim is bit-exact."""
    from tests.passes.test_sparsity import cnn, compiled
    from vaqf.hw.board import get_board
    from vaqf.hw.model import estimate

    model = cnn(np.random.default_rng(7), {"c1": [0, 1, 2, 3], "c2": [0, 1, 2, 3]}, size=16)
    rows_only, full = compiled(model, sparsity=False), compiled(model)
    res = vaqf.compile_model(full, tmp_path / "p")
    board = get_board("zcu102")
    with_removal = estimate(full, board, res.design.knobs)
    without = estimate(rows_only, board, res.design.knobs)
    by_node = {(layer.node, layer.op): layer.cycles for layer in with_removal.layers}
    before = {(layer.node, layer.op): layer.cycles for layer in without.layers}
    for conv in ("c2", "c3"):
        assert by_node[(conv, "dense")] < 0.8 * before[(conv, "dense")], conv
        assert by_node[(f"{conv}_im2col", "im2col")] < 0.6 * before[(f"{conv}_im2col", "im2col")], conv
    assert with_removal.cycles < 0.85 * without.cycles
    # the report compares against the model with its sparsity ignored (pruned rows computed too)
    import json

    saved = json.loads((res.project / "report" / "report.json").read_text())["sparsity"]
    assert saved["dense_cycles"] >= without.cycles > saved["cycles"] == with_removal.cycles
    assert "less latency" in (res.project / "report.md").read_text()
    assert 'id="sparsity"' in (res.project / "report.html").read_text()
    out = run_csim(res.project, count=20)
    assert out.bit_exact == 20


@pytest.mark.cxx
def test_group_sparse_layer_runs_as_dense_blocks_bit_exact(tmp_path):
    """c3 is group-sparse (two groups of 4 output channels, each reading its 4 input channels): the IR
    carries two dense blocks; with PE = 4 the cost model runs c3 block by block over gathered columns, in
    fewer cycles than its row-skipping form, and the C-simulation of that kernel is bit-exact."""
    from tests.passes.test_sparsity import cnn, compiled
    from vaqf.dse.design import Design
    from vaqf.hw.board import get_board
    from vaqf.ops.dense import block_list
    from vaqf.units import get_unit

    graph = compiled(cnn(np.random.default_rng(8), {}, blocks3=True, size=16))
    c3 = next(n for n in graph.nodes if n.name == "c3")
    assert len(block_list(c3)) == 2
    first = vaqf.compile_model(graph, tmp_path / "fast")
    knobs = {u: {k: (4 if k in ("simd", "lanes") else v) for k, v in kn.items()}
             for u, kn in first.design.knobs.items()}
    knobs["dense_int8"] = {"pe": 4, "simd": 4, "epi": 1}  # every unit reads words of 4 lanes
    pinned = Design(first.design.board, first.design.act_bits, knobs, first.design.clock_mhz,
                    first.design.word_bits)
    res = vaqf.compile_model(graph, tmp_path / "blocks", design=pinned)
    board = get_board("zcu102")
    gemm = get_unit("gemm")
    assert gemm.mode(c3, knobs["dense_int8"], board) == "blocks"
    blocked = next(layer["cycles"] for layer in res.design.estimate["layers"] if layer["node"] == "c3")
    blocks = c3.attrs.pop("blocks")
    plain = gemm.cost(c3, knobs["dense_int8"], board).cycles
    c3.attrs["blocks"] = blocks
    assert blocked < 0.8 * plain
    sources = "".join(p.read_text() for p in (res.project / "src").glob("*.*"))
    assert sources.count("/*n_blocks*/ 2") == 1  # c3 (the classifier's single block may go either way)
    out = run_csim(res.project, count=20)
    assert out.bit_exact == 20
