"""Elementwise and row-wise ops: ``Add`` (bias folding or the eltwise unit), scalar ``Mul``/``Div`` as
``rescale``, ``Relu``, ``Softmax``, ``LayerNormalization`` and table-based non-linearities (``Gelu``,
``Sigmoid``, ``Tanh``, ``HardSigmoid``, ``HardSwish``, ``LeakyRelu``, ``Selu``)."""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx

from vaqf.errors import ModelError, UnsupportedOpError
from vaqf.frontend.onnx_import.states import Act, Const, FloatInput, QConst
from vaqf.frontend.ptq import activation_quant
from vaqf.ir import IntType, TensorInfo, Value
from vaqf.ir.host import transform_op
from vaqf.ir.qarith import round_real


class ElementwiseOps:
    """Importer handlers for elementwise ops; mixed into :class:`Importer`, whose state they use."""

    def _op_Add(self, node: onnx.NodeProto) -> None:
        """A constant added to a dense/conv layer's raw accumulator (folded into its bias) or to the float input
        (done by the host), else the sum of two activations (op ``add`` on the eltwise unit: residual
        connections)."""
        if self._affine_fold(node, "add"):
            return
        s0, s1 = self._state(node, 0), self._state(node, 1)
        act, const = (s0, s1) if isinstance(s0, Act) else (s1, s0)
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

    def _affine_fold(self, node: onnx.NodeProto, kind: str) -> bool:
        """``node`` (Add, Sub, Mul or Div of a run-time tensor and a constant) absorbed where it costs nothing:
        into the float input's host transform (any constant that broadcasts to the input, as the model's float32
        arithmetic computes it), or into the constants of the dense layer whose raw accumulator it reads alone
        (a scalar or one value per output channel: scale, bias, rows negated for a negative factor). False when
        neither applies."""
        consts = [self._const_operand(node, i) for i in (0, 1)]
        if len(node.input) != 2 or (consts[0] is None) == (consts[1] is None):
            return False
        i = 0 if consts[1] is not None else 1  # the run-time operand
        c, st = consts[1 - i], self._state(node, i)
        if kind in ("sub", "div") and i == 1:
            kind = "r" + kind  # c - x, c / x
        if isinstance(st, FloatInput):
            return self._host_op(node, st, kind, c)
        if not isinstance(st, Act) or st.dense is None or kind == "rdiv" \
                or len(self._consumers.get(node.input[i], [])) != 1 \
                or node.input[i] in {o.name for o in self.model.graph.output}:
            return False
        n_out = st.dense.attrs["weight"].shape[0]
        if not (c.size == 1 or (c.size == n_out and c.shape[-1] == n_out)):
            return False
        c = c.reshape(-1)
        if kind == "div":
            with np.errstate(divide="ignore"):  # a zero divisor gives inf, which _fold_affine refuses by name
                mul, add = 1.0 / c, 0.0
        else:
            mul, add = {"add": (1.0, c), "sub": (1.0, -c), "rsub": (-1.0, c), "mul": (c, 0.0)}[kind]
        self._fold_affine(st.dense, mul, add, node)
        self._set(node, Act(st.dense.outputs[0], False, dense=st.dense))
        return True

    def _const_operand(self, node: onnx.NodeProto, i: int) -> np.ndarray | None:
        """Input ``i`` as a float64 constant (real values of a quantized constant), or None."""
        st = self._state(node, i) if i < len(node.input) else None
        if isinstance(st, QConst):
            return np.asarray(st.real(), dtype=np.float64)
        if isinstance(st, Const):
            return np.asarray(st.array, dtype=np.float64)
        return None

    def _host_op(self, node: onnx.NodeProto, st: FloatInput, kind: str, c: np.ndarray) -> bool:
        """A float op on the model's input before its first quantizer, appended to the host transform
        (:mod:`vaqf.ir.host`)."""
        if not np.all(np.isfinite(c)) or (kind == "div" and np.any(c == 0)):
            raise ModelError(f"node '{self._name(node)}' ({node.op_type}) applies a constant holding zero, NaN or "
                             f"infinite values to input '{st.name}'")
        if c.size != 1 and st.reshapes:
            raise UnsupportedOpError(self._name(node), node.op_type,
                                     f"a non-scalar constant applied to input '{st.name}' after it is reshaped; "
                                     "apply it before the reshape")
        try:
            shape = np.broadcast_shapes(c.shape, st.shape)
        except ValueError:
            shape = None
        if shape != tuple(st.shape):
            raise UnsupportedOpError(self._name(node), node.op_type,
                                     f"a constant of shape {list(c.shape)} applied to input '{st.name}' of shape "
                                     f"{list(st.shape)} changes its shape")
        op = transform_op(kind, c if c.size != 1 else c.reshape(()))
        self._set(node, FloatInput(st.name, st.shape, list(st.reshapes), st.ops + [op]))
        return True

    def _scalar(self, node: onnx.NodeProto, i: int) -> float | None:
        c = self._const_operand(node, i)
        return float(c.reshape(-1)[0]) if c is not None and c.size == 1 else None

    def _rescaled(self, node: onnx.NodeProto, factor: float) -> None:
        i = 0 if isinstance(self._state(node, 0), (Act, FloatInput)) else 1
        if not factor > 0 or not np.isfinite(factor):
            raise UnsupportedOpError(self._name(node), node.op_type, f"scaling by {factor} (only positive "
                                     "scalars are supported, or any factor on a dense layer's own result)")
        x = self._act_input(node, i, need_quantized=False)
        info = x.value.info
        out = self.graph.new_value(node.output[0], TensorInfo(info.shape, info.qtype, info.scale * factor,
                                                              info.zero_point))
        self.graph.add_node("rescale", [x.value], [out], {"factor": float(factor)}, name=self._name(node),
                            source=self._name(node))
        self._set(node, Act(out, x.quantized))

    def _op_Mul(self, node: onnx.NodeProto) -> None:
        """Multiplication by a constant: folded into a dense layer's scale or the host's input transform, else
        by a positive scalar: the scale changes (op ``rescale``), the integers do not."""
        if self._affine_fold(node, "mul"):
            return
        c = self._scalar(node, 1) if self._scalar(node, 1) is not None else self._scalar(node, 0)
        if c is None:
            raise UnsupportedOpError(self._name(node), "Mul", "only multiplication by a constant (a scalar, or one "
                                     "value per channel of a dense layer's result or on the input) is supported")
        self._rescaled(node, c)

    def _op_Div(self, node: onnx.NodeProto) -> None:
        """Division by a constant: folded like ``Mul``, else by a positive scalar as op ``rescale``."""
        if self._affine_fold(node, "div"):
            return
        c = self._scalar(node, 1)
        if c is None or not isinstance(self._state(node, 0), (Act, FloatInput)):
            raise UnsupportedOpError(self._name(node), "Div", "only division by a constant (a scalar, or one value "
                                     "per channel of a dense layer's result or on the input) is supported")
        self._rescaled(node, 1.0 / c)

    def _op_Sub(self, node: onnx.NodeProto) -> None:
        """Subtraction of a constant (or from one) folded into a dense layer's bias (rows negated for c - x) or
        the host's input transform; other subtractions are refused."""
        if self._affine_fold(node, "sub"):
            return
        raise UnsupportedOpError(self._name(node), "Sub", "only a constant subtracted from (or minus) the input or "
                                 "a dense/conv layer's own result is supported")

    def _op_Relu(self, node: onnx.NodeProto) -> None:
        """Fused into the producer's epilogue where it can be, else op ``relu`` (max with the zero point)."""
        x = self._act_input(node, 0, need_quantized=False)
        if x.relu_applied:  # fused into the producer's epilogue
            self._set(node, x)
            return
        if x.channel_scale is not None:
            raise UnsupportedOpError(self._name(node), "Relu", "a Relu not fused into the layer before it, on a "
                                     "tensor with per-channel activation scales")
        info = x.value.info
        out = self.graph.new_value(node.output[0], TensorInfo(info.shape, info.qtype, info.scale, info.zero_point))
        self.graph.add_node("relu", [x.value], [out], {}, name=self._name(node), source=self._name(node))
        self._set(node, Act(out, x.quantized))

    def _op_Softmax(self, node: onnx.NodeProto) -> None:
        """Softmax over the last axis in integer arithmetic (op ``softmax``: table exponential, one reciprocal per
        row)."""
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
        """LayerNorm over the last axis in integer arithmetic (op ``layernorm``)."""
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

    def _table(self, node: onnx.NodeProto, fn: str, params: tuple[float, ...] = (), signed: bool | None = True) -> None:
        """An elementwise non-linearity as a lookup table (op ``lut``): the input at most 12 bits (quantized
        post-training at the internal precision if it is wider), the output quantized as its consumer's
        quantizer says or from calibration (``signed=None``: by the calibrated range, for functions that
        never go negative)."""
        from vaqf.ops.lut import lut_attrs

        x = self._act_input(node, 0, need_quantized=True, bits=self._internal_bits())
        if x.value.info.qtype.bits > 12:
            x = self._ptq(node.input[0], node, self._internal_bits())
        qt, scale, zp = self._output_quant(node, self._act_bits(), signed=signed)
        attrs = lut_attrs(fn, x.value.info, qt, scale, zp, params)
        out = self.graph.new_value(node.output[0], TensorInfo(x.value.info.shape, qt, np.array([scale]), zp))
        self.graph.add_node("lut", [x.value], [out], attrs, name=self._name(node), source=self._name(node))
        self._set(node, Act(out, True))

    def _op_Gelu(self, node: onnx.NodeProto) -> None:
        """GELU (exact erf form, or the tanh approximation), tabulated."""
        approx = self._attrs(node).get("approximate", b"none")
        approx = approx.decode() if isinstance(approx, bytes) else str(approx)
        self._table(node, "gelu_tanh" if approx == "tanh" else "gelu")

    def _op_Sigmoid(self, node: onnx.NodeProto) -> None:
        """Sigmoid, tabulated (output unsigned)."""
        self._table(node, "sigmoid", signed=None)

    def _op_Tanh(self, node: onnx.NodeProto) -> None:
        """Tanh, tabulated."""
        self._table(node, "tanh")

    def _op_HardSigmoid(self, node: onnx.NodeProto) -> None:
        """HardSigmoid (ONNX alpha, beta; defaults 0.2, 0.5), tabulated (output unsigned)."""
        a = self._attrs(node)
        self._table(node, "hard_sigmoid", (float(a.get("alpha", 0.2)), float(a.get("beta", 0.5))), signed=None)

    def _op_HardSwish(self, node: onnx.NodeProto) -> None:
        """HardSwish, tabulated."""
        self._table(node, "hard_swish")

    def _op_LeakyRelu(self, node: onnx.NodeProto) -> None:
        """LeakyRelu (ONNX alpha, default 0.01), tabulated."""
        self._table(node, "leaky_relu", (float(self._attrs(node).get("alpha", 0.01)),))

    def _op_Selu(self, node: onnx.NodeProto) -> None:
        """Selu (ONNX alpha, gamma and their defaults), tabulated."""
        a = self._attrs(node)
        self._table(node, "selu", (float(a.get("alpha", 1.67326319217681884765625)),
                                   float(a.get("gamma", 1.05070102214813232421875))))
