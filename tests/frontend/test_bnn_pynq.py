"""FINN's BNN-PYNQ networks as Brevitas writes them: the eleven configurations brevitas_examples ships (TFC, SFC,
CNV at w1a1, w1a2, w2a2; LFC at w1a1, w1a2), built here with random weights and random BatchNorm/TensorNorm
statistics (so that every fold matters) and exported with ``export_qonnx``. Each compiles from that file; the
simulator equals qonnx's reference executor on every quantized activation it can be matched with and on the
output within one output step (the TensorNorm tail is float arithmetic); the C-simulation is bit-exact and
its cycle counters meet the estimate on both architectures."""

from __future__ import annotations

import importlib.util
import sys
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest

pytest.importorskip("brevitas")
pytest.importorskip("qonnx")

NETWORKS = ["tfc_1w1a", "tfc_1w2a", "tfc_2w2a", "sfc_1w1a", "sfc_1w2a", "sfc_2w2a", "lfc_1w1a", "lfc_1w2a",
            "cnv_1w1a", "cnv_1w2a", "cnv_2w2a"]


def export_bnn_pynq(name: str, folder: Path) -> Path:
    """``brevitas_examples.bnn_pynq`` network ``name`` with seeded random weights, BatchNorm and TensorNorm
    statistics drawn so that scales of both signs and offsets of several steps occur, as a QONNX file."""
    import torch
    from brevitas.export import export_qonnx
    from brevitas_examples.bnn_pynq.models import model_with_cfg

    torch.manual_seed(0)
    model, _ = model_with_cfg(name, pretrained=False)
    model.eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                n = m.num_features
                m.running_mean.copy_(torch.randn(n, generator=g) * 2)
                m.running_var.copy_(torch.rand(n, generator=g) * 4 + 0.5)
                m.weight.copy_(torch.randn(n, generator=g))  # negative scales negate weight rows
                m.bias.copy_(torch.randn(n, generator=g))
            elif type(m).__name__ == "TensorNorm":
                m.weight.copy_(torch.randn(m.weight.shape, generator=g))
                m.bias.copy_(torch.randn(m.bias.shape, generator=g))
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g))
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
    shape = (1, 3, 32, 32) if name.startswith("cnv") else (1, 1, 28, 28)
    path = folder / f"{name}.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        export_qonnx(model, torch.rand(shape), str(path))
    return path


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bnn_pynq")
    cache: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in cache:
            cache[name] = export_bnn_pynq(name, folder)
        return cache[name]

    return get


def _qonnx_run(path: Path, x: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """qonnx's executor, sample by sample: the outputs [N, ...] and the full context of the first sample."""
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.core.onnx_exec import execute_onnx

    mw = ModelWrapper(str(path))
    inp, out = mw.graph.input[0].name, mw.graph.output[0].name
    first = execute_onnx(mw, {inp: x[:1]}, return_full_exec_context=True)
    rest = [execute_onnx(mw, {inp: x[i:i + 1]})[out] for i in range(1, len(x))]
    return np.concatenate([first[out]] + rest), first


@pytest.mark.slow
@pytest.mark.parametrize("name", NETWORKS)
def test_bnn_pynq_simulator_equals_qonnx_executor(exported, name):
    from vaqf.api import load_model
    from vaqf.passes.pipeline import optimize
    from vaqf.sim.simulator import Simulator

    path = exported(name)
    graph = load_model(path)
    shape = graph.inputs[0].info.sample_shape
    x = np.random.default_rng(3).random((6,) + shape, dtype=np.float32)
    ref, ctx = _qonnx_run(path, x)
    res = Simulator(graph).run([x], trace=True)
    out = graph.outputs[0]
    step = float(np.max(out.info.scale))
    err = np.abs(res.dequantized[0].reshape(ref.shape) - ref)
    assert err.max() <= step, f"output off by {err.max() / step:.2f} steps"
    # integer activations: exactly qonnx's, wherever a value keeps the file's tensor name
    model = onnx.load(path)
    quantized = {n.output[0] for n in model.graph.node if n.op_type in ("Quant", "BipolarQuant", "MaxPool")}
    values = {v.name: v for n in graph.nodes for v in n.outputs}
    matched = 0
    for tensor in sorted(quantized & set(res.trace) & set(values)):
        info = values[tensor].info
        got = info.dequantize(res.trace[tensor][:1].reshape((1,) + info.shape))
        np.testing.assert_array_equal(got.reshape(ctx[tensor].shape), ctx[tensor], err_msg=tensor)
        matched += 1
    assert matched >= 1
    # every BatchNormalization, TensorNorm op and bipolar quantizer went into a dense layer's constants
    optimize(graph)
    assert {n.op for n in graph.nodes} <= {"dense", "im2col", "pool", "reshape", "transpose"}, \
        sorted({n.op for n in graph.nodes})
    if name.endswith("w1a1"):
        assert graph.metadata["input_transform"][graph.inputs[0].name]["ops"][0][0] == "mul"


@pytest.mark.slow
@pytest.mark.cxx
@pytest.mark.parametrize("name, arch", [("tfc_2w2a", "engine"), ("tfc_1w1a", "dataflow"), ("cnv_1w1a", "engine"),
                                        ("cnv_2w2a", "dataflow")])
def test_bnn_pynq_csim_is_bit_exact_and_meets_its_cycles(exported, tmp_path, name, arch):
    from tests.helpers import assert_cycles_match
    from vaqf.api import compile_model

    res = compile_model(exported(name), tmp_path / "proj", arch=arch)
    assert res.design.arch == arch
    assert_cycles_match(res.project, inputs=1)


def test_bnn_pynq_driver_quantizes_like_the_simulator(exported, tmp_path, monkeypatch):
    """The PYNQ driver's host-side quantization (the 2x - 1 affine, then the sign of a bipolar input) equals
    the simulator's, values on the sign boundary included."""
    from tests.backend import fake_pynq
    from vaqf.api import compile_model
    from vaqf.sim.simulator import Simulator

    res = compile_model(exported("tfc_1w1a"), tmp_path / "proj", arch="engine")
    monkeypatch.setitem(sys.modules, "pynq", fake_pynq)
    spec = importlib.util.spec_from_file_location("vaqf_driver_bnn", res.project / "driver" / "vaqf_driver.py")
    drv = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(drv)
    x = np.random.default_rng(0).random((4, 1, 28, 28), dtype=np.float32)
    x[0, 0, 0, :4] = [0.5, np.nextafter(np.float32(0.5), np.float32(0)), 0.0, 1.0]
    want = Simulator(res.graph).quantize_inputs([x])[0]
    np.testing.assert_array_equal(drv.quantize(x), want)
    assert set(np.unique(want)) == {-1, 1}
