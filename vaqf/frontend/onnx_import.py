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
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from vaqf.errors import CalibrationRequired, IRError, ModelError, UnsupportedOpError, VaqfError
from vaqf.frontend.calibrate import collect_ranges
from vaqf.frontend.patterns import LIFTED_DOMAIN
from vaqf.frontend.ptq import WEIGHT_MODES, activation_quant, f32, quantize_weight
from vaqf.ir import BinaryType, Graph, IntType, QType, TensorInfo, Value, int_type_for_range
from vaqf.ops import get_spec
from vaqf.ops.common import requant_params
from vaqf.ops.dense import finalize_dense_attrs
from vaqf.sim.qarith import Rounding, round_real

log = logging.getLogger(__name__)

QONNX_DOMAINS = {"qonnx.custom_op.general", "finn.custom_op.general", "onnx.brevitas", "finn"}
MAX_MODEL_BYTES = 4 * 2**30
#: the largest tensor vaqf decodes or folds (2**28 elements: 1 GiB of float32); DeiT-base's largest is 2.4M
MAX_TENSOR_ELEMENTS = 2**28
#: external data read in all (the same cap as the model file itself)
MAX_EXTERNAL_BYTES = 4 * 2**30
MAX_EXTERNAL_NAME = 1024
#: the largest constant that folding may create (2**26 elements: 512 MiB as float64)
MAX_FOLD_ELEMENTS = 2**26
#: constant operands up to this size are shown to shape inference by value (shapes, repeats, pads)
FOLD_VALUE_ELEMENTS = 4096

_ONNX_INT_TYPES = {
    onnx.TensorProto.INT8: IntType(8, True), onnx.TensorProto.UINT8: IntType(8, False),
    onnx.TensorProto.INT16: IntType(16, True), onnx.TensorProto.UINT16: IntType(16, False),
    onnx.TensorProto.INT4: IntType(4, True), onnx.TensorProto.UINT4: IntType(4, False),
    onnx.TensorProto.INT32: IntType(32, True),
}


# ---- tensor states ----------------------------------------------------------------------------
@dataclass
class Const:
    array: np.ndarray


@dataclass
class QConst:
    ints: np.ndarray      # integer meaning (zero point already subtracted)
    scale: np.ndarray     # broadcastable to ints
    qtype: QType

    def real(self) -> np.ndarray:
        return self.ints.astype(np.float64) * self.scale


@dataclass
class Raw:
    inner: Any            # Act or QConst after quantization
    scale: np.ndarray
    zero_point: np.ndarray


@dataclass
class FloatInput:
    name: str
    shape: tuple[int, ...]
    reshapes: list[tuple[int, ...]] = field(default_factory=list)


@dataclass
class Act:
    value: Value
    quantized: bool       # produced by a quantizer (activation precision), not a wide accumulator
    dense_without_bias: Any = None  # the dense node whose bias an Add may still fold in
    relu_applied: bool = False      # a following Relu was already fused into the producer


@dataclass
class ImportOptions:
    weights: str = "keep"         # keep | binary | int8 | int4
    act_bits: int | None = None   # bits for post-training activation quantization (default 8)
    calib: np.ndarray | None = None
    first_last_int8: bool = True  # with --weights binary: the input and output layers stay int8


# ---- loading ----------------------------------------------------------------------------------
def load_model(path: str | Path) -> onnx.ModelProto:
    """Read an ONNX file, with external data from the model's own folder only."""
    p = Path(path)
    if not p.exists():
        raise ModelError(f"model file {p} does not exist")
    if not p.is_file():
        raise ModelError(f"{p} is not a file")
    if p.stat().st_size > MAX_MODEL_BYTES:
        raise ModelError(f"{p} is larger than {MAX_MODEL_BYTES >> 30} GiB")
    try:
        model = onnx.load(str(p), load_external_data=False)
    except Exception as e:
        first = str(e).splitlines()[0] if str(e) else ""
        raise ModelError(f"{p} is not a valid ONNX file ({type(e).__name__}: {first})") \
            from e
    if not model.HasField("graph") or not model.graph.node:
        raise ModelError(f"{p} holds no ONNX graph")
    base = p.resolve().parent
    total = 0
    for t in _all_tensors(model):
        if t.data_location == onnx.TensorProto.EXTERNAL:
            total += _check_external(t, p, base)
            if total > MAX_EXTERNAL_BYTES:
                raise ModelError(f"the external data of {p.name} adds up to more than {MAX_EXTERNAL_BYTES >> 30} GiB; "
                                 "refusing to read it")
        else:
            _check_elements(t)
    try:
        onnx.load_external_data_for_model(model, str(base))
    except MemoryError:
        raise ModelError(f"ran out of memory reading the external data of {p.name}") from None
    except Exception as e:
        raise ModelError(f"cannot read the external data of {p}: {_one_line(e)}") from e
    return model


