"""Matrix products and convolutions lowered onto the GEMM and matmul units: ``Gemm``/``MatMul`` with
constant weights as ``dense`` (bias folded in), activation x activation ``MatMul`` as ``matmul``, ``Conv`` as
patch GEMM or im2col + GEMM."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import onnx

from vaqf.errors import ModelError, UnsupportedOpError, VaqfError
from vaqf.frontend.onnx_import.states import Act, Const, FloatInput, QConst, _renamed
from vaqf.frontend.ptq import f32, quantize_weight
from vaqf.ir import BinaryType, IntType, QType, TensorInfo, Value, int_type_for_range
from vaqf.ir.qarith import Rounding, round_real
from vaqf.ops import get_spec
from vaqf.ops.dense import finalize_dense_attrs

log = logging.getLogger(__name__)


class MatrixOps:
    """Importer handlers for matrix products; mixed into :class:`Importer`, whose state they use."""

    def _op_Gemm(self, node: onnx.NodeProto) -> None:
        """Op ``dense`` (constant weights, transB either way; bias folded)."""
        a = self._attrs(node)
        if a.get("transA", 0):
            raise UnsupportedOpError(self._name(node), "Gemm", "transA=1 is not supported")
        w_state = self._state(node, 1)
        trans_b = bool(a.get("transB", 0))
        self._dense(node, w_state, trans_b=trans_b, alpha=float(a.get("alpha", 1.0)),
                    bias=self._state(node, 2), beta=float(a.get("beta", 1.0)))

    def _op_MatMul(self, node: onnx.NodeProto) -> None:
        """Op ``dense`` with constant weights, else op ``matmul`` (activation x activation: attention)."""
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
            self._fold_bias(act.dense, bias, beta, node)
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
        return Act(out, False, dense=dn)

    def _op_Conv(self, node: onnx.NodeProto) -> None:
        """2-D convolution with constant weights on the GEMM unit: kernel = stride without padding (patch
        embedding) as reshape, transpose, dense; any other as im2col rows into the GEMM; then back to NCHW."""
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
            self._fold_bias(act.dense, self._state(node, 2), 1.0, node)
        last = self._absorb_batchnorm(node, act)
        # per-channel accumulators cannot be transposed: quantize per tensor (the next quantizer's or calibrated)
        qt, scale, zp = self._output_quant(last, self._internal_bits(), signed=True, bipolar=True)
        act = self._quantize_act(act, np.array([scale]), zp, qt, "HALF_EVEN", _renamed(node, node.output[0] + "_q"))
        t = self._move("transpose", act.value, (1, d, h * w), {"perm": [0, 2, 1]}, node, "nchw")
        out = self._move("reshape", t, (1, d, h, w), {"shape": [1, d, h, w]}, node, node.output[0])
        self._set_conv_out(node, last, Act(out, True))

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
            self._fold_bias(act.dense, self._state(node, 2), 1.0, node)
        last = self._absorb_batchnorm(node, act)
        users = self._consumers.get(last.output[0], [])
        relu = users[0] if len(users) == 1 and users[0].op_type == "Relu" else None
        if relu is not None:
            act.dense.attrs["relu"] = True
            qt, scale, zp = self._output_quant(relu, self._act_bits(), bipolar=True)
        else:
            qt, scale, zp = self._output_quant(last, self._internal_bits(), signed=True, bipolar=True)
        act = self._quantize_act(act, np.array([scale]), zp, qt, "HALF_EVEN", _renamed(node, node.output[0] + "_q"))
        t = self._move("transpose", act.value, (1, d, ho * wo), {"perm": [0, 2, 1]}, node, node.output[0] + "_nchw")
        out = self._move("reshape", t, (1, d, ho, wo), {"shape": [1, d, ho, wo]}, node, node.output[0])
        self._set_conv_out(node, last, Act(out, True, relu_applied=relu is not None))

    def _set_conv_out(self, node: onnx.NodeProto, last: onnx.NodeProto, act: Act) -> None:
        """The convolution's result is ``last``'s output (the conv's own, or its absorbed BatchNormalization's)."""
        self._set(node, act)
        if last is not node:
            self._set(last, act)

    def _absorb_batchnorm(self, node: onnx.NodeProto, act: Act) -> onnx.NodeProto:
        """A BatchNormalization that is the convolution's only consumer, folded into the GEMM's constants before
        the accumulator is requantized (it cannot follow the move back to NCHW): the node whose output the conv
        now produces (the BatchNormalization, marked absorbed, or the conv itself)."""
        users = self._consumers.get(node.output[0], [])
        if len(users) != 1 or users[0].op_type != "BatchNormalization" or users[0].domain not in ("", "ai.onnx") \
                or node.output[0] in {o.name for o in self.model.graph.output}:
            return node
        bn = users[0]
        self._fold_batchnorm(act.dense, bn)
        self._absorbed.add(bn.output[0])
        return bn

    def _batchnorm_params(self, bn: onnx.NodeProto, channels: int) -> tuple[np.ndarray, np.ndarray]:
        """A BatchNormalization in inference form as y = a * x + b per channel (float64)."""
        a = self._attrs(bn)
        if int(a.get("training_mode", 0)):
            raise UnsupportedOpError(self._name(bn), "BatchNormalization", "training_mode=1 (export in eval mode)")
        gamma, beta, mean, var = (np.asarray(self._const(bn, i, what), dtype=np.float64).reshape(-1)
                                  for i, what in ((1, "scale"), (2, "bias"), (3, "mean"), (4, "variance")))
        if any(p.size not in (1, channels) for p in (gamma, beta, mean, var)):
            raise UnsupportedOpError(self._name(bn), "BatchNormalization",
                                     f"parameters are not one per channel ({channels} channels)")
        sigma = np.sqrt(var + float(a.get("epsilon", 1e-5)))
        return np.broadcast_to(gamma / sigma, (channels,)), np.broadcast_to(beta - gamma * mean / sigma, (channels,))

    def _fold_batchnorm(self, dn: Any, bn: onnx.NodeProto) -> None:
        """A BatchNormalization in inference form folded into ``dn``'s constants (:meth:`_fold_affine`)."""
        mul, add = self._batchnorm_params(bn, dn.attrs["weight"].shape[0])
        self._fold_affine(dn, mul, add, bn)

    def _fold_affine(self, dn: Any, mul: np.ndarray, add: np.ndarray, node: onnx.NodeProto) -> None:
        """y = mul[n] * (S[n] * acc[n]) + add[n] on ``dn``'s raw accumulator of scale S, folded into its
        constants: the weight row negated where mul[n] < 0 (exact), the scale becomes |mul[n]| * S[n] and add[n]
        moves into the bias in accumulator units (rounded down when a BipolarQuant follows ``node``, which makes
        its sign exact; else to nearest, the rest going into the offset of the requantization that follows:
        Importer._sub_step_offset). A channel with mul[n] == 0 keeps its scale and becomes its constant."""
        n_out = dn.attrs["weight"].shape[0]
        mul = np.broadcast_to(np.asarray(mul, dtype=np.float64).reshape(-1), (n_out,))
        add = np.broadcast_to(np.asarray(add, dtype=np.float64).reshape(-1), (n_out,))
        if not (np.all(np.isfinite(mul)) and np.all(np.isfinite(add))):
            raise ModelError(f"node '{self._name(node)}' ({node.op_type}) has constants holding NaN or infinite "
                             "values")
        s_in = float(dn.inputs[0].info.scale[0])
        acc_scale = s_in * np.broadcast_to(np.asarray(dn.attrs["w_scale"], dtype=np.float64), (n_out,))
        a = mul * acc_scale  # y = a * acc + add
        sign = np.where(a < 0, -1, 1)
        zero = a == 0
        weight = dn.attrs["weight"].astype(np.int64)
        weight[zero] = 0
        weight = weight * sign[:, None]
        mag = np.where(zero, acc_scale, np.abs(a))
        bias_acc = np.where(zero, 0.0, self._bias_acc(dn) * sign) + add / mag
        self._retype_weights(dn, weight, node)
        dn.attrs["w_scale"] = f32(mag / s_in)
        users = self._consumers.get(node.output[0], [])
        floor = len(users) == 1 and users[0].op_type == "BipolarQuant"
        self._set_bias(dn, bias_acc, node, Rounding.FLOOR if floor else Rounding.HALF_EVEN)
        if not floor:
            self._fine_bias.add(dn.name)  # the requantization that follows takes the sub-step part

    def _retype_weights(self, dn: Any, weight: np.ndarray, node: onnx.NodeProto) -> None:
        """New integer weights for ``dn`` (rows negated or zeroed), the type widened if negation needs it."""
        wt = dn.attrs["w_type"]
        if not isinstance(wt, BinaryType) and (weight.min(initial=0) < wt.min or weight.max(initial=0) > wt.max):
            wt = int_type_for_range(int(weight.min(initial=0)), int(weight.max(initial=0)))
            log.info("node '%s': weights widened to %s (rows negated)", self._name(node), wt)
            if wt.bits > 16:
                raise UnsupportedOpError(self._name(node), node.op_type, f"{wt.bits}-bit weights (max 16)")
        if isinstance(wt, BinaryType) and np.any(weight == 0):
            wt = IntType(2, True, narrow=True)  # a zeroed row: ternary weights
        dn.attrs["w_type"] = wt
        dn.attrs["weight"] = weight.astype(np.int8 if wt.bits <= 8 else np.int16)

    def _op_BatchNormalization(self, node: onnx.NodeProto) -> None:
        """Folded into the dense layer or convolution it follows (float weights: into the weights before they
        are quantized; quantized weights: into the accumulator's scale and bias, rows negated where the scale is
        negative); elsewhere refused with that reason."""
        if node.output[0] in self._absorbed:
            return  # folded by the convolution before it
        st = self._state(node, 0)
        if not isinstance(st, Act) or st.dense is None or len(self._consumers.get(node.input[0], [])) != 1 \
                or len(st.value.info.shape) != 2:
            raise UnsupportedOpError(self._name(node), "BatchNormalization",
                                     "only a BatchNormalization right after a convolution or a dense layer (Gemm, "
                                     "MatMul) that nothing else reads is supported (it is folded into that layer's "
                                     "constants); fold it into a neighbouring layer before export")
        self._fold_batchnorm(st.dense, node)
        self._set(node, Act(st.value, False, dense=st.dense))

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
        acc_scale = dn.inputs[0].info.scale[0] * np.asarray(dn.attrs["w_scale"], dtype=np.float64)
        self._set_bias(dn, self._bias_acc(dn) + b / acc_scale, node, Rounding.HALF_EVEN)

    def _bias_acc(self, dn: Any) -> np.ndarray:
        """The bias folded into ``dn`` so far in accumulator units, before rounding (float64)."""
        return self._bias_real.get(dn.name, np.asarray(dn.attrs["bias"], dtype=np.float64))

    def _set_bias(self, dn: Any, bias_acc: np.ndarray, node: onnx.NodeProto, rounding: Rounding) -> None:
        """The dense's bias from its exact value in accumulator units (every fold adds to it; one rounding)."""
        ints = round_real(bias_acc, rounding)
        if np.any(np.abs(ints) > 2**31 - 1):
            raise VaqfError(f"node '{self._name(node)}': bias does not fit 32 bits at the accumulator's scale")
        self._bias_real[dn.name] = np.asarray(bias_acc, dtype=np.float64)
        dn.attrs["bias"] = ints.astype(np.int64)
        finalize_dense_attrs(dn, dn.inputs[0].info)
        dn.outputs[0].info = self._dense_out_info(dn, dn.inputs[0].info)
