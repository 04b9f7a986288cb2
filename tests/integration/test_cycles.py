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
