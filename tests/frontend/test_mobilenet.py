"""Brevitas's quantized MobileNetV1 (``brevitas_examples.imagenet_classification``, 4-bit weights and
activations) as ``export_qonnx`` writes it: per-channel activation scales ahead of every depthwise convolution
(set from statistics by one training-mode pass, as training leaves them), BatchNormalization after every
convolution, TruncAvgPool2d's ``Trunc`` and the classifier's 32-bit bias quantizer. Width 0.25 at the
network's own 224 x 224 input. Every quantized activation of the simulator equals qonnx's reference executor
exactly; the C-simulation is bit-exact and its cycle counters meet the estimate."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest

pytest.importorskip("brevitas")
pytest.importorskip("qonnx")
torch = pytest.importorskip("torch")


def export_mobilenet(path: Path, width: float = 0.25) -> Path:
    from configparser import ConfigParser

    from brevitas.export import export_qonnx
    from brevitas_examples.imagenet_classification.models.mobilenetv1 import quant_mobilenet_v1

    torch.manual_seed(0)
    cfg = ConfigParser()
    cfg.read_dict({"MODEL": {"ARCH": "quant_mobilenet_v1", "WIDTH_SCALE": str(width)},
                   "QUANT": {"BIT_WIDTH": "4", "ROUND_AVG_POOL": "FALSE"}})
    model = quant_mobilenet_v1(cfg)
    with torch.no_grad():
        model.train()(torch.randn(2, 3, 224, 224))  # the activation scales start from statistics: one per channel
        model.eval()
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_var.uniform_(0.5, 2.0)
                m.running_mean.normal_(0, 0.1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        export_qonnx(model, args=torch.randn(1, 3, 224, 224), export_path=str(path))
    return path


@pytest.fixture(scope="module")
def mobilenet(tmp_path_factory) -> Path:
    return export_mobilenet(tmp_path_factory.mktemp("mobilenet") / "mobilenet_v1_4b.onnx")


def _inputs(n: int) -> np.ndarray:
    """Images on the input quantizer's grid (the float input feeds the first convolution in the file; vaqf's
    calibrated 8-bit input quantizer has scale 2**-6 on these), so both run the same integers."""
    k = np.random.default_rng(0).integers(-127, 128, size=(n, 3, 224, 224))
    k[0, 0, 0, :2] = [-127, 127]
    return (k * 2.0**-6).astype(np.float32)


def _quantized_pairs(model: onnx.ModelProto):
    """(quantizer node, the IR value holding its integers): a quantizer after Relu/BatchNormalization of a
    convolution lives in the convolution's output; Trunc in the pooling's."""
    init = {t.name for t in model.graph.initializer}
    prod = {o: n for n in model.graph.node for o in n.output}
    for n in model.graph.node:
        if n.op_type not in ("Quant", "Trunc") or n.input[0] in init:
            continue
        src, p = n.input[0], prod.get(n.input[0])
        while p is not None and p.op_type in ("Relu", "BatchNormalization"):
            src, p = p.input[0], prod.get(p.input[0])
        yield n, (src if n.op_type == "Trunc" or (p is not None and p.op_type == "Conv") else n.output[0])


@pytest.mark.slow
def test_mobilenet_v1_simulator_equals_qonnx_executor(mobilenet):
    from onnx import numpy_helper

    from tests.frontend.test_bnn_pynq import _qonnx_run
    from vaqf.frontend.onnx_import import ImportOptions, import_onnx
    from vaqf.sim.simulator import Simulator

    model = onnx.load(str(mobilenet))
    assert {"Trunc", "BatchNormalization", "AveragePool"} <= {n.op_type for n in model.graph.node}
    init = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    x = _inputs(2)
    graph = import_onnx(mobilenet, ImportOptions(calib=x))
    assert float(graph.inputs[0].info.scale[0]) == 2.0**-6
    ref, ctx = _qonnx_run(mobilenet, x)
    res = Simulator(graph).run([x], trace=True)
    per_channel = 0
    for q, value in _quantized_pairs(model):
        scale = init[q.input[1] if q.op_type == "Quant" else q.input[4]]
        per_channel += np.size(scale) > 1 and np.ptp(scale) > 0
        want = np.rint(ctx[q.output[0]] / scale).astype(np.int64)
        np.testing.assert_array_equal(res.trace[value][:1].reshape(want.shape), want, err_msg=q.name)
    assert per_channel >= 10
    got = res.dequantized[0].reshape(ref.shape)
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-5 * np.abs(ref).max())


@pytest.mark.slow
@pytest.mark.cxx
def test_mobilenet_v1_csim_is_bit_exact_and_meets_its_cycles(mobilenet, tmp_path, caplog):
    from tests.helpers import assert_cycles_match
    from vaqf.api import compile_model

    with caplog.at_level("WARNING"):
        res = compile_model(mobilenet, tmp_path / "proj", calib=_inputs(2))
    # the calibration data was needed (the float input's quantizer): no advice to leave it out
    assert "leave out --calib" not in caplog.text and "model's own quantizers" in caplog.text
    ops = {n.op for n in res.graph.topo()}
    assert {"dense", "im2col", "pool"} <= ops and "requant" not in ops  # every requantization in an epilogue
    assert_cycles_match(res.project, inputs=1)


def test_per_channel_activation_scales_into_a_channel_mixing_layer_are_refused(tmp_path):
    """A per-channel activation quantizer feeding an ordinary convolution: refused by name (only depthwise
    convolutions, pooling and Relu keep channels apart)."""
    import brevitas.nn as qnn
    from brevitas.export import export_qonnx

    from vaqf.errors import UnsupportedOpError
    from vaqf.frontend.onnx_import import import_onnx

    torch.manual_seed(0)
    model = torch.nn.Sequential(
        qnn.QuantIdentity(return_quant_tensor=True),
        qnn.QuantConv2d(3, 8, 3, weight_bit_width=4),
        qnn.QuantReLU(bit_width=4, per_channel_broadcastable_shape=(1, 8, 1, 1),
                      scaling_stats_permute_dims=(1, 0, 2, 3),
                      scaling_per_output_channel=True, return_quant_tensor=False),
        qnn.QuantConv2d(8, 4, 3, weight_bit_width=4))
    with torch.no_grad():
        model.train()(torch.randn(2, 3, 12, 12))  # per-channel scales from statistics
    model.eval()
    path = tmp_path / "mix.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        export_qonnx(model, args=torch.randn(1, 3, 12, 12), export_path=str(path))
    with pytest.raises(UnsupportedOpError, match=r"Conv.*per-channel activation scales.*group=1.*depthwise"):
        import_onnx(path)
