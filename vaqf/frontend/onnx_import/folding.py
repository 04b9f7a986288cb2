"""Constant subgraphs (shape arithmetic and the like) evaluated with ONNX's reference implementation,
under a bound on the size of what folding may create."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from vaqf.errors import ModelError, UnsupportedOpError
from vaqf.frontend.onnx_import.loading import _one_line
from vaqf.frontend.onnx_import.states import Const

#: the largest constant that folding may create (2**26 elements: 512 MiB as float64)
MAX_FOLD_ELEMENTS = 2**26
#: constant operands up to this size are shown to shape inference by value (shapes, repeats, pads)
FOLD_VALUE_ELEMENTS = 4096


class ConstantFolding:
    """Importer handlers for constant folding and Constant nodes; mixed into :class:`Importer`, whose state they use."""

    def _fold_constant(self, node: onnx.NodeProto) -> None:
        """Evaluate a node whose inputs are all constants with ONNX's reference implementation, after checking
        that its results stay within MAX_FOLD_ELEMENTS (an Expand or Tile of a few bytes can ask for GiBs)."""
        from onnx.reference import ReferenceEvaluator

        inputs = {i: self.env[i].array for i in node.input if i}
        fold_model = self._fold_model(node, inputs, as_initializers=False)
        self._check_fold_size(node, inputs)
        try:
            results = ReferenceEvaluator(fold_model).run(None, inputs)
        except MemoryError:
            raise ModelError(f"ran out of memory folding constant node '{self._name(node)}' ({node.op_type})") \
                from None
        except Exception as e:
            raise UnsupportedOpError(self._name(node), node.op_type,
                                     f"constant folding failed ({type(e).__name__}: {_one_line(e)})") from e
        for o, r in zip([o for o in node.output if o], results, strict=True):
            r = np.asarray(r)
            if r.size > MAX_FOLD_ELEMENTS:
                raise self._fold_too_large(node, r.shape)
            self.env[o] = Const(r)

    def _fold_model(self, node: onnx.NodeProto, inputs: dict[str, np.ndarray], as_initializers: bool) -> Any:
        """A one-node model of ``node``; with ``as_initializers`` the small inputs are initializers (so shape
        inference reads shape operands' values) and the others typed inputs."""
        small = {i: a for i, a in inputs.items() if as_initializers and a.size <= FOLD_VALUE_ELEMENTS
                 and a.dtype.kind in "biuf"}
        graph = onnx.helper.make_graph(
            [node], "fold",
            [onnx.helper.make_tensor_value_info(i, onnx.helper.np_dtype_to_tensor_dtype(a.dtype), a.shape)
             for i, a in inputs.items() if i not in small],
            [onnx.helper.make_empty_tensor_value_info(o) for o in node.output if o],
            [numpy_helper.from_array(np.asarray(a), i) for i, a in small.items()])
        fold_model = onnx.helper.make_model(graph, opset_imports=list(self.model.opset_import))
        fold_model.ir_version = self.model.ir_version
        return fold_model

    def _check_fold_size(self, node: onnx.NodeProto, inputs: dict[str, np.ndarray]) -> None:
        """Refuse a fold whose output shapes, as ONNX's shape inference gives them, exceed MAX_FOLD_ELEMENTS."""
        try:
            inferred = onnx.shape_inference.infer_shapes(self._fold_model(node, inputs, as_initializers=True),
                                                         strict_mode=False, data_prop=True)
        except Exception:  # no inference for this op: the result's size is checked after evaluation
            return
        for vi in inferred.graph.output:
            dims = vi.type.tensor_type.shape.dim if vi.type.tensor_type.HasField("shape") else []
            if dims and all(d.HasField("dim_value") for d in dims):
                shape = tuple(int(d.dim_value) for d in dims)
                if math.prod(shape) > MAX_FOLD_ELEMENTS:
                    raise self._fold_too_large(node, shape)

    def _fold_too_large(self, node: onnx.NodeProto, shape: tuple[int, ...]) -> ModelError:
        return ModelError(f"constant node '{self._name(node)}' ({node.op_type}) would make a tensor of shape "
                          f"{list(shape)} ({math.prod(shape)} elements, more than {MAX_FOLD_ELEMENTS}); refusing "
                          "to fold it")

    def _op_Constant(self, node: onnx.NodeProto) -> None:
        """A constant tensor (folded into its consumers)."""
        a = self._attrs(node)
        if "value" in a:
            self._set(node, Const(self._tensor(a["value"])))
        elif "value_float" in a:
            self._set(node, Const(np.asarray(a["value_float"], dtype=np.float32)))
        elif "value_int" in a:
            self._set(node, Const(np.asarray(a["value_int"], dtype=np.int64)))
        elif "value_floats" in a:
            self._set(node, Const(np.asarray(a["value_floats"], dtype=np.float32)))
        elif "value_ints" in a:
            self._set(node, Const(np.asarray(a["value_ints"], dtype=np.int64)))
        else:
            raise UnsupportedOpError(self._name(node), "Constant", "unsupported value attribute")
