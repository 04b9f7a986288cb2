"""Export an arbitrary ``torch.nn.Module`` for ``vaqf.compile_model``: QONNX when it holds the frontend's
quantization-aware layers (their quantizers carry the precision), float ONNX otherwise."""

from __future__ import annotations

import warnings
from pathlib import Path

import onnx
import torch
from torch import nn

from vaqf.errors import VaqfError
from vaqf.frontend.torch.export import MAX_IR_VERSION, OPSET, export_qonnx
from vaqf.frontend.torch.qat import weight_layers


def export_module(model: nn.Module, path: str | Path, example: torch.Tensor | None = None) -> Path:
    """Write ``model`` to ``path`` (batch axis dynamic) and return the path; ``example`` is one input."""
    path = Path(path)
    if example is not None and not isinstance(example, torch.Tensor):
        raise VaqfError(f"example_input must be a torch.Tensor shaped like one input, got {type(example).__name__}")
    if any(True for _ in weight_layers(model)):
        return export_qonnx(model, path, example)
    if example is None:
        raise VaqfError(f"exporting {type(model).__name__} needs example_input (one input tensor)")
    was_training = model.training
    model.eval()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript exporter warns about its own deprecation
            torch.onnx.export(model, (example,), str(path), dynamo=False, opset_version=OPSET, input_names=["x"],
                              output_names=["y"], dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}})
    except Exception as e:  # the exporter's own failure, on the user's module
        raise VaqfError(f"torch.onnx.export could not export {type(model).__name__}: "
                        f"{str(e).splitlines()[0] if str(e) else type(e).__name__}; export it to ONNX yourself and "
                        "pass the file") from e
    finally:
        model.train(was_training)
    proto = onnx.load(str(path))
    if proto.ir_version > MAX_IR_VERSION:  # onnxruntime and qonnx read up to this
        proto.ir_version = MAX_IR_VERSION
        onnx.save(proto, str(path))
    return path
