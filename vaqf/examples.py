"""Built-in example models (``vaqf compile --example NAME``) and the QONNX/QDQ MLP builders behind them.

``mlp`` is a 64-64-32-10 classifier of scikit-learn's 8x8 handwritten digits in QONNX form: 8-bit
unsigned input and activations, 8-bit first layer, binary hidden layer, 4-bit head. Its weights were
trained with quantization-aware training (``examples/train_digits_mlp.py``) and ship in
``vaqf/data/mlp_digits.npz``.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from vaqf.errors import VaqfError

QONNX_DOMAIN = "qonnx.custom_op.general"
EXAMPLES = {"mlp": "QONNX MLP 64-64-32-10 for 8x8 digits (int8 / binary / int4 weights, 8-bit activations)"}
ONNX_IR_VERSION = 10  # readable by onnxruntime
OPSET = 17


def _const(name: str, value: np.ndarray | float) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(value, dtype=np.float32), name)


def qonnx_mlp(weights: list[np.ndarray], biases: list[np.ndarray], weight_quant: list[str], act_bits: int = 8,
              in_scale: float = 1.0 / 16, act_scales: list[float] | None = None,
              name: str = "mlp") -> onnx.ModelProto:
    """A QONNX MLP: Quant(input) -> [MatMul(Quant/BipolarQuant(W)) + b -> Relu -> Quant]* -> MatMul + b.

    ``weights[i]`` is [in, out] (MatMul layout); ``weight_quant[i]`` is "binary" or "intB" (per-output-channel
    symmetric scales); activations are unsigned ``act_bits`` after each ReLU.
    """
    nodes: list[onnx.NodeProto] = []
    inits: list[onnx.TensorProto] = []
    k = weights[0].shape[0]
    inits += [_const("in_scale", in_scale), _const("zero", 0.0), _const("act_bits", float(act_bits))]
    nodes.append(helper.make_node("Quant", ["x", "in_scale", "zero", "act_bits"], ["xq"], domain=QONNX_DOMAIN,
                                  signed=0, narrow=0, rounding_mode="ROUND", name="quant_in"))
    cur = "xq"
    for i, (w, b, wq) in enumerate(zip(weights, biases, weight_quant, strict=True)):
        inits.append(_const(f"w{i}", w))
        if wq == "binary":
            scale = np.abs(w).mean(axis=0, keepdims=True)
            inits.append(_const(f"w{i}_scale", scale))
            nodes.append(helper.make_node("BipolarQuant", [f"w{i}", f"w{i}_scale"], [f"w{i}q"], domain=QONNX_DOMAIN,
                                          name=f"wquant{i}"))
        else:
            bits = int(wq[3:])
            scale = np.abs(w).max(axis=0, keepdims=True) / (2 ** (bits - 1) - 1)
            inits += [_const(f"w{i}_scale", np.maximum(scale, 1e-8)), _const(f"w{i}_bits", float(bits))]
            nodes.append(helper.make_node("Quant", [f"w{i}", f"w{i}_scale", "zero", f"w{i}_bits"], [f"w{i}q"],
                                          domain=QONNX_DOMAIN, signed=1, narrow=1, rounding_mode="ROUND",
                                          name=f"wquant{i}"))
        inits.append(_const(f"b{i}", b))
        nodes.append(helper.make_node("MatMul", [cur, f"w{i}q"], [f"mm{i}"], name=f"fc{i}"))
        nodes.append(helper.make_node("Add", [f"mm{i}", f"b{i}"], [f"fc{i}_out"], name=f"bias{i}"))
        cur = f"fc{i}_out"
        if i < len(weights) - 1:
            nodes.append(helper.make_node("Relu", [cur], [f"relu{i}"], name=f"relu{i}"))
            s = act_scales[i] if act_scales else 1.0 / 8
            inits.append(_const(f"act{i}_scale", s))
            nodes.append(helper.make_node("Quant", [f"relu{i}", f"act{i}_scale", "zero", "act_bits"], [f"act{i}"],
                                          domain=QONNX_DOMAIN, signed=0, narrow=0, rounding_mode="ROUND",
                                          name=f"quant_act{i}"))
            cur = f"act{i}"
    nodes.append(helper.make_node("Identity", [cur], ["logits"], name="out"))
    graph = helper.make_graph(nodes, name, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", k])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT,
                                                             ["batch", weights[-1].shape[1]])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET),
                                                    helper.make_opsetid(QONNX_DOMAIN, 1)],
                              producer_name="vaqf")
    model.ir_version = ONNX_IR_VERSION
    return model


def _digits_weights() -> dict[str, np.ndarray]:
    path = resources.files("vaqf") / "data" / "mlp_digits.npz"
    try:
        with resources.as_file(path) as p, np.load(p) as data:
            return {k: data[k] for k in data.files}
    except FileNotFoundError as e:
        raise VaqfError("the built-in example's weights (vaqf/data/mlp_digits.npz) are missing") from e


def example_model(name: str) -> onnx.ModelProto:
    if name != "mlp":
        raise VaqfError(f"unknown example {name!r}; available: {', '.join(EXAMPLES)}")
    d = _digits_weights()
    n = int(d["layers"])
    return qonnx_mlp([d[f"w{i}"] for i in range(n)], [d[f"b{i}"] for i in range(n)],
                     [str(q) for q in d["quant"]], int(d["act_bits"]), float(d["in_scale"]),
                     [float(s) for s in d["act_scales"]], name="mlp_digits")


def example_inputs(name: str) -> tuple[np.ndarray, np.ndarray] | None:
    """Held-out inputs and labels shipped with an example (for accuracy checks), if any."""
    if name != "mlp":
        return None
    d = _digits_weights()
    return d["test_x"].astype(np.float32), d["test_y"].astype(np.int64)


def save_model(model: onnx.ModelProto, path: str | Path) -> Path:
    p = Path(path)
    onnx.save(model, str(p))
    return p