def _tensor_bytes(t: onnx.TensorProto) -> int:
    """Bytes the tensor's data takes, from its declared shape and type (before anything is read)."""
    n = _check_elements(t)
    try:
        dtype = onnx.helper.tensor_dtype_to_np_dtype(t.data_type)
    except Exception:
        raise ModelError(f"tensor '{_short(t.name)}' has an unknown data type {t.data_type}") from None
    if dtype.kind in "OSU":
        raise ModelError(f"tensor '{_short(t.name)}' holds strings; vaqf reads numeric tensors only")
    bits = {onnx.TensorProto.INT4: 4, onnx.TensorProto.UINT4: 4}.get(t.data_type, dtype.itemsize * 8)
    return -(-n * bits // 8)


def _check_elements(t: onnx.TensorProto) -> int:
    """The element count the tensor declares, refused above MAX_TENSOR_ELEMENTS before anything is decoded."""
    if any(d < 0 for d in t.dims):
        raise ModelError(f"tensor '{_short(t.name)}' has a negative dimension {list(t.dims)}")
    n = math.prod(int(d) for d in t.dims)
    if n > MAX_TENSOR_ELEMENTS:
        raise ModelError(f"tensor '{_short(t.name)}' declares {n} elements (more than {MAX_TENSOR_ELEMENTS}); "
                         "refusing absurd sizes")
    return n


def _check_external(t: onnx.TensorProto, p: Path, base: Path) -> int:
    """Check one external tensor before its data is read: its file lies inside the model's folder and holds
    exactly the bytes the tensor's shape and type need (without a ``length``, ONNX would read the file to its
    end, however large). Returns the bytes to be read."""
    entries = {e.key: e.value for e in t.external_data}
    loc = entries.get("location", "")
    name = _short(t.name)
    if not loc or "\0" in loc or len(loc) > MAX_EXTERNAL_NAME or any(ord(c) < 32 for c in loc):
        raise ModelError(f"tensor '{name}' of {p.name} has an external data location that is empty, too long or "
                         "holds control characters; refusing it")
    try:
        target = (base / loc).resolve()
        inside = not os.path.isabs(loc) and base in target.parents
        is_file = inside and target.is_file()
        size = target.stat().st_size if is_file else 0
    except (OSError, ValueError, RuntimeError) as e:
        raise ModelError(f"tensor '{name}' of {p.name} points at external data '{_short(loc)}' that cannot be "
                         f"opened ({type(e).__name__})") from None
    if not inside:
        raise ModelError(f"tensor '{name}' of {p.name} points at external data '{_short(loc)}' outside the "
                         "model's folder; refusing to read it")
    if not is_file:
        raise ModelError(f"external data file '{_short(loc)}' of tensor '{name}' is missing next to {p.name}")
    need = _tensor_bytes(t)
    try:
        offset = int(entries.get("offset", 0))
        length = int(entries["length"]) if "length" in entries else None
    except ValueError:
        raise ModelError(f"tensor '{name}' of {p.name} has a non-integer external data offset or length") from None
    if offset < 0 or offset > size:
        raise ModelError(f"tensor '{name}' of {p.name}: external data offset {offset} lies outside "
                         f"'{_short(loc)}' ({size} bytes)")
    if length is None:
        if size - offset != need:
            raise ModelError(f"tensor '{name}' of {p.name} has external data without a length, and "
                             f"'{_short(loc)}' holds {size - offset} bytes after offset {offset} where the tensor "
                             f"needs {need}; refusing to read it (export the model with lengths, e.g. "
                             "onnx.save(..., save_as_external_data=True))")
    elif length != need or offset + length > size:
        raise ModelError(f"tensor '{name}' of {p.name}: external data length {length} at offset {offset} does not "
                         f"match the {need} bytes its shape needs within '{_short(loc)}' ({size} bytes)")
    return need


def _short(text: str, limit: int = 80) -> str:
    """A name as messages show it: control characters escaped, long names cut."""
    shown = text.encode("unicode_escape").decode("ascii") if not text.isprintable() else text
    return shown if len(shown) <= limit else shown[:limit] + "..."


def _all_tensors(model: onnx.ModelProto) -> list[onnx.TensorProto]:
    out = list(model.graph.initializer)
    for n in model.graph.node:
        for a in n.attribute:
            if a.type == onnx.AttributeProto.TENSOR:
                out.append(a.t)
    return out


def model_format(model: onnx.ModelProto) -> str:
    ops = {(n.domain, n.op_type) for n in model.graph.node}
    if any(d in QONNX_DOMAINS for d, _ in ops):
        return "qonnx"
    if any(t in ("QuantizeLinear", "DequantizeLinear") for _, t in ops):
        return "qdq"
    return "onnx"


# ---- the importer -----------------------------------------------------------------------------
class Importer:
    def __init__(self, model: onnx.ModelProto, options: ImportOptions, name: str = "model") -> None:
        if options.weights not in WEIGHT_MODES:
            raise VaqfError(f"--weights must be one of {', '.join(WEIGHT_MODES)}, got {options.weights!r}")
        if options.act_bits is not None and not 2 <= options.act_bits <= 16:
            raise VaqfError(f"--act-bits must be within 2..16, got {options.act_bits}")
        from vaqf.frontend.patterns import lift_patterns

        self.original = model              # what onnxruntime runs for calibration
        self.model = lift_patterns(model)  # what is lowered
        self.opt = options
        self.graph = Graph(name)
        self.env: dict[str, Any] = {}
        self.input_rounding: dict[str, str] = {}
        self._ranges: dict[str, tuple[float, float]] | None = None
        self._ptq_tensors: list[str] = []
        self._dense_nodes: list[tuple[Any, np.ndarray | None]] = []  # (node, float weight if post-quantized)

    # -- entry --
    def run(self) -> Graph:
        g = self.model.graph
        init_names = {t.name for t in g.initializer}
        for t in g.initializer:
            self.env[t.name] = Const(self._tensor(t))
        for inp in g.input:
            if inp.name in init_names:
                continue
            self.env[inp.name] = FloatInput(inp.name, self._input_shape(inp))
        if not any(isinstance(s, FloatInput) for s in self.env.values()):
            raise ModelError("the model has no runtime input")
        self._consumers: dict[str, list[onnx.NodeProto]] = {}
        for node in self.model.graph.node:
            for i in node.input:
                self._consumers.setdefault(i, []).append(node)
        for node in self._ordered_nodes():
            self._lower(node)
        if not g.output:
            raise ModelError("the model declares no outputs")
        for out in g.output:
            st = self.env.get(out.name)
            if not isinstance(st, Act):
                raise ModelError(f"graph output '{out.name}' is not computed from the input at run time")
            self.graph.outputs.append(st.value)
        self._last_layers_int8()
        self.graph.metadata["input_rounding"] = self.input_rounding
        self.graph.metadata["weights"] = self.opt.weights
        # every declared input must have been quantized by now
        for v in self.graph.inputs:
            self.input_rounding.setdefault(v.name, "HALF_EVEN")
        self.graph.verify()
        return self.graph

    def _last_layers_int8(self) -> None:
        """With --weights binary, dense layers whose result reaches an output through no other dense layer
        (the classifier head) are re-quantized to int8, like the patch embedding."""
        if self.opt.weights != "binary" or not self.opt.first_last_int8:
            return
        floats = {id(n): wf for n, wf in self._dense_nodes}
        frontier = list(self.graph.outputs)
        seen: set[str] = set()
        while frontier:
            v = frontier.pop()
            if v.name in seen:
                continue
            seen.add(v.name)
            p = self.graph.producer(v)
            if p is None:
                continue
            if p.op == "dense":
                wf = floats.get(id(p))
                if wf is not None and isinstance(p.attrs["w_type"], BinaryType):
                    ints, w_scale, qtype = quantize_weight(wf, "int8")
                    bias_real = p.attrs["bias"] * (p.inputs[0].info.scale[0] * p.attrs["w_scale"])
                    p.attrs.update({"weight": ints.astype(np.int8), "w_type": qtype, "w_scale": f32(w_scale)})
                    p.attrs["bias"] = round_real(bias_real / (p.inputs[0].info.scale[0] * p.attrs["w_scale"]))
                    finalize_dense_attrs(p, p.inputs[0].info)
                    if p.attrs.get("requant") is None:
                        p.outputs[0].info = self._dense_out_info(p, p.inputs[0].info)
                    else:
                        from vaqf.ops.common import requant_params

                        rq = p.attrs["requant"]
                        p.attrs["requant"] = requant_params(
                            p.inputs[0].info.scale[0] * p.attrs["w_scale"], float(rq["scale"][0]), ints.shape[0],
                            rq["qtype"], rq["zero_point"], rq["rounding"], p.name)
                continue
            frontier.extend(p.inputs)

    def _ordered_nodes(self) -> list[onnx.NodeProto]:
        """The nodes in topological order, the file's order where it allows (Kahn's algorithm with the file
        position as priority: linear in nodes and edges up to the heap's log, whatever order the file has)."""
        import heapq

        nodes = list(self.model.graph.node)
        known = set(self.env)
        waiting: dict[str, list[int]] = {}  # tensor -> positions of the nodes waiting for it
        missing_count = [0] * len(nodes)
        ready: list[int] = []
        for pos, n in enumerate(nodes):
            needed = {i for i in n.input if i and i not in known}
            missing_count[pos] = len(needed)
            for i in needed:
                waiting.setdefault(i, []).append(pos)
            if not needed:
                ready.append(pos)
        heapq.heapify(ready)
        ordered: list[onnx.NodeProto] = []
        while ready:
            pos = heapq.heappop(ready)
            ordered.append(nodes[pos])
            for o in nodes[pos].output:
                if not o or o in known:
                    continue
                known.add(o)
                for w in waiting.pop(o, ()):
                    missing_count[w] -= 1
                    if missing_count[w] == 0:
                        heapq.heappush(ready, w)
        if len(ordered) != len(nodes):
            rest = [n for pos, n in enumerate(nodes) if missing_count[pos] > 0]
            missing = sorted({i for n in rest for i in n.input if i and i not in known})
            raise ModelError(f"node '{rest[0].name or rest[0].op_type}' reads undefined tensors "
                             f"{missing[:5]} (or the graph has a cycle)")
        return ordered

    def _tensor(self, t: onnx.TensorProto) -> np.ndarray:
        _check_elements(t)
        try:
            return numpy_helper.to_array(t)
        except MemoryError:
            raise ModelError(f"ran out of memory decoding tensor '{_short(t.name)}'") from None
        except Exception as e:
            raise ModelError(f"tensor '{_short(t.name)}' cannot be decoded: {_one_line(e)}") from e

    def _input_shape(self, inp: onnx.ValueInfoProto) -> tuple[int, ...]:
        tt = inp.type.tensor_type
        if not tt.HasField("shape"):
            raise ModelError(f"input '{inp.name}' has no shape; export the model with a static input shape")
        dims = []
        for i, d in enumerate(tt.shape.dim):
            if d.HasField("dim_value") and d.dim_value > 0:
                dims.append(int(d.dim_value))
            elif i == 0:
                dims.append(1)  # symbolic batch
            else:
                raise ModelError(f"input '{inp.name}' has a symbolic dimension {i} ('{d.dim_param}'); "
                                 "only the batch axis may be dynamic")
        if not dims:
            raise ModelError(f"input '{inp.name}' is a scalar; expected [batch, ...]")
        if dims[0] != 1:
            raise ModelError(f"input '{inp.name}' has a fixed batch of {dims[0]}; export the model with batch 1 "
                             "or a dynamic batch axis")
        if int(np.prod(dims, dtype=np.float64)) > 2**28:
            raise ModelError(f"input '{inp.name}' shape {dims} is absurdly large")
        return tuple(dims)

    # -- helpers --
    @staticmethod
    def _attrs(node: onnx.NodeProto) -> dict[str, Any]:
        return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}

    def _scale(self, node: onnx.NodeProto, i: int) -> np.ndarray:
        """A quantizer's scale input: a constant of finite, positive values."""
        scale = np.asarray(self._const(node, i, "scale"), dtype=np.float64)
        if scale.size == 0 or not np.all(np.isfinite(scale)) or not np.all(scale > 0):
            raise ModelError(f"node '{self._name(node)}' ({node.op_type}) has a scale that is not finite and positive")
        return scale

    def _state(self, node: onnx.NodeProto, i: int) -> Any:
        if i >= len(node.input) or node.input[i] == "":
            return None
        return self.env[node.input[i]]

    def _const(self, node: onnx.NodeProto, i: int, what: str) -> np.ndarray:
        st = self._state(node, i)
        if isinstance(st, QConst):
            return st.real()
        if not isinstance(st, Const):
            raise UnsupportedOpError(self._name(node), node.op_type, f"its {what} must be a constant")
        return st.array

    @staticmethod
    def _name(node: onnx.NodeProto) -> str:
        return node.name or f"{node.op_type}({node.output[0] if node.output else ''})"

    def _set(self, node: onnx.NodeProto, state: Any, i: int = 0) -> None:
        self.env[node.output[i]] = state

    # -- calibration / PTQ --
    def _act_bits(self) -> int:
        return self.opt.act_bits or 8

    def _internal_bits(self) -> int:
        """Bits of tensors that feed no matrix product (residual stream, non-linearity inputs)."""
        return max(8, self._act_bits())

    def _calibrated_range(self, tensor: str, consumer: onnx.NodeProto) -> tuple[float, float]:
        if self.opt.calib is None:
            raise CalibrationRequired(
                f"tensor '{tensor}' feeding node '{self._name(consumer)}' ({consumer.op_type}) is float with no "
                "quantizer; give calibration inputs with --calib FILE.npy (an array [N, ...input shape]) so "
                "vaqf can quantize it post-training")
        if self._ranges is None:
            fmt = model_format(self.model)
            if fmt == "qonnx":
                raise CalibrationRequired(
                    f"tensor '{tensor}' feeding node '{self._name(consumer)}' has no quantizer; QONNX models "
                    "must quantize every activation that feeds a matrix product (add a Quant node)")
            self._ranges = collect_ranges(self.original, self.opt.calib, self._float_tensors())
        if tensor not in self._ranges:
            self._ranges.update(collect_ranges(self.original, self.opt.calib, [tensor]))
        return self._ranges[tensor]

    def _float_tensors(self) -> list[str]:
        names = []
        for n in self.model.graph.node:
            names.extend(o for o in n.output if o)
        names.extend(i.name for i in self.model.graph.input
                     if i.name not in {t.name for t in self.model.graph.initializer})
        return names

    def _ptq(self, tensor: str, consumer: onnx.NodeProto, bits: int | None = None) -> Act:
        lo, hi = self._calibrated_range(tensor, consumer)
        qt, scale = activation_quant(lo, hi, bits or self._act_bits())
        st = self.env[tensor]
        log.info("post-training quantization of '%s': %s, scale %.4g", tensor, qt, scale)
        act = self._quantize_act(st, np.asarray([scale]), 0, qt, "HALF_EVEN", _renamed(consumer, f"{tensor}_q"))
        self.env[tensor] = act
        return act

    def _act_input(self, node: onnx.NodeProto, i: int, need_quantized: bool, bits: int | None = None) -> Act:
        st = self._state(node, i)
        if isinstance(st, Act) and (st.quantized or not need_quantized):
            return st
        if isinstance(st, (Act, FloatInput)):
            return self._ptq(node.input[i], node, bits)
        raise UnsupportedOpError(self._name(node), node.op_type,
                                 f"input '{node.input[i]}' is a constant where a run-time tensor is expected")

    # -- quantizing activations --
    def _quantize_act(self, st: Any, scale: np.ndarray, zp: int, qt: IntType, rounding: str,
                      node: onnx.NodeProto) -> Act:
        scale = f32(np.asarray(scale, dtype=np.float64).reshape(-1))
        if scale.size != 1:
            raise UnsupportedOpError(self._name(node), node.op_type,
                                     "per-channel activation quantization is not supported; use a per-tensor scale")
        if not np.all(scale > 0) or not np.all(np.isfinite(scale)):
            raise ModelError(f"node '{self._name(node)}' has a non-positive or non-finite scale")
        if isinstance(st, FloatInput):
            existing = next((v for v in self.graph.inputs if v.name == st.name), None)
            if existing is None:
                existing = self.graph.add_input(st.name, TensorInfo(st.shape, qt, scale, zp))
                self.input_rounding[st.name] = Rounding.parse(rounding).value
                defined_here = True
            else:
                defined_here = False
            act = Act(existing, True)
            for shape in st.reshapes:
                act = self._reshape(act, shape, node)
            if defined_here:
                return act
            st = act
        assert isinstance(st, Act)
        src = st.value
        if (src.info.qtype == qt and src.info.zero_point == zp and not src.info.per_channel
                and float(src.info.scale[0]) == float(scale[0])):
            return Act(src, True)  # already exactly this quantization (e.g. chosen by looking ahead)
        channels = src.info.shape[-1] if src.info.per_channel else 1
        rq = requant_params(src.info.scale, float(scale[0]), channels, qt, zp,
                            Rounding.parse(rounding).value, self._name(node))
        out = self.graph.new_value(node.output[0] if node.output else "q", TensorInfo(src.info.shape, qt, scale, zp))
        self.graph.add_node("requant", [src], [out], rq, name=self._name(node), source=self._name(node))
        return Act(out, True)

    def _reshape(self, act: Act, shape: tuple[int, ...], node: onnx.NodeProto) -> Act:
        info = act.value.info
        out = self.graph.new_value(node.output[0], TensorInfo(shape, info.qtype, info.scale, info.zero_point))
        self.graph.add_node("reshape", [act.value], [out], {"shape": list(shape)}, name=self._name(node),
                            source=self._name(node))
        return Act(out, act.quantized)

    # -- per-op lowering --
    def _lower(self, node: onnx.NodeProto) -> None:
        op = node.op_type
        if node.domain in QONNX_DOMAINS:
            handler = {"Quant": self._quant, "IntQuant": self._quant, "BipolarQuant": self._bipolar}.get(op)
        elif node.domain in ("", "ai.onnx", LIFTED_DOMAIN):
            handler = getattr(self, f"_op_{op}", None)
        else:
            handler = None
        states = [self._state(node, i) for i in range(len(node.input))]
        all_const = all(isinstance(x, Const) or x is None for x in states)
        if node.domain in ("", "ai.onnx") and all_const and op not in ("QuantizeLinear", "DequantizeLinear"):
            self._fold_constant(node)  # shape arithmetic and other constant subgraphs
            return
        if handler is None:
            raise UnsupportedOpError(self._name(node), f"{node.domain + '.' if node.domain else ''}{op}")
        handler(node)

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

    def _op_Identity(self, node: onnx.NodeProto) -> None:
        self._set(node, self._state(node, 0))

    def _op_Dropout(self, node: onnx.NodeProto) -> None:
        self._set(node, self._state(node, 0))  # inference: identity (mask output unused)

    # QONNX
    def _quant(self, node: onnx.NodeProto) -> None:
        a = self._attrs(node)
        scale = self._scale(node, 1)
        zeropt = np.asarray(self._const(node, 2, "zero point"), dtype=np.float64)
        if not np.all(np.isfinite(zeropt)):
            raise ModelError(f"node '{self._name(node)}' has a non-finite zero point")
        bits_a = np.asarray(self._const(node, 3, "bit width"), dtype=np.float64).reshape(-1)
        if bits_a.size != 1 or bits_a[0] != np.floor(bits_a[0]) or not 2 <= bits_a[0] <= 16:
            raise UnsupportedOpError(self._name(node), node.op_type, f"bit width {bits_a.tolist()} (need 2..16)")
        bits = int(bits_a[0])
        signed = bool(a.get("signed", 1))
        narrow = bool(a.get("narrow", 0))
        mode = a.get("rounding_mode", b"ROUND")
        mode = mode.decode() if isinstance(mode, bytes) else str(mode)
        try:
            rounding = Rounding.parse(mode)
        except ValueError as e:
            raise UnsupportedOpError(self._name(node), node.op_type, str(e)) from None
        if np.any(zeropt != np.floor(zeropt)):
            raise UnsupportedOpError(self._name(node), node.op_type, "zero point must be an integer")
        qt = IntType(bits, signed, narrow)  # QONNX narrow: unsigned drops the top value, signed the bottom
        lo, hi = qt.min, qt.max
        st = self._state(node, 0)
        if st is None:
            raise ModelError(f"node '{self._name(node)}' ({node.op_type}) has no input to quantize (its first input "
                             "name is empty)")
        if isinstance(st, (Const, QConst)):
            x = st.array.astype(np.float64) if isinstance(st, Const) else st.real()
            if not np.all(np.isfinite(x)):
                raise ModelError(f"node '{self._name(node)}' quantizes a constant holding non-finite values")
            q = round_real(np.clip(x / scale + zeropt, lo, hi), rounding)  # QONNX clamps, then rounds
            ints = q - zeropt.astype(np.int64)
            qt_w = int_type_for_range(int(ints.min(initial=0)), int(ints.max(initial=0)))
            self._set(node, QConst(ints.astype(np.int64), f32(scale), qt_w))
            return
        if zeropt.size != 1:
            raise UnsupportedOpError(self._name(node), node.op_type, "per-channel zero points on activations")
        self._set(node, self._quantize_act(st, scale, int(zeropt.reshape(-1)[0]), qt, rounding.value, node))

    def _bipolar(self, node: onnx.NodeProto) -> None:
        scale = self._scale(node, 1)
        st = self._state(node, 0)
        if not isinstance(st, (Const, QConst)):
            raise UnsupportedOpError(self._name(node), node.op_type,
                                     "bipolar activations are not supported (only bipolar weights)")
        x = st.array.astype(np.float64) if isinstance(st, Const) else st.real()
        self._set(node, QConst(np.where(x >= 0, 1, -1).astype(np.int64), f32(scale), BinaryType()))

    # QDQ
    def _op_QuantizeLinear(self, node: onnx.NodeProto) -> None:
        a = self._attrs(node)
        scale = self._scale(node, 1)
        zp_state = self._state(node, 2)
        if zp_state is None:
            out_type = a.get("output_dtype", onnx.TensorProto.UINT8) or onnx.TensorProto.UINT8
            zp = np.zeros((), dtype=np.int64)
        else:
            zarr = self._const(node, 2, "zero point")
            out_type = onnx.helper.np_dtype_to_tensor_dtype(zarr.dtype)
            zp = zarr.astype(np.int64)
        if out_type not in _ONNX_INT_TYPES:
            raise UnsupportedOpError(self._name(node), node.op_type, "only integer outputs are supported")
        qt = _ONNX_INT_TYPES[out_type]
        axis = int(a.get("axis", 1))
        st = self._state(node, 0)
        if isinstance(st, (Const, QConst)):
            x = st.array.astype(np.float64) if isinstance(st, Const) else st.real()
            s_b, z_b = _per_axis(scale, x.ndim, axis), _per_axis(zp, x.ndim, axis)
            q = np.clip(round_real(x / s_b, Rounding.HALF_EVEN) + z_b, qt.min, qt.max)
            ints = q - z_b
            self._set(node, Raw(QConst(ints, f32(s_b), int_type_for_range(int(ints.min(initial=0)),
                                                                           int(ints.max(initial=0)))), scale, zp))
            return
        if zp.size != 1:
            raise UnsupportedOpError(self._name(node), node.op_type, "per-channel zero points on activations")
        act = self._quantize_act(st, scale, int(zp.reshape(-1)[0]), qt, "HALF_EVEN", node)
        self._set(node, Raw(act, scale, zp))

    def _op_DequantizeLinear(self, node: onnx.NodeProto) -> None:
        a = self._attrs(node)
        scale = self._scale(node, 1)
        zp = (np.asarray(self._const(node, 2, "zero point"), dtype=np.int64)
              if self._state(node, 2) is not None else np.zeros((), np.int64))
        st = self._state(node, 0)
        axis = int(a.get("axis", 1))
        if isinstance(st, Raw):
            if st.scale.shape != scale.shape or np.any(st.scale != scale) or np.any(st.zero_point != zp):
                raise UnsupportedOpError(self._name(node), node.op_type,
                                         "its scale/zero point differ from the QuantizeLinear before it")
            self._set(node, st.inner)
            return
        if isinstance(st, Const) and np.issubdtype(st.array.dtype, np.integer):
            x = st.array.astype(np.int64)
            s_b, z_b = _per_axis(scale, x.ndim, axis), _per_axis(zp, x.ndim, axis)
            ints = x - z_b
            self._set(node, QConst(ints, f32(s_b), int_type_for_range(int(ints.min(initial=0)),
                                                                      int(ints.max(initial=0)))))
            return
        raise UnsupportedOpError(self._name(node), node.op_type,
                                 "its input must be an integer initializer or a QuantizeLinear output")

    # compute
    def _op_Gemm(self, node: onnx.NodeProto) -> None:
        a = self._attrs(node)
        if a.get("transA", 0):
            raise UnsupportedOpError(self._name(node), "Gemm", "transA=1 is not supported")
        w_state = self._state(node, 1)
        trans_b = bool(a.get("transB", 0))
        self._dense(node, w_state, trans_b=trans_b, alpha=float(a.get("alpha", 1.0)),
                    bias=self._state(node, 2), beta=float(a.get("beta", 1.0)))

    def _op_MatMul(self, node: onnx.NodeProto) -> None:
        w_state = self._state(node, 1)
        if isinstance(w_state, (Act, FloatInput)):
            return self._matmul_act(node)
        self._dense(node, w_state, trans_b=False, alpha=1.0, bias=None, beta=1.0)

    def _weight_matrix(self, node: onnx.NodeProto, w_state: Any, to_nk: Any, alpha: float) -> tuple:
        """Weights as [N, K] integers, a per-row scale and the type; ``to_nk`` maps the ONNX layout."""
        if not isinstance(w_state, (Const, QConst)):
            raise UnsupportedOpError(self._name(node), node.op_type, "the weight operand must be a constant")
        if alpha <= 0:
            raise UnsupportedOpError(self._name(node), node.op_type, f"alpha={alpha} (must be positive)")
        first = not self._dense_nodes
        if isinstance(w_state, QConst) and self.opt.weights == "keep":
            ints = np.asarray(w_state.ints)
            scale_full = to_nk(np.broadcast_to(np.asarray(w_state.scale, dtype=np.float64), ints.shape))
            ints = to_nk(ints)
            if np.any(scale_full != scale_full[:, :1]):
                raise UnsupportedOpError(self._name(node), node.op_type,
                                         "weight scale varies along the input axis (need per-output-channel)")
            return ints, scale_full[:, 0] * alpha, w_state.qtype, None
        wf = w_state.real() if isinstance(w_state, QConst) else np.asarray(w_state.array, dtype=np.float64)
        if not np.all(np.isfinite(wf)):
            raise ModelError(f"node '{self._name(node)}' ({node.op_type}) has non-finite weights")
        wf = to_nk(wf) * alpha
        mode = self.opt.weights if self.opt.weights != "keep" else "int8"
        if self.opt.weights == "keep":
            log.info("node '%s': float weights without a quantizer are quantized to int8", self._name(node))
        if mode == "binary" and first and self.opt.first_last_int8:
            mode = "int8"  # the layer reading the input (patch embedding) stays 8-bit
        ints, w_scale, qtype = quantize_weight(wf, mode)
        return ints, w_scale, qtype, wf

    def _dense(self, node: onnx.NodeProto, w_state: Any, trans_b: bool, alpha: float, bias: Any,
               beta: float) -> None:
        def to_nk(w: np.ndarray) -> np.ndarray:
            if w.ndim != 2:
                raise UnsupportedOpError(self._name(node), node.op_type, f"weight of rank {w.ndim}")
            return w if trans_b else w.T

        x = self._act_input(node, 0, need_quantized=True)
        ints, w_scale, qtype, wf = self._weight_matrix(node, w_state, to_nk, alpha)
        act = self._emit_dense(node, x.value, ints, w_scale, qtype, wf, node.output[0])
        if bias is not None:
            self._fold_bias(act.dense_without_bias, bias, beta, node)
            act.dense_without_bias = None
        self._set(node, act)

    def _emit_dense(self, node: onnx.NodeProto, x: Value, ints: np.ndarray, w_scale: np.ndarray, qtype: QType,
                    wf: np.ndarray | None, out_name: str) -> Act:
        if isinstance(qtype, IntType) and qtype.bits > 16:
            raise UnsupportedOpError(self._name(node), node.op_type, f"{qtype.bits}-bit weights (max 16)")
        n_out, k = ints.shape
        if x.info.shape[-1] != k:
            raise ModelError(f"node '{self._name(node)}': input has {x.info.shape[-1]} features, weight expects {k}")
        attrs = {"weight": ints.astype(np.int8 if (isinstance(qtype, BinaryType) or qtype.bits <= 8) else np.int16),
                 "w_type": qtype, "w_scale": f32(w_scale), "bias": np.zeros(n_out, dtype=np.int64),
                 "relu": False, "requant": None}
        out = self.graph.new_value(out_name, TensorInfo(x.info.shape[:-1] + (n_out,), IntType(32),
                                                        x.info.scale[0] * attrs["w_scale"]))
        dn = self.graph.add_node("dense", [x], [out], attrs, name=self._name(node), source=self._name(node))
        finalize_dense_attrs(dn, x.info)
        out.info = self._dense_out_info(dn, x.info)
        self._dense_nodes.append((dn, wf))
        return Act(out, False, dense_without_bias=dn)

    def _op_Conv(self, node: onnx.NodeProto) -> None:
        """Patch embedding: a convolution with kernel = stride and no padding, computed as a GEMM over
        non-overlapping patches (reshape, transpose, dense, transpose back to NCHW)."""
        a = self._attrs(node)
        w_state = self._state(node, 1)
        wshape = (w_state.ints if isinstance(w_state, QConst) else w_state.array).shape \
            if isinstance(w_state, (Const, QConst)) else None
        if wshape is None or len(wshape) != 4:
            raise UnsupportedOpError(self._name(node), "Conv", "only 2-D convolutions with constant weights")
        kh, kw = wshape[2], wshape[3]
        strides = [int(v) for v in a.get("strides", [1, 1])]
        pads = [int(v) for v in a.get("pads", [0, 0, 0, 0])]
        if int(a.get("group", 1)) != 1 or list(a.get("dilations", [1, 1])) != [1, 1]:
            raise UnsupportedOpError(self._name(node), "Conv", "grouped or dilated convolutions are not supported")
        if a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
            raise UnsupportedOpError(self._name(node), "Conv", "auto_pad (export with explicit pads)")
        x = self._act_input(node, 0, need_quantized=True)
        shp = x.value.info.shape
        if len(shp) != 4:
            raise UnsupportedOpError(self._name(node), "Conv", f"input {list(shp)} is not NCHW")
        if strides != [kh, kw] or any(pads) or shp[2] % kh or shp[3] % kw:
            return self._conv_im2col(node, x, w_state, (kh, kw), strides, pads)
        c, h, w = shp[1], shp[2] // kh, shp[3] // kw
        d = wshape[0]
        ints, w_scale, qtype, wf = self._weight_matrix(node, w_state, lambda t: t.reshape(t.shape[0], -1), 1.0)
        v = self._move("reshape", x.value, (1, c, h, kh, w, kw), {"shape": [1, c, h, kh, w, kw]}, node, "patches")
        v = self._move("transpose", v, (1, h, w, c, kh, kw), {"perm": [0, 2, 4, 1, 3, 5]}, node, "patches_t")
        v = self._move("reshape", v, (1, h * w, c * kh * kw), {"shape": [1, h * w, c * kh * kw]}, node, "im2col")
        act = self._emit_dense(node, v, ints, w_scale, qtype, wf, node.output[0] + "_tokens")
        if self._state(node, 2) is not None:
            self._fold_bias(act.dense_without_bias, self._state(node, 2), 1.0, node)
        # per-channel accumulators cannot be transposed: quantize per tensor (the next quantizer's or calibrated)
        qt, scale, zp = self._output_quant(node, self._internal_bits(), signed=True)
        act = self._quantize_act(act, np.array([scale]), zp, qt, "HALF_EVEN", _renamed(node, node.output[0] + "_q"))
        t = self._move("transpose", act.value, (1, d, h * w), {"perm": [0, 2, 1]}, node, "nchw")
        out = self._move("reshape", t, (1, d, h, w), {"shape": [1, d, h, w]}, node, node.output[0])
        self._set(node, Act(out, True))

    def _conv_im2col(self, node: onnx.NodeProto, x: Act, w_state: Any, kernel: tuple[int, int],
                     strides: list[int], pads: list[int]) -> None:
        """A general 2-D convolution: im2col rows into the GEMM unit, then back to NCHW. A Relu that is the
        conv's only consumer is fused into the GEMM epilogue."""
        from vaqf.ops.im2col import conv_geometry

        attrs = {"kernel": list(kernel), "stride": strides, "pads": pads}
        c, _, _, ho, wo = conv_geometry(x.value.info.shape, attrs)
        cols = self._move("im2col", x.value, (1, ho * wo, c * kernel[0] * kernel[1]), attrs, node,
                          node.output[0] + "_cols")
        ints, w_scale, qtype, wf = self._weight_matrix(node, w_state, lambda t: t.reshape(t.shape[0], -1), 1.0)
        d = ints.shape[0]
        act = self._emit_dense(node, cols, ints, w_scale, qtype, wf, node.output[0] + "_rows")
        if self._state(node, 2) is not None:
            self._fold_bias(act.dense_without_bias, self._state(node, 2), 1.0, node)
        users = self._consumers.get(node.output[0], [])
        relu = users[0] if len(users) == 1 and users[0].op_type == "Relu" else None
        if relu is not None:
            act.dense_without_bias.attrs["relu"] = True
            qt, scale, zp = self._output_quant(relu, self._act_bits())
        else:
            qt, scale, zp = self._output_quant(node, self._internal_bits(), signed=True)
        act = self._quantize_act(act, np.array([scale]), zp, qt, "HALF_EVEN", _renamed(node, node.output[0] + "_q"))
        t = self._move("transpose", act.value, (1, d, ho * wo), {"perm": [0, 2, 1]}, node, node.output[0] + "_nchw")
        out = self._move("reshape", t, (1, d, ho, wo), {"shape": [1, d, ho, wo]}, node, node.output[0])
        self._set(node, Act(out, True, relu_applied=relu is not None))

    def _op_BatchNormalization(self, node: onnx.NodeProto) -> None:
        raise UnsupportedOpError(self._name(node), "BatchNormalization",
                                 "only a BatchNormalization right after a convolution with float weights is "
                                 "supported (it is folded into the convolution)")

    def _pool(self, node: onnx.NodeProto, kind: str, kernel: tuple[int, int], strides: list[int],
              pads: list[int]) -> None:
        from vaqf.ops.im2col import conv_geometry
        from vaqf.ops.pool import pool_attrs

        x = self._per_tensor(node, 0, keeps_channels=False)
        if not x.quantized:
            x = self._act_input(node, 0, need_quantized=True, bits=self._internal_bits())
        try:
            attrs = pool_attrs(kind, kernel, (int(strides[0]), int(strides[1])), tuple(int(p) for p in pads))
            c, _, _, ho, wo = conv_geometry(x.value.info.shape, attrs)
        except VaqfError as e:
            raise UnsupportedOpError(self._name(node), node.op_type, str(e)) from None
        out = self._move("pool", x.value, (1, c, ho, wo), attrs, node, node.output[0])
        self._set(node, Act(out, True, relu_applied=x.relu_applied))

    def _op_MaxPool(self, node: onnx.NodeProto) -> None:
        a = self._attrs(node)
        if int(a.get("ceil_mode", 0)) or list(a.get("dilations", [1, 1])) != [1, 1]:
            raise UnsupportedOpError(self._name(node), "MaxPool", "ceil_mode or dilations")
        k = [int(v) for v in a["kernel_shape"]]
        self._pool(node, "max", (k[0], k[1]), list(a.get("strides", [1, 1])), list(a.get("pads", [0, 0, 0, 0])))

    def _op_AveragePool(self, node: onnx.NodeProto) -> None:
        a = self._attrs(node)
        k = [int(v) for v in a["kernel_shape"]]
        self._pool(node, "avg", (k[0], k[1]), list(a.get("strides", [1, 1])), list(a.get("pads", [0, 0, 0, 0])))

    def _op_GlobalAveragePool(self, node: onnx.NodeProto) -> None:
        shape = self._shape_of(self._state(node, 0))
        if len(shape) != 4:
            raise UnsupportedOpError(self._name(node), node.op_type, f"input {list(shape)} is not NCHW")
        self._pool(node, "avg", (shape[2], shape[3]), [1, 1], [0, 0, 0, 0])

    def _move(self, op: str, x: Value, shape: tuple[int, ...], attrs: dict, node: onnx.NodeProto,
              out_name: str) -> Value:
        """Add a data-movement or relabelling node that keeps the integer meaning of ``x``."""
        info = x.info
        out = self.graph.new_value(out_name, TensorInfo(shape, info.qtype, info.scale, info.zero_point))
        self.graph.add_node(op, [x], [out], attrs, name=f"{self._name(node)}_{op}", source=self._name(node))
        return out

    def _matmul_act(self, node: onnx.NodeProto) -> None:
        a = self._act_input(node, 0, need_quantized=True)
        b = self._act_input(node, 1, need_quantized=True)
        sa, sb = a.value.info.shape, b.value.info.shape
        if len(sa) != len(sb) or sa[:-2] != sb[:-2] or sa[-1] != sb[-2]:
            raise UnsupportedOpError(self._name(node), "MatMul", f"operands {list(sa)} x {list(sb)} (broadcasting "
                                     "between activation operands is not supported)")
        from vaqf.ops.matmul import finalize_matmul_attrs

        out = self.graph.new_value(node.output[0], TensorInfo(sa[:-1] + (sb[-1],), IntType(32),
                                                              a.value.info.scale * b.value.info.scale))
        mm = self.graph.add_node("matmul", [a.value, b.value], [out], {"relu": False, "requant": None},
                                 name=self._name(node), source=self._name(node))
        finalize_matmul_attrs(mm)
        out.info = get_spec("matmul").infer(mm, [a.value.info, b.value.info])[0]
        self._set(node, Act(out, False))

    def _dense_out_info(self, dn: Any, x: TensorInfo) -> TensorInfo:
        return get_spec("dense").infer(dn, [x])[0]

    def _fold_bias(self, dn: Any, bias_state: Any, beta: float, node: onnx.NodeProto) -> None:
        b = bias_state.real() if isinstance(bias_state, QConst) else np.asarray(bias_state.array, dtype=np.float64)
        n_out = dn.attrs["weight"].shape[0]
        try:
            b = np.broadcast_to(b.astype(np.float64) * beta, (n_out,)) if b.size in (1, n_out) else None
        except ValueError:
            b = None
        if b is None:
            raise UnsupportedOpError(self._name(node), node.op_type, "bias must be a vector over output channels")
        if not np.all(np.isfinite(b)):
            raise ModelError(f"node '{self._name(node)}' ({node.op_type}) has a bias holding NaN or infinite values")
        acc_scale = dn.inputs[0].info.scale[0] * dn.attrs["w_scale"]
        ints = round_real(b / acc_scale, Rounding.HALF_EVEN)
        if np.any(np.abs(ints) > 2**31 - 1):
            raise VaqfError(f"node '{self._name(node)}': bias does not fit 32 bits at the accumulator's scale")
        dn.attrs["bias"] = ints.astype(np.int64)
        finalize_dense_attrs(dn, dn.inputs[0].info)
        dn.outputs[0].info = self._dense_out_info(dn, dn.inputs[0].info)

    # -- looking ahead for the quantization of an op's output --
    def _output_quant(self, node: onnx.NodeProto, bits: int, signed: bool | None = None) -> tuple[IntType, float, int]:
        """Type, scale and zero point for a new output: the following quantizer's if the output feeds exactly
        one quantizer with constant parameters, else post-training quantization from calibration."""
        users = self._consumers.get(node.output[0], [])
        if len(users) == 1:
            q = users[0]
            params = self._quantizer_params(q)
            if params is not None:
                return params
        lo, hi = self._calibrated_range(node.output[0], node)
        if signed is True and lo >= 0:
            lo = -hi
        qt, scale = activation_quant(lo, hi, bits)
        return qt, scale, 0

    def _quantizer_params(self, q: onnx.NodeProto) -> tuple[IntType, float, int] | None:
        try:
            if q.domain in QONNX_DOMAINS and q.op_type in ("Quant", "IntQuant"):
                a = self._attrs(q)
                scale = np.asarray(self._const(q, 1, "scale"), dtype=np.float64).reshape(-1)
                zp = np.asarray(self._const(q, 2, "zero point"), dtype=np.float64).reshape(-1)
                bits = int(np.asarray(self._const(q, 3, "bit width")).reshape(-1)[0])
                signed, narrow = bool(a.get("signed", 1)), bool(a.get("narrow", 0))
                if scale.size != 1 or zp.size != 1 or not 2 <= bits <= 16:
                    return None
                qt = IntType(bits, signed, narrow)
                return qt, float(f32(scale[0])), int(zp[0])
            if q.domain in ("", "ai.onnx") and q.op_type == "QuantizeLinear" and self._state(q, 2) is not None:
                scale = np.asarray(self._const(q, 1, "scale"), dtype=np.float64).reshape(-1)
                zarr = self._const(q, 2, "zero point")
                qt = _ONNX_INT_TYPES.get(onnx.helper.np_dtype_to_tensor_dtype(zarr.dtype))
                if qt is None or scale.size != 1 or zarr.size != 1:
                    return None
                return qt, float(f32(scale[0])), int(zarr.reshape(-1)[0])
        except (UnsupportedOpError, KeyError):
            return None
        return None

    def _op_Add(self, node: onnx.NodeProto) -> None:
        s0, s1 = self._state(node, 0), self._state(node, 1)
        act, const = (s0, s1) if isinstance(s0, Act) else (s1, s0)
        if isinstance(act, Act) and isinstance(const, (Const, QConst)) and act.dense_without_bias is not None:
            c = const.real() if isinstance(const, QConst) else np.asarray(const.array)
            if c.size in (1, act.dense_without_bias.attrs["weight"].shape[0]) and c.ndim <= 1 or \
                    (c.ndim > 1 and c.size == c.shape[-1]):
                dn = act.dense_without_bias
                self._fold_bias(dn, Const(c.reshape(-1)), 1.0, node)
                self._set(node, Act(act.value, act.quantized))
                return
        bits = self._internal_bits()
        if isinstance(act, Act) and isinstance(const, (Const, QConst)):
            a = self._act_input(node, 0 if act is s0 else 1, need_quantized=True, bits=bits)
            b = self._const_value(node, const, a.value.info.shape, bits)
        elif all(isinstance(x, (Act, FloatInput)) for x in (s0, s1)):
            a = self._act_input(node, 0, need_quantized=True, bits=bits)
            b = self._act_input(node, 1, need_quantized=True, bits=bits).value
        else:
            raise UnsupportedOpError(self._name(node), "Add", "operands must be run-time tensors or constants")
        if a.value.info.shape != b.info.shape:
            raise UnsupportedOpError(self._name(node), "Add", f"shapes {list(a.value.info.shape)} and "
                                     f"{list(b.info.shape)} (broadcasting between tensors is not supported)")
        from vaqf.ops.add import add_attrs

        qt, scale, zp = self._output_quant(node, bits, signed=True)
        attrs = add_attrs(float(a.value.info.scale[0]), float(b.info.scale[0]), scale, qt, zp, self._name(node))
        out = self.graph.new_value(node.output[0], TensorInfo(a.value.info.shape, qt, np.array([scale]), zp))
        self.graph.add_node("add", [a.value, b], [out], attrs, name=self._name(node), source=self._name(node))
        self._set(node, Act(out, True))

    def _const_value(self, node: onnx.NodeProto, const: Any, shape: tuple[int, ...], bits: int,
                     like: TensorInfo | None = None) -> Value:
        """A constant operand as a ``const`` node: broadcast to ``shape``, quantized like ``like`` or on its own
        symmetric ``bits``-bit scale."""
        c = const.real() if isinstance(const, QConst) else np.asarray(const.array, dtype=np.float64)
        if not np.all(np.isfinite(c)):
            raise ModelError(f"node '{self._name(node)}' ({node.op_type}) has a constant operand holding NaN or "
                             "infinite values")
        try:
            c = np.broadcast_to(c.astype(np.float64), shape)
        except ValueError:
            raise UnsupportedOpError(self._name(node), node.op_type, f"constant of shape {list(c.shape)} does not "
                                     f"broadcast to {list(shape)}") from None
        if like is not None:
            qt, scale, zp = like.qtype, float(like.scale[0]), like.zero_point
        else:
            qt, scale = activation_quant(min(float(c.min()), -1e-30), float(np.abs(c).max()), bits)
            zp = 0
        q = np.clip(round_real(c / scale) + zp, qt.min, qt.max).astype(np.int64)
        info = TensorInfo(shape, qt, np.array([scale]), zp)
        out = self.graph.new_value(f"{node.output[0]}_const", info)
        self.graph.add_node("const", [], [out], {"data": q, "info": info}, name=f"{self._name(node)}_const",
                            source=self._name(node))
        return out

    def _scalar(self, node: onnx.NodeProto, i: int) -> float | None:
        st = self._state(node, i)
        if isinstance(st, (Const, QConst)):
            c = st.real() if isinstance(st, QConst) else np.asarray(st.array, dtype=np.float64)
            if c.size == 1:
                return float(c.reshape(-1)[0])
        return None

    def _rescaled(self, node: onnx.NodeProto, factor: float) -> None:
        i = 0 if isinstance(self._state(node, 0), (Act, FloatInput)) else 1
        if not factor > 0 or not np.isfinite(factor):
            raise UnsupportedOpError(self._name(node), node.op_type, f"scaling by {factor} (only positive "
                                     "scalars are supported)")
        x = self._act_input(node, i, need_quantized=False)
        info = x.value.info
        out = self.graph.new_value(node.output[0], TensorInfo(info.shape, info.qtype, info.scale * factor,
                                                              info.zero_point))
        self.graph.add_node("rescale", [x.value], [out], {"factor": float(factor)}, name=self._name(node),
                            source=self._name(node))
        self._set(node, Act(out, x.quantized))

    def _op_Mul(self, node: onnx.NodeProto) -> None:
        c = self._scalar(node, 1) if self._scalar(node, 1) is not None else self._scalar(node, 0)
        if c is None:
            raise UnsupportedOpError(self._name(node), "Mul", "only multiplication by a scalar constant is supported")
        self._rescaled(node, c)

    def _op_Div(self, node: onnx.NodeProto) -> None:
        c = self._scalar(node, 1)
        if c is None or not isinstance(self._state(node, 0), (Act, FloatInput)):
            raise UnsupportedOpError(self._name(node), "Div", "only division by a scalar constant is supported")
        self._rescaled(node, 1.0 / c)

    def _op_Softmax(self, node: onnx.NodeProto) -> None:
        from vaqf.ops.softmax import softmax_attrs

        # scores are quantized (internal precision) so the Q.K^T product requantizes in its epilogue and the
        # scores buffer holds narrow integers instead of accumulators
        x = self._act_input(node, 0, need_quantized=True, bits=self._internal_bits())
        shape = x.value.info.shape
        axis = int(self._attrs(node).get("axis", -1))
        if axis not in (-1, len(shape) - 1):
            raise UnsupportedOpError(self._name(node), "Softmax", f"axis {axis} (only the last axis)")
        bits = self.opt.act_bits or 8
        attrs = softmax_attrs(float(x.value.info.scale[0]), bits)
        out = self.graph.new_value(node.output[0], TensorInfo(shape, IntType(bits, False), np.array([2.0**-bits])))
        self.graph.add_node("softmax", [x.value], [out], attrs, name=self._name(node), source=self._name(node))
        self._set(node, Act(out, True))

    def _op_LayerNormalization(self, node: onnx.NodeProto) -> None:
        from vaqf.ops.layernorm import layernorm_attrs

        a = self._attrs(node)
        x = self._act_input(node, 0, need_quantized=True, bits=self._internal_bits())
        d = x.value.info.shape[-1]
        if int(a.get("axis", -1)) not in (-1, len(x.value.info.shape) - 1):
            raise UnsupportedOpError(self._name(node), node.op_type, "normalization over more than the last axis")
        gamma = np.broadcast_to(self._const(node, 1, "scale").astype(np.float64), (d,))
        beta = (np.broadcast_to(self._const(node, 2, "bias").astype(np.float64), (d,))
                if self._state(node, 2) is not None else np.zeros(d))
        if not (np.all(np.isfinite(gamma)) and np.all(np.isfinite(beta))):
            raise ModelError(f"node '{self._name(node)}' ({node.op_type}) has a scale or bias holding NaN or "
                             "infinite values")
        qt, scale, zp = self._output_quant(node, self._act_bits(), signed=True)
        attrs = layernorm_attrs(gamma, beta, float(a.get("epsilon", 1e-5)), float(x.value.info.scale[0]), scale, qt,
                                zp, self._name(node))
        out = self.graph.new_value(node.output[0], TensorInfo(x.value.info.shape, qt, np.array([scale]), zp))
        self.graph.add_node("layernorm", [x.value], [out], attrs, name=self._name(node), source=self._name(node))
        self._set(node, Act(out, True))

    def _op_Gelu(self, node: onnx.NodeProto) -> None:
        from vaqf.ops.lut import lut_attrs

        approx = self._attrs(node).get("approximate", b"none")
        approx = approx.decode() if isinstance(approx, bytes) else str(approx)
        fn = "gelu_tanh" if approx == "tanh" else "gelu"
        x = self._act_input(node, 0, need_quantized=True, bits=self._internal_bits())
        if x.value.info.qtype.bits > 12:
            x = self._ptq(node.input[0], node, self._internal_bits())
        qt, scale, zp = self._output_quant(node, self._act_bits(), signed=True)
        attrs = lut_attrs(fn, x.value.info, qt, scale, zp)
        out = self.graph.new_value(node.output[0], TensorInfo(x.value.info.shape, qt, np.array([scale]), zp))
        self.graph.add_node("lut", [x.value], [out], attrs, name=self._name(node), source=self._name(node))
        self._set(node, Act(out, True))

    def _op_Transpose(self, node: onnx.NodeProto) -> None:
        st = self._state(node, 0)
        if isinstance(st, (Const, QConst)):
            return self._fold_constant(node)
        shape = self._shape_of(st)
        perm = [int(p) for p in self._attrs(node).get("perm", list(range(len(shape)))[::-1])]
        x = self._per_tensor(node, 0, keeps_channels=perm[-1] == len(shape) - 1)
        out = self._move("transpose", x.value, tuple(shape[p] for p in perm), {"perm": perm}, node, node.output[0])
        self._set(node, Act(out, x.quantized))

    def _op_Concat(self, node: onnx.NodeProto) -> None:
        states = [self._state(node, i) for i in range(len(node.input))]
        acts = [i for i, s in enumerate(states) if isinstance(s, (Act, FloatInput))]
        if not acts:
            return self._fold_constant(node)
        ref = self._act_input(node, acts[0], need_quantized=True, bits=self._internal_bits()).value.info
        rank = len(ref.shape)
        axis = int(self._attrs(node).get("axis", 0))
        axis = axis + rank if axis < 0 else axis
        values = []
        for i, st in enumerate(states):
            if isinstance(st, (Const, QConst)):
                shp = (st.ints if isinstance(st, QConst) else st.array).shape
                values.append(self._const_value(node, st, tuple(shp), 8, like=ref))
            else:
                a = self._act_input(node, i, need_quantized=True, bits=self._internal_bits())
                a = self._quantize_act(a, ref.scale, ref.zero_point, ref.qtype, "HALF_EVEN",
                                       _renamed(node, f"{node.output[0]}_in{i}"))
                values.append(a.value)
        shape = list(ref.shape)
        shape[axis] = sum(v.info.shape[axis] for v in values)
        out = self.graph.new_value(node.output[0], TensorInfo(tuple(shape), ref.qtype, ref.scale, ref.zero_point))
        self.graph.add_node("concat", values, [out], {"axis": axis}, name=self._name(node), source=self._name(node))
        self._set(node, Act(out, True))

    def _slice_value(self, node: onnx.NodeProto, x: Act, axes: list[int], starts: list[int], ends: list[int],
                     steps: list[int], out_name: str) -> Value:
        shape = list(x.value.info.shape)
        n_axes, n_starts, n_ends, n_steps = [], [], [], []
        for ax, st, en, sp in zip(axes, starts, ends, steps, strict=True):
            ax = ax + len(shape) if ax < 0 else ax
            dim = shape[ax]
            r = range(dim)[slice(st, en, sp)]
            n_axes.append(ax)
            n_starts.append(r.start)
            n_ends.append(r.stop if sp > 0 else r.stop)
            n_steps.append(sp)
            shape[ax] = len(r)
        if not n_axes:
            return x.value
        out = self.graph.new_value(out_name, TensorInfo(tuple(shape), x.value.info.qtype, x.value.info.scale,
                                                        x.value.info.zero_point))
        self.graph.add_node("slice", [x.value], [out], {"axes": n_axes, "starts": n_starts, "ends": n_ends,
                                                       "steps": n_steps}, name=self._name(node) + "_" + out_name,
                            source=self._name(node))
        return out

    def _op_Slice(self, node: onnx.NodeProto) -> None:
        st = self._state(node, 0)
        if isinstance(st, (Const, QConst)):
            return self._fold_constant(node)
        starts = [int(v) for v in self._const(node, 1, "starts").reshape(-1)]
        x = self._per_tensor(node, 0, keeps_channels=False)
        ends = [int(v) for v in self._const(node, 2, "ends").reshape(-1)]
        rank = len(x.value.info.shape)
        axes = [int(v) for v in self._const(node, 3, "axes").reshape(-1)] if self._state(node, 3) is not None \
            else list(range(len(starts)))
        steps = [int(v) for v in self._const(node, 4, "steps").reshape(-1)] if self._state(node, 4) is not None \
            else [1] * len(starts)
        if any(s <= 0 for s in steps):
            raise UnsupportedOpError(self._name(node), "Slice", "negative or zero steps")
        ends = [min(e, 2**31) for e in ends]
        axes = [a + rank if a < 0 else a for a in axes]
        out = self._slice_value(node, x, axes, starts, ends, steps, node.output[0])
        self._set(node, Act(out, x.quantized))

    def _op_Gather(self, node: onnx.NodeProto) -> None:
        st = self._state(node, 0)
        if isinstance(st, (Const, QConst)):
            return self._fold_constant(node)
        x = self._per_tensor(node, 0, keeps_channels=False)
        idx = self._const(node, 1, "indices")
        if idx.ndim != 0:
            raise UnsupportedOpError(self._name(node), "Gather", "only a scalar index is supported")
        shape = x.value.info.shape
        axis = int(self._attrs(node).get("axis", 0))
        axis = axis + len(shape) if axis < 0 else axis
        i = int(idx) + (shape[axis] if int(idx) < 0 else 0)
        v = self._slice_value(node, x, [axis], [i], [i + 1], [1], node.output[0] + "_row")
        new_shape = shape[:axis] + shape[axis + 1:]
        out = self._move("reshape", v, new_shape, {"shape": list(new_shape)}, node, node.output[0])
        self._set(node, Act(out, x.quantized))

    def _op_Split(self, node: onnx.NodeProto) -> None:
        st = self._state(node, 0)
        if isinstance(st, (Const, QConst)):
            return self._fold_constant(node)
        x = self._per_tensor(node, 0, keeps_channels=False)
        shape = x.value.info.shape
        a = self._attrs(node)
        axis = int(a.get("axis", 0))
        axis = axis + len(shape) if axis < 0 else axis
        if self._state(node, 1) is not None:
            sizes = [int(v) for v in self._const(node, 1, "split").reshape(-1)]
        elif "split" in a:
            sizes = [int(v) for v in a["split"]]
        else:
            n = int(a.get("num_outputs", len(node.output)))
            sizes = [-(-shape[axis] // n)] * n
            sizes[-1] = shape[axis] - sum(sizes[:-1])
        pos = 0
        for o, size in zip(node.output, sizes, strict=True):
            v = self._slice_value(node, x, [axis], [pos], [pos + size], [1], o)
            self.env[o] = Act(v, x.quantized)
            pos += size

    def _op_Squeeze(self, node: onnx.NodeProto) -> None:
        self._squeeze(node, unsqueeze=False)

    def _op_Unsqueeze(self, node: onnx.NodeProto) -> None:
        self._squeeze(node, unsqueeze=True)

    def _squeeze(self, node: onnx.NodeProto, unsqueeze: bool) -> None:
        st = self._state(node, 0)
        if isinstance(st, (Const, QConst)):
            return self._fold_constant(node)
        shape = list(self._shape_of(st))
        axes = self._attrs(node).get("axes")
        if axes is None and self._state(node, 1) is not None:
            axes = [int(v) for v in self._const(node, 1, "axes").reshape(-1)]
        if unsqueeze:
            rank = len(shape) + len(axes or [])
            for ax in sorted(a + rank if a < 0 else a for a in axes or []):
                shape.insert(ax, 1)
        else:
            rank = len(shape)
            drop = {a + rank if a < 0 else a for a in axes} if axes else {i for i, d in enumerate(shape) if d == 1}
            shape = [d for i, d in enumerate(shape) if i not in drop]
        self._reshape_state(node, tuple(shape))

    def _op_Relu(self, node: onnx.NodeProto) -> None:
        x = self._act_input(node, 0, need_quantized=False)
        if x.relu_applied:  # fused into the producer's epilogue
            self._set(node, x)
            return
        info = x.value.info
        out = self.graph.new_value(node.output[0], TensorInfo(info.shape, info.qtype, info.scale, info.zero_point))
        self.graph.add_node("relu", [x.value], [out], {}, name=self._name(node), source=self._name(node))
        self._set(node, Act(out, x.quantized))

    def _shape_of(self, st: Any) -> tuple[int, ...]:
        if isinstance(st, Act):
            return st.value.info.shape
        if isinstance(st, FloatInput):
            return st.reshapes[-1] if st.reshapes else st.shape
        raise AssertionError(st)

    def _per_tensor(self, node: onnx.NodeProto, i: int, keeps_channels: bool) -> Act:
        """The Act at input ``i``; per-channel accumulators are first quantized per tensor (at activation bits)
        when the op rearranges their channel axis."""
        st = self._act_input(node, i, need_quantized=False)
        if st.value.info.per_channel and not keeps_channels:
            st = self._ptq(node.input[i], node, self._act_bits())
        return st

    def _reshape_state(self, node: onnx.NodeProto, shape: tuple[int, ...]) -> None:
        st = self._state(node, 0)
        if isinstance(st, FloatInput):
            self._set(node, FloatInput(st.name, st.shape, st.reshapes + [shape]))
        else:
            st = self._per_tensor(node, 0, keeps_channels=bool(shape) and shape[-1] == self._shape_of(st)[-1])
            self._set(node, self._reshape(st, shape, node))

    def _op_Flatten(self, node: onnx.NodeProto) -> None:
        st = self._state(node, 0)
        if isinstance(st, (Const, QConst)):
            return self._fold_constant(node)
        shape = self._shape_of(st)
        axis = int(self._attrs(node).get("axis", 1))
        axis = axis + len(shape) if axis < 0 else axis
        if axis < 1:
            raise UnsupportedOpError(self._name(node), "Flatten", "axis 0 would merge the batch axis")
        new = (int(np.prod(shape[:axis])), int(np.prod(shape[axis:])))
        self._reshape_state(node, new)

    def _op_Reshape(self, node: onnx.NodeProto) -> None:
        st = self._state(node, 0)
        if isinstance(st, (Const, QConst)):
            return self._fold_constant(node)
        shape = self._shape_of(st)
        target = [int(d) for d in self._const(node, 1, "shape").reshape(-1)]
        allow_zero = int(self._attrs(node).get("allowzero", 0))
        out = []
        for i, d in enumerate(target):
            out.append(shape[i] if d == 0 and not allow_zero else d)
        if out.count(-1) > 1:
            raise ModelError(f"node '{self._name(node)}': more than one -1 in the target shape")
        total = int(np.prod(shape))
        if -1 in out:
            known = int(np.prod([d for d in out if d != -1]))
            if known <= 0 or total % known:
                raise ModelError(f"node '{self._name(node)}': cannot reshape {list(shape)} to {target}")
            out[out.index(-1)] = total // known
        if int(np.prod(out)) != total or any(d <= 0 for d in out):
            raise ModelError(f"node '{self._name(node)}': cannot reshape {list(shape)} to {target}")
        self._reshape_state(node, tuple(out))

    def _op_Shape(self, node: onnx.NodeProto) -> None:
        st = self._state(node, 0)
        if isinstance(st, (Const, QConst)):
            return self._fold_constant(node)
        shape = np.asarray(self._shape_of(st), dtype=np.int64)
        a = self._attrs(node)
        start, end = a.get("start", 0), a.get("end", None)
        self._set(node, Const(shape[start:end]))


def _renamed(node: onnx.NodeProto, output: str) -> onnx.NodeProto:
    """A copy of ``node`` whose first output is ``output`` (names the requant it causes)."""
    n = onnx.NodeProto()
    n.CopyFrom(node)
    del n.output[:]
    n.output.append(output)
    n.name = output
    return n


def _per_axis(arr: np.ndarray, ndim: int, axis: int) -> np.ndarray:
    """Broadcast a per-axis scale/zero point (1-D) against a tensor of rank ``ndim`` along ``axis``."""
    a = np.asarray(arr)
    if a.ndim == 0 or a.size == 1:
        return a.reshape(())
    axis = axis + ndim if axis < 0 else axis
    shape = [1] * ndim
    shape[axis] = a.size
    return a.reshape(shape)


def import_onnx(model: str | Path | onnx.ModelProto, options: ImportOptions | None = None) -> Graph:
    """Import an ONNX/QONNX/QDQ model (path or ModelProto) into a verified vaqf Graph."""
    opt = options or ImportOptions()
    if isinstance(model, (str, Path)):
        name = Path(model).stem
        proto = load_model(model)
    else:
        name = model.graph.name or "model"
        proto = model
    check_structure(proto, name)
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


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return text[:300] + ("..." if len(text) > 300 else "")


def check_structure(model: onnx.ModelProto, name: str) -> None:
    """ONNX's own structural checks (SSA names, known ops of the default domain, attribute types)."""
    if not model.HasField("graph") or not model.graph.node:
        raise ModelError(f"{name} holds no ONNX graph")
    try:
        onnx.checker.check_model(model, full_check=False)
    except (onnx.checker.ValidationError, Exception) as e:
        raise ModelError(f"{name} is not a valid ONNX model: {_one_line(e)}") from e
