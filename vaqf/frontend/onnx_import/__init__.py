"""ONNX, QONNX and QDQ models to the vaqf IR.

The importer walks the ONNX graph in order and keeps, for every ONNX tensor, what it means in vaqf:

- ``Const``: a float (or raw integer) constant;
- ``QConst``: a quantized constant, ``scale * ints`` (weights after Quant/BipolarQuant/DequantizeLinear);
- ``Raw``: the integer output of QuantizeLinear, waiting for its DequantizeLinear;
- ``FloatInput``: a graph input not yet quantized (possibly reshaped);
- ``Act``: a runtime integer tensor of the IR, exact in meaning (``scale * (q - zp)``).

Quantizers on activations become ``requant`` nodes (or define the graph input's type); MatMul/Gemm with a
constant weight become ``dense``; a following Add of a constant folds into the dense bias. Float tensors
that feed a dense layer without a quantizer are quantized post-training from calibration ranges.

The package keeps one concern per module: ``loading`` (reading a file safely, structural checks),
``states`` (the tensor states above and the options), ``importer`` (the walk, calibration and the dispatch),
``quantizers`` (QONNX and QDQ quantizers), ``matrix`` (dense, matmul, convolution), ``elementwise``,
``layout`` (data movement and pooling) and ``folding`` (constant subgraphs). Pattern rewrites run before
the walk, in ``vaqf.frontend.patterns``.
"""

from __future__ import annotations

from pathlib import Path

import onnx

from vaqf.errors import IRError, ModelError, VaqfError
from vaqf.frontend.onnx_import.importer import Importer
from vaqf.frontend.onnx_import.loading import (
    _one_line,
    check_structure,
    fixed_batch,
    free_fixed_batch,
    load_model,
    missing_qonnx_imports,
    model_format,
)
from vaqf.frontend.onnx_import.states import ImportOptions
from vaqf.ir import Graph

__all__ = ["ImportOptions", "Importer", "check_structure", "import_onnx", "load_model", "model_format"]


def import_onnx(model: str | Path | onnx.ModelProto, options: ImportOptions | None = None) -> Graph:
    """Import an ONNX/QONNX/QDQ model (path or ModelProto) into a verified vaqf Graph."""
    opt = options or ImportOptions()
    if isinstance(model, (str, Path)):
        name = Path(model).stem
        proto = load_model(model)
    else:
        name = model.graph.name or "model"
        proto = model
        if missing_qonnx_imports(model) or fixed_batch(model):  # both rewrite it: leave the caller's model as it was
            proto = onnx.ModelProto()
            proto.CopyFrom(model)
    check_structure(proto, name)
    free_fixed_batch(proto)
    try:
        graph = Importer(proto, opt, name=name).run()
    except VaqfError:
        raise
    except MemoryError:
        raise ModelError(f"ran out of memory importing {name}; the model (or a tensor it computes) is too large "
                         "for this machine") from None
    except RecursionError:
        raise ModelError(f"cannot import {name}: it nests too deeply") from None
    except (IRError, ValueError, KeyError, IndexError, TypeError, AttributeError, ArithmeticError, AssertionError,
            onnx.checker.ValidationError) as e:
        # the checker passed but the model is still inconsistent in a way the importer trips over
        raise ModelError(f"cannot import {name}: {type(e).__name__}: {_one_line(e)}") from e
    graph.metadata["format"] = model_format(proto)
    return graph


