"""Float models with Sigmoid, Tanh, HardSigmoid, HardSwish, LeakyRelu and Selu: each becomes a lookup table
(op ``lut``) whose every entry equals PyTorch's function at that input integer, requantized; classifiers with
these activations agree with the float model; the C-simulation equals the simulator."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest

import vaqf
from vaqf.api import compile_model

torch = pytest.importorskip("torch")
nn = torch.nn

#: the activation module, the ONNX op it exports to, the table's function name and parameters
ACTIVATIONS = {
    "sigmoid": (nn.Sigmoid, "Sigmoid", ()),
    "tanh": (nn.Tanh, "Tanh", ()),
    "hard_sigmoid": (nn.Hardsigmoid, "HardSigmoid", (1 / 6, 0.5)),
    "hard_swish": (nn.Hardswish, "HardSwish", ()),
    "leaky_relu": (lambda: nn.LeakyReLU(0.1), "LeakyRelu", (0.1,)),
    "selu": (nn.SELU, "Selu", (1.6732632423543772, 1.0507009873554805)),
}


def _export(model: nn.Module, path: Path, features: int) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model.eval(), (torch.zeros(1, features),), str(path), dynamo=False, opset_version=17,
                          input_names=["x"], output_names=["y"], dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}})
    m = onnx.load(str(path))
    m.ir_version = min(m.ir_version, 10)
    onnx.save(m, str(path))
    return path


@pytest.mark.parametrize("fn", sorted(ACTIVATIONS))
def test_every_table_entry_is_torchs_function_requantized(fn: str, tmp_path: Path) -> None:
    make, op_type, params = ACTIVATIONS[fn]
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 24), make(), nn.Linear(24, 4))
    path = _export(model, tmp_path / f"{fn}.onnx", 16)
    assert op_type in {n.op_type for n in onnx.load(str(path)).graph.node}
    calib = np.random.default_rng(0).normal(0, 1.5, size=(64, 16)).astype(np.float32)
    res = compile_model(path, tmp_path / "proj", weights="int8", calib=calib)
    (lut,) = [n for n in res.graph.topo() if n.op == "lut"]
    a = lut.attrs
    assert a["fn"] == fn
    np.testing.assert_allclose(a["params"], params)
    x_info = lut.inputs[0].info
    q = np.arange(a["in_min"], a["in_min"] + a["table"].size)
    real = torch.from_numpy(float(x_info.scale[0]) * (q - x_info.zero_point).astype(np.float64))
    y = model[1](real).numpy()
    qt = a["qtype"]
    expected = np.clip(np.rint(y / float(a["scale"][0])) + a["zero_point"], qt.min, qt.max).astype(np.int64)
    np.testing.assert_array_equal(a["table"], expected)
    if fn in ("sigmoid", "hard_sigmoid"):
        assert not qt.signed  # outputs in [0, 1] use every code
    # the table's output feeds the next layer: the simulated logits follow the float model
    out = vaqf.load(res.project).predict(calib[:32])
    want = model(torch.from_numpy(calib[:32])).detach().numpy()
    assert np.abs(out - want).max() <= 0.05 * np.ptp(want)


def _classes(rng: np.random.Generator, centers: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    y = rng.integers(0, len(centers), size=n)
    return (centers[y] + rng.normal(0, 0.7, size=(n, centers.shape[1]))).astype(np.float32), y


@pytest.mark.parametrize("hidden,head", [("tanh", nn.Sigmoid), ("leaky_relu", lambda: nn.Softmax(-1)),
                                         ("selu", nn.Hardsigmoid)])
def test_classifier_heads_agree_with_the_float_model(hidden: str, head, tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    torch.manual_seed(7)
    centers = rng.normal(0, 1.5, size=(5, 16))
    x, y = _classes(rng, centers, 800)
    model = nn.Sequential(nn.Linear(16, 32), ACTIVATIONS[hidden][0](), nn.Linear(32, 5))
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    for _ in range(200):
        opt.zero_grad()
        nn.functional.cross_entropy(model(torch.from_numpy(x)), torch.from_numpy(y)).backward()
        opt.step()
    full = nn.Sequential(*model, head())
    test_x, _ = _classes(rng, centers, 200)
    want = full(torch.from_numpy(test_x)).detach().numpy().argmax(1)
    res = compile_model(_export(full, tmp_path / "m.onnx", 16), tmp_path / "proj", weights="int8", calib=x[:256])
    got = vaqf.load(res.project).predict(test_x).argmax(1)
    assert float((got == want).mean()) >= 0.98


@pytest.mark.cxx
def test_csim_of_a_chain_of_tables_is_bit_exact(tmp_path: Path) -> None:
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(16, 24), nn.LeakyReLU(0.2), nn.Linear(24, 24), nn.Hardswish(),
                          nn.Linear(24, 16), nn.Tanh(), nn.Linear(16, 8), nn.SELU(), nn.Linear(8, 4), nn.Sigmoid())
    calib = np.random.default_rng(3).normal(0, 1.5, size=(64, 16)).astype(np.float32)
    res = compile_model(_export(model, tmp_path / "chain.onnx", 16), tmp_path / "proj", weights="int8",
                        calib=calib)
    assert sorted(n.attrs["fn"] for n in res.graph.topo() if n.op == "lut") == [
        "hard_swish", "leaky_relu", "selu", "sigmoid", "tanh"]
    result = vaqf.load(res.project).csim(calib[:6])
    assert result.inputs == 6 and result.bit_exact == 6
