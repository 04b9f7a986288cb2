"""Export a quantization-aware model to QONNX: ``Quant`` nodes for activations and integer weights,
``BipolarQuant`` for binary weights, carrying the exact float32 scales the PyTorch model computes with.

The TorchScript-based exporter writes each quantizer through an ``autograd.Function`` whose ``symbolic``
emits the QONNX node (as Brevitas does; :mod:`vaqf.frontend.torch.qonnx_nodes`). Weights are written in
MatMul layout ([in, out], scale [1, out]) so no Transpose separates a weight from its quantizer. Integer
weights and biases (on the accumulator's grid) are written already quantized, so the importer's rounding
cannot disagree with PyTorch's; so are the constants added to activations (class token, position embedding),
as the importer would quantize them. Afterwards every ``Constant`` node becomes an initializer (the importer
reads a quantizer's parameters before it reaches the node) and the IR version is lowered to one onnxruntime
and qonnx read.
``vaqf.load_model(path)`` imports the file with no flags.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import numpy_helper
from torch import nn

from vaqf.frontend.torch.qat import QuantLinear, weight_layers
from vaqf.frontend.torch.qonnx_nodes import QONNX_DOMAIN

log = logging.getLogger(__name__)

MAX_IR_VERSION = 10  # onnxruntime 1.31 reads up to 13, qonnx's tools up to 10
OPSET = 17


@torch.no_grad()
def _freeze_weights(model: nn.Module) -> list[nn.Module]:
    """Weights and scales of each quantized layer as constants in the exported layout."""
    frozen = []
    for layer in weight_layers(model):
        if layer.mode == "float":
            continue
        scale = layer.weight_scale().float()
        w = layer.weight.detach().float() if layer.mode == "binary" else layer.integer_weight() * scale
        if isinstance(layer, QuantLinear):  # MatMul layout
            w, scale = w.t().contiguous(), scale.reshape(1, -1).contiguous()
        bias = layer.quantized_bias()
        layer._export_weight = (w.clone(), scale.clone(), bias.detach().clone() if bias is not None else None)
        frozen.append(layer)
    return frozen


def _constants_to_initializers(model: onnx.ModelProto) -> None:
    """Constant nodes (and Identity copies of initializers) become initializers."""
    g = model.graph
    inits = {t.name for t in g.initializer}
    rename: dict[str, str] = {}
    kept = []
    for n in g.node:
        if n.op_type == "Constant" and n.domain in ("", "ai.onnx") and len(n.attribute) == 1 \
                and n.attribute[0].name == "value":
            t = onnx.TensorProto()
            t.CopyFrom(n.attribute[0].t)
            t.name = n.output[0]
            g.initializer.append(t)
            inits.add(t.name)
            continue
        if n.op_type == "Identity" and n.input[0] in inits and n.output[0] not in {o.name for o in g.output}:
            rename[n.output[0]] = n.input[0]
            continue
        kept.append(n)
    for n in kept:
        for i, name in enumerate(n.input):
            if name in rename:
                n.input[i] = rename[name]
    del g.node[:]
    g.node.extend(kept)


def export_qonnx(model: nn.Module, path: str | Path, example: torch.Tensor | None = None,
                 opset: int = OPSET) -> Path:
    """Write a quantization-aware model (``quantize_vit``) as QONNX with a dynamic batch axis.

    ``example`` is one input (default: zeros shaped by ``model.cfg``). Returns the path.
    """
    path = Path(path)
    if example is None:
        cfg = model.cfg
        example = torch.zeros(1, cfg.in_chans, cfg.img_size, cfg.img_size)
    was_training = model.training
    model.eval()
    frozen = _freeze_weights(model)
    if hasattr(model, "quantized_constants"):
        with torch.no_grad():
            model._export_constants = tuple(t.detach().clone() for t in model.quantized_constants())
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the exporter warns about custom domains and its own deprecation
            torch.onnx.export(model, (example,), str(path), dynamo=False, opset_version=opset, input_names=["x"],
                              output_names=["logits"], dynamic_axes={"x": {0: "batch"}, "logits": {0: "batch"}},
                              custom_opsets={QONNX_DOMAIN: 1})
    finally:
        for layer in frozen:
            del layer._export_weight
        if hasattr(model, "_export_constants"):
            del model._export_constants
        model.train(was_training)
    proto = onnx.load(str(path))
    _constants_to_initializers(proto)
    proto.ir_version = min(proto.ir_version, MAX_IR_VERSION)
    proto.producer_name = "vaqf.frontend.torch"
    onnx.save(proto, str(path))
    n_quant = sum(1 for n in proto.graph.node if n.domain == QONNX_DOMAIN)
    log.info("exported %s: %d nodes, %d QONNX quantizers", path, len(proto.graph.node), n_quant)
    return path


def qonnx_scales(path: str | Path) -> dict[str, np.ndarray]:
    """The scale of every QONNX quantizer in a file, by node name (for checks and reports)."""
    proto = onnx.load(str(path))
    inits = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    return {n.name: inits[n.input[1]] for n in proto.graph.node if n.domain == QONNX_DOMAIN and n.input[1] in inits}
