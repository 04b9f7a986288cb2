"""The cost model's cycles are the generated code's cycles: the C-simulation's counters (hls/vaqf/cycles.h)
against design.json's estimate, within 3% per layer and per frame, on the example MLP, a CNN with residual
adds and pooling, a ViT with non-uniform blocks, and a DeiT-tiny; each run is also bit-exact."""

from __future__ import annotations

import numpy as np
import pytest

import vaqf
from tests.helpers import assert_cycles_match
from vaqf.examples import example_model

TOL = 0.03


@pytest.mark.cxx
@pytest.mark.slow
def test_example_mlp_cycles_match_the_estimate(tmp_path):
    res = vaqf.compile_model(example_model("mlp"), tmp_path / "mlp", board="zcu102")
    out = assert_cycles_match(res.project, TOL)
    assert {c.unit for c in out.cycles} >= {"top", "dense_binary", "dense_int8", "dense_int4"}


@pytest.mark.cxx
@pytest.mark.slow
def test_cnn_cycles_match_the_estimate(tmp_path):
    torch = pytest.importorskip("torch")
    from tests.integration.test_cnn import SmallResNet, _export

    torch.manual_seed(0)
    path = tmp_path / "cnn.onnx"
    _export(SmallResNet(8), path, True)
    calib = np.random.default_rng(0).normal(size=(16, 1, 16, 16)).astype(np.float32)
    res = vaqf.compile_model(path, tmp_path / "cnn", board="zcu102", calib=calib)
    out = assert_cycles_match(res.project, TOL)
    assert {"mover", "pool"} & {c.unit for c in out.cycles}


@pytest.mark.cxx
@pytest.mark.slow
def test_nonuniform_vit_cycles_match_the_estimate(tmp_path):
    torch = pytest.importorskip("torch")
    from vaqf.frontend.torch.deit import deit, export_onnx, trained_magnitudes

    torch.manual_seed(0)
    model = deit("custom", img_size=32, patch_size=8, embed_dim=48, depth=3, block_heads=[1, 2, 4],
                 block_mlp_dims=[16, 96, 32], num_classes=10)
    trained_magnitudes(model)
    path = tmp_path / "vit.onnx"
    export_onnx(model, str(path))
    calib = np.random.default_rng(1).normal(size=(8, 3, 32, 32)).astype(np.float32)
    res = vaqf.compile_model(path, tmp_path / "vit", board="zcu102", weights="binary", act_bits=8, calib=calib)
    out = assert_cycles_match(res.project, TOL)
    assert {"matmul", "softmax", "layernorm", "dense_binary"} <= {c.unit for c in out.cycles}


@pytest.mark.cxx
@pytest.mark.slow
def test_deit_tiny_cycles_match_the_estimate(tmp_path):
    torch = pytest.importorskip("torch")
    from vaqf.frontend.torch.deit import deit, export_onnx, trained_magnitudes

    torch.manual_seed(0)
    model = deit("tiny")
    trained_magnitudes(model)
    path = tmp_path / "deit_tiny.onnx"
    export_onnx(model, str(path))
    calib = np.random.default_rng(1).normal(size=(2, 3, 224, 224)).astype(np.float32)
    res = vaqf.compile_model(path, tmp_path / "deit", board="zcu102", weights="binary", act_bits=8, calib=calib)
    assert_cycles_match(res.project, TOL)


def _eltwise_io_graph(in_shape: tuple[int, ...]):
    """uint8 input -> relu -> output: the top's input and output copies with little else around them."""
    from tests.helpers import add_relu
    from vaqf.ir import Graph, IntType, TensorInfo

    g = Graph("io")
    x = g.add_input("x", TensorInfo(in_shape, IntType(8, signed=False), [0.0625], 3))
    g.outputs.append(add_relu(g, x).outputs[0])
    g.verify()
    return g


@pytest.mark.cxx
@pytest.mark.parametrize("shape,lanes,axi", [((3, 8), 4, 128), ((3, 8), 2, 128), ((3, 8), 1, 128),
                                             ((2, 7), 16, 128), ((3, 8), 4, 64), ((3, 8), 4, 32)])
def test_io_copies_whole_words_where_rows_and_lanes_allow(tmp_path, shape, lanes, axi):
    """Inputs and outputs cross the AXI port as whole DDR words (4 int32 inputs or 2 int64 outputs per
    128-bit word), one word a cycle when the row length and the lane count are multiples of the elements
    per word, else one element a cycle; 32-bit ports carry one element per word. Counted = estimated
    exactly, bit-exact."""
    import dataclasses

    from vaqf.backend.emit import write_project
    from vaqf.dse.search import design_for_knobs
    from vaqf.hw.board import get_board
    from vaqf.hw.model import io_cycles, io_port

    g = _eltwise_io_graph(shape)
    board = dataclasses.replace(get_board("zcu102"), axi_bits=axi)
    design = design_for_knobs(g, board, {"eltwise": {"lanes": lanes}})
    project = write_project(g, design, tmp_path / "p", force=True)
    res = assert_cycles_match(project, tol=0.0, inputs=3)
    assert res.bit_exact == 3
    io = next(c for c in res.cycles if c.layer == "io")
    assert io.measured == io_cycles(g, lanes, axi)
    n = int(np.prod(shape))
    whole_in, whole_out = (io_port(v, lanes, axi, b)["whole"] for v, b in ((g.inputs[0], 32), (g.outputs[0], 64)))
    expect_in = -(-n // (axi // 32)) if whole_in else n
    expect_out = -(-n // (axi // 64)) if whole_out else n
    assert io.measured == expect_in + expect_out + 2 * 64
    assert (whole_in, whole_out) == {((3, 8), 4, 128): (1, 1), ((3, 8), 2, 128): (0, 1), ((3, 8), 1, 128): (0, 0),
                                     ((2, 7), 16, 128): (0, 0), ((3, 8), 4, 64): (1, 1),
                                     ((3, 8), 4, 32): (0, 0)}[(shape, lanes, axi)]
