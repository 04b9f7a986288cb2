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
from vaqf.ir import BinaryType, IntType, QType, TensorInfo, Value
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
        """Folded into the float convolution it follows; elsewhere refused with that reason."""
        raise UnsupportedOpError(self._name(node), "BatchNormalization",
                                 "only a BatchNormalization right after a convolution with float weights is "
                                 "supported (it is folded into the convolution)")

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
