"""The importer: walks the ONNX graph in order, keeps every tensor's state and dispatches each node to its
handler (the mixins hold the handlers by concern)."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from vaqf.errors import CalibrationRequired, ModelError, UnsupportedOpError, VaqfError
from vaqf.frontend.calibrate import collect_ranges, input_range
from vaqf.frontend.onnx_import.elementwise import ElementwiseOps
from vaqf.frontend.onnx_import.folding import ConstantFolding
from vaqf.frontend.onnx_import.layout import LayoutOps
from vaqf.frontend.onnx_import.loading import (
    QONNX_DOMAINS,
    _check_elements,
    _one_line,
    _short,
    model_format,
)
from vaqf.frontend.onnx_import.matrix import MatrixOps
from vaqf.frontend.onnx_import.quantizers import QuantizerDecoding
from vaqf.frontend.onnx_import.states import Act, Const, FloatInput, ImportOptions, QConst, _renamed
from vaqf.frontend.patterns import LIFTED_DOMAIN
from vaqf.frontend.ptq import WEIGHT_MODES, activation_quant, f32, quantize_weight
from vaqf.ir import BinaryType, Graph, IntType, TensorInfo, Value
from vaqf.ir.qarith import Rounding, round_real
from vaqf.ops.common import BIPOLAR_CONTAINER, bipolar_params, requant_out_info, requant_params
from vaqf.ops.dense import finalize_dense_attrs

log = logging.getLogger(__name__)

#: the QONNX custom ops the importer decodes (any of QONNX_DOMAINS), by handler method
QONNX_HANDLERS = {"Quant": "_quant", "IntQuant": "_quant", "BipolarQuant": "_bipolar", "Trunc": "_trunc"}


class Importer(QuantizerDecoding, MatrixOps, ElementwiseOps, LayoutOps, ConstantFolding):
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
        self.input_transform: dict[str, dict] = {}  # vaqf.ir.host: float ops and bipolar inputs
        self._bipolar_values: dict[str, float] = {}  # IR values holding bipolar activations -> their scale
        self._bias_real: dict[str, np.ndarray] = {}  # dense name -> its folded bias before rounding (acc units)
        self._fine_bias: set[str] = set()  # denses whose bias's sub-step part goes into the requant's offset
        self._absorbed: set[str] = set()  # outputs of BatchNormalization nodes a convolution folded in
        self._ranges: dict[str, tuple[float, float]] | None = None
        self._ptq_tensors: list[str] = []
        self._dense_nodes: list[tuple[Any, np.ndarray | None]] = []  # (node, float weight if post-quantized)

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
            self._check_channel_scales(node)
            self._lower(node)
        if not g.output:
            raise ModelError("the model declares no outputs")
        for out in g.output:
            st = self.env.get(out.name)
            if not isinstance(st, Act):
                raise ModelError(f"graph output '{out.name}' is not computed from the input at run time")
            if st.channel_scale is not None:
                raise UnsupportedOpError(out.name, "output", "a graph output with per-channel activation scales; "
                                         "quantize it per tensor")
            self.graph.outputs.append(st.value)
        self._last_layers_int8()
        self.graph.metadata["input_rounding"] = self.input_rounding
        if self.input_transform:
            self.graph.metadata["input_transform"] = self.input_transform
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

    @staticmethod
    def _attrs(node: onnx.NodeProto) -> dict[str, Any]:
        return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}

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
            if fmt == "qonnx" and tensor in {i.name for i in self.original.graph.input}:
                return input_range(self.original, tensor, self.opt.calib)  # the input's quantizer, from the data
            if fmt == "qonnx":
                raise CalibrationRequired(
                    f"tensor '{tensor}' feeding node '{self._name(consumer)}' has no quantizer; QONNX models "
                    "must quantize every activation that feeds a matrix product (add a Quant node)")
            self._ranges = collect_ranges(self.original, self.opt.calib, self._float_tensors())
        if tensor not in self._ranges:
            self._ranges.update(collect_ranges(self.original, self.opt.calib, [tensor]))
        return self._ranges[tensor]

    def _float_tensors(self) -> list[str]:
        """The tensors calibration records: the original model's (the rewritten model's new ones have none)."""
        names = []
        for n in self.original.graph.node:
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

    #: the ops that read a tensor with per-channel activation scales (Act.channel_scale): a depthwise Conv folds
    #: them into its weight scales (checked there), the others keep each channel apart
    CHANNEL_SCALE_READERS = ("Conv", "MaxPool", "AveragePool", "GlobalAveragePool", "Relu", "Quant")

    def _check_channel_scales(self, node: onnx.NodeProto) -> None:
        """Refuse a node that would mix the channels of a tensor whose channels have their own scales (a
        BatchNormalization already folded into the convolution before it reads nothing)."""
        if node.output and node.output[0] in self._absorbed:
            return
        for name in node.input:
            st = self.env.get(name)
            if isinstance(st, Act) and st.channel_scale is not None and node.op_type not in self.CHANNEL_SCALE_READERS:
                raise UnsupportedOpError(self._name(node), node.op_type,
                                         f"its input '{name}' has per-channel activation scales, which only a "
                                         "depthwise convolution, max pooling or Relu may read; quantize that "
                                         "activation per tensor")

    def _quantize_act(self, st: Any, scale: np.ndarray, zp: int, qt: IntType, rounding: str,
                      node: onnx.NodeProto) -> Act:
        scale = f32(np.asarray(scale, dtype=np.float64).reshape(-1))
        if not np.all(scale > 0) or not np.all(np.isfinite(scale)):
            raise ModelError(f"node '{self._name(node)}' has a non-positive or non-finite scale")
        if scale.size != 1 and np.all(scale == scale[0]):
            scale = scale[:1]  # per-channel in form only
        if scale.size != 1:
            return self._quantize_channels(st, scale, zp, qt, rounding, node)
        bipolar = isinstance(qt, BinaryType)
        if isinstance(st, FloatInput):
            existing = next((v for v in self.graph.inputs if v.name == st.name), None)
            transform = {"ops": st.ops, "bipolar": bipolar}
            if existing is None:
                existing = self.graph.add_input(st.name, TensorInfo(st.shape, BIPOLAR_CONTAINER if bipolar else qt,
                                                                    scale, zp))
                self.input_rounding[st.name] = Rounding.parse(rounding).value
                if st.ops or bipolar:
                    self.input_transform[st.name] = transform
                if bipolar:
                    self._bipolar_values[existing.name] = float(scale[0])
                defined_here = True
            else:
                if self.input_transform.get(st.name, {"ops": [], "bipolar": False}) != transform:
                    raise UnsupportedOpError(self._name(node), node.op_type,
                                             f"input '{st.name}' is quantized a second time after other float "
                                             "ops; one input reaches the accelerator one way")
                defined_here = False
            act = Act(existing, True)
            for shape in st.reshapes:
                act = self._reshape(act, shape, node)
            if defined_here:
                return act
            st = act
        assert isinstance(st, Act)
        src = st.value
        if bipolar and self._bipolar_values.get(src.name) == float(scale[0]):
            return Act(src, True)  # already bipolar at this scale (chosen by looking ahead)
        if (not bipolar and src.info.qtype == qt and src.info.zero_point == zp and not src.info.per_channel
                and float(src.info.scale[0]) == float(scale[0])):
            return Act(src, True)  # already exactly this quantization (e.g. chosen by looking ahead)
        channels = src.info.shape[-1] if src.info.per_channel else 1
        if bipolar:
            rq = bipolar_params(float(scale[0]), channels)
        else:
            rq = requant_params(src.info.scale, float(scale[0]), channels, qt, zp,
                                Rounding.parse(rounding).value, self._name(node))
            self._sub_step_offset(st, rq)
        out = self.graph.new_value(node.output[0] if node.output else "q", requant_out_info(src.info.shape, rq))
        self.graph.add_node("requant", [src], [out], rq, name=self._name(node), source=self._name(node))
        if bipolar:
            self._bipolar_values[out.name] = float(scale[0])
        return Act(out, True)

    def _quantize_channels(self, st: Any, scale: np.ndarray, zp: int, qt: IntType, rounding: str,
                           node: onnx.NodeProto) -> Act:
        """Per-channel activation scales s[c] (Brevitas's per-output-channel act quantizers): the integers of
        that quantizer, held under the value's scale max(s) with channel_scale s / max(s). Made by the requant
        after a convolution or dense layer (channels on the last axis there; the ONNX tensor's axis 1), or found
        already made (the look-ahead of the layer before)."""
        s_ref = float(scale.max())
        ratio = f32(scale / s_ref)
        if isinstance(st, Act) and st.channel_scale is not None:
            src = st.value.info
            if (src.qtype == qt and src.zero_point == zp and float(src.scale[0]) == s_ref
                    and st.channel_scale.shape == ratio.shape and np.all(st.channel_scale == ratio)):
                return st
        if not isinstance(st, Act) or st.dense is None or st.value is not st.dense.outputs[0] \
                or st.value.info.shape[-1] != scale.size or isinstance(qt, BinaryType):
            raise UnsupportedOpError(self._name(node), node.op_type,
                                     f"per-channel activation scales ({scale.size}) are supported on the output of "
                                     "a convolution or dense layer (and its BatchNormalization and Relu) only")
        src = st.value
        rq = requant_params(np.asarray(src.info.scale, dtype=np.float64) / ratio, s_ref, scale.size, qt, zp,
                            Rounding.parse(rounding).value, self._name(node))
        self._sub_step_offset(st, rq)
        out = self.graph.new_value(node.output[0] if node.output else "q", requant_out_info(src.info.shape, rq))
        self.graph.add_node("requant", [src], [out], rq, name=self._name(node), source=self._name(node))
        return Act(out, True, channel_scale=ratio)

    def _sub_step_offset(self, st: Act, rq: dict) -> None:
        """A dense layer's raw accumulator requantized after a BatchNormalization or affine was folded into it:
        the part of the exact bias below one accumulator step goes into the requantization's offset (in product
        units, rounded to nearest), so the output levels are those of the real-valued layer (a 2-bit quantizer
        right after BatchNormalization flips levels otherwise). A fused Relu before an output that saturates at
        its zero point anyway (unsigned, zero point 0) is dropped, the clamp being the same Relu; with any
        other fused Relu no offset (relu of the integer accumulator would come before it)."""
        dn = st.dense
        if dn is None or dn.name not in self._fine_bias or st.value is not dn.outputs[0]:
            return
        if dn.attrs.get("relu") and rq["qtype"].min == rq["zero_point"] and not rq.get("bipolar"):
            dn.attrs["relu"] = False  # the requantization's clamp at its zero point is the Relu (exactly)
            finalize_dense_attrs(dn, dn.inputs[0].info)
            dn.outputs[0].info = self._dense_out_info(dn, dn.inputs[0].info)  # the accumulator takes both signs
        if dn.attrs.get("relu"):
            return
        n_out = dn.attrs["weight"].shape[0]
        rest = self._bias_real[dn.name] - np.asarray(dn.attrs["bias"], dtype=np.float64)
        mant = np.broadcast_to(np.asarray(rq["mantissa"], dtype=np.int64), (n_out,)).copy()
        offset = round_real(rest * mant, Rounding.HALF_EVEN).astype(np.int64)
        if np.any(offset != 0):
            rq["mantissa"] = mant
            rq["shift"] = np.broadcast_to(np.asarray(rq["shift"], dtype=np.int64), (n_out,)).copy()
            rq["offset"] = offset

    def _reshape(self, act: Act, shape: tuple[int, ...], node: onnx.NodeProto) -> Act:
        info = act.value.info
        out = self.graph.new_value(node.output[0], TensorInfo(shape, info.qtype, info.scale, info.zero_point))
        self.graph.add_node("reshape", [act.value], [out], {"shape": list(shape)}, name=self._name(node),
                            source=self._name(node))
        self._keep_bipolar(act.value, out)
        return Act(out, act.quantized)

    def _lower(self, node: onnx.NodeProto) -> None:
        op = node.op_type
        if node.domain in QONNX_DOMAINS:
            handler = getattr(self, QONNX_HANDLERS[op]) if op in QONNX_HANDLERS else None
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

    def _move(self, op: str, x: Value, shape: tuple[int, ...], attrs: dict, node: onnx.NodeProto,
              out_name: str) -> Value:
        """Add a data-movement or relabelling node that keeps the integer meaning of ``x``."""
        info = x.info
        out = self.graph.new_value(out_name, TensorInfo(shape, info.qtype, info.scale, info.zero_point))
        self.graph.add_node(op, [x], [out], attrs, name=f"{self._name(node)}_{op}", source=self._name(node))
        if op != "pool" or attrs.get("kind") == "max":  # moves, and the max of +-1 (padding reads -1)
            self._keep_bipolar(x, out)
        return out

    def _keep_bipolar(self, src: Value, out: Value) -> None:
        """``out`` holds ``src``'s elements rearranged: bipolar if ``src`` is (a BipolarQuant after it is then
        the identity)."""
        if src.name in self._bipolar_values:
            self._bipolar_values[out.name] = self._bipolar_values[src.name]
