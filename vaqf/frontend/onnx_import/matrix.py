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


def _reshaped_weights(w: Any, shape: tuple[int, ...]) -> Any:
    """Constant convolution weights (float or quantized) with a new shape (same elements)."""
    if isinstance(w, QConst):
        scale = np.asarray(w.scale)
        return QConst(w.ints.reshape(shape), scale.reshape(shape[:1] + (1,) * (len(shape) - 1))
                      if scale.ndim == len(w.ints.shape) and scale.size == shape[0] else scale, w.qtype)
    return Const(np.asarray(w.array).reshape(shape))


def _block_diagonal(w: Any, group: int, channels: int, where: str) -> Any:
    """Grouped convolution weights [M, C/g, kh, kw] as the equivalent dense weights [M, C, kh, kw]: output
    channel m reads only its group's input channels, zeros elsewhere (binary weights become ternary)."""
    ints = w.ints if isinstance(w, QConst) else np.asarray(w.array)
    m, cg = ints.shape[:2]
    full = np.zeros((m, channels) + ints.shape[2:], dtype=ints.dtype)
    per = m // group
    for g in range(group):
        full[g * per:(g + 1) * per, g * cg:(g + 1) * cg] = ints[g * per:(g + 1) * per]
    if not isinstance(w, QConst):
        return Const(full)
    scale = np.asarray(w.scale)
    if scale.ndim == ints.ndim and scale.shape[1] != 1:
        raise UnsupportedOpError(where, "Conv", "a grouped convolution's weight scale varies along the input axis")
    qtype = IntType(2, True, narrow=True) if isinstance(w.qtype, BinaryType) else w.qtype
    return QConst(full, scale, qtype)


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
        """Convolution with constant weights on the GEMM unit, 2-D or 1-D (as 2-D of height 1), grouped and
        depthwise included (block-diagonal weights: the zeros outside each group's channels make the layer
        group-sparse, which the dense-block form runs without them): kernel = stride without padding (patch
        embedding) as reshape, transpose, dense; any other as im2col rows into the GEMM; then back to NCHW."""
        a = self._attrs(node)
        w_state = self._state(node, 1)
        wshape = (w_state.ints if isinstance(w_state, QConst) else w_state.array).shape \
            if isinstance(w_state, (Const, QConst)) else None
        if wshape is None or len(wshape) not in (3, 4):
            raise UnsupportedOpError(self._name(node), "Conv", "only 1-D and 2-D convolutions with constant weights")
        one_d = len(wshape) == 3
        if list(a.get("dilations", [1] * (len(wshape) - 2))) != [1] * (len(wshape) - 2):
            raise UnsupportedOpError(self._name(node), "Conv", "dilated convolutions are not supported")
        if a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
            raise UnsupportedOpError(self._name(node), "Conv", "auto_pad (export with explicit pads)")
        x = self._act_input(node, 0, need_quantized=True)
        shp = x.value.info.shape
        if x.channel_scale is not None:
            w_state = self._fold_channel_scale(node, x, w_state, wshape, int(a.get("group", 1)))
            x = Act(x.value, True, relu_applied=x.relu_applied)
        if len(shp) != len(wshape):
            raise UnsupportedOpError(self._name(node), "Conv", f"input {list(shp)} is not "
                                     f"{'NCL' if one_d else 'NCHW'} for weights {list(wshape)}")
        strides = [int(v) for v in a.get("strides", [1] * (len(wshape) - 2))]
        pads = [int(v) for v in a.get("pads", [0] * 2 * (len(wshape) - 2))]
        if one_d:  # as 2-D with height 1: [N, C, 1, L], kernel 1 x k
            strides, pads = [1, strides[0]], [0, pads[0], 0, pads[1]]
            x = Act(self._move("reshape", x.value, (shp[0], shp[1], 1, shp[2]),
                               {"shape": [shp[0], shp[1], 1, shp[2]]}, node, node.output[0] + "_2d"), True)
            w_state = _reshaped_weights(w_state, wshape[:2] + (1,) + wshape[2:])
            wshape = wshape[:2] + (1,) + wshape[2:]
            shp = x.value.info.shape
        group = int(a.get("group", 1))
        if group != 1:
            if group < 1 or shp[1] % group or wshape[0] % group or wshape[1] * group != shp[1]:
                raise UnsupportedOpError(self._name(node), "Conv", f"group={group} with {shp[1]} input and "
                                         f"{wshape[0]} output channels, weights {list(wshape)}")
            w_state = _block_diagonal(w_state, group, shp[1], self._name(node))
            wshape = (wshape[0], shp[1]) + tuple(wshape[2:])
        kh, kw = wshape[2], wshape[3]
        if strides != [kh, kw] or any(pads) or shp[2] % kh or shp[3] % kw:
            self._conv_im2col(node, x, w_state, (kh, kw), strides, pads)
        else:
            self._conv_patches(node, x, w_state, wshape)
        if one_d:
            self._conv_to_1d(node)

    def _fold_channel_scale(self, node: onnx.NodeProto, x: Act, w_state: Any, wshape: tuple[int, ...],
                            group: int) -> Any:
        """A depthwise convolution (every output channel reads one input channel) of a tensor with per-channel
        activation scales: input channel c's ratio moves into the scale of the output channels that read it
        (exact: the integer weights stay); any other convolution would mix channels of different scales."""
        c = x.value.info.shape[1]
        if group != c or wshape[1] != 1:
            raise UnsupportedOpError(self._name(node), "Conv", f"its input has per-channel activation scales and "
                                     f"group={group} mixes channels; only a depthwise convolution (group = {c}) "
                                     "may read it (quantize that activation per tensor)")
        per_out = np.repeat(np.asarray(x.channel_scale, dtype=np.float64), wshape[0] // c)
        col = per_out.reshape((-1,) + (1,) * (len(wshape) - 1))
        if isinstance(w_state, QConst):
            return QConst(w_state.ints, np.asarray(w_state.scale, dtype=np.float64) * col, w_state.qtype)
        return Const(np.asarray(w_state.array, dtype=np.float64) * col)

    def _conv_to_1d(self, node: onnx.NodeProto) -> None:
        """A 1-D convolution's result [N, M, 1, L] back to [N, M, L] (the conv's output, or its absorbed
        BatchNormalization's)."""
        last = next((u for u in self._consumers.get(node.output[0], []) if u.output[0] in self._absorbed), node)
        act = self.env[node.output[0]]
        n, m, _, length = act.value.info.shape
        out = self._move("reshape", act.value, (n, m, length), {"shape": [n, m, length]}, node, node.output[0] + "_1d")
        self._set_conv_out(node, last, Act(out, True, relu_applied=act.relu_applied, channel_scale=act.channel_scale))

    def _conv_patches(self, node: onnx.NodeProto, x: Act, w_state: Any, wshape: tuple[int, ...]) -> None:
        """Kernel = stride, no padding: the image cut into patches (reshape, transpose), one dense over them."""
        shp = x.value.info.shape
        kh, kw = wshape[2], wshape[3]
        c, h, w = shp[1], shp[2] // kh, shp[3] // kw
        d = wshape[0]
        ints, w_scale, qtype, wf = self._weight_matrix(node, w_state, lambda t: t.reshape(t.shape[0], -1), 1.0)
        v = self._move("reshape", x.value, (1, c, h, kh, w, kw), {"shape": [1, c, h, kh, w, kw]}, node, "patches")
        v = self._move("transpose", v, (1, h, w, c, kh, kw), {"perm": [0, 2, 4, 1, 3, 5]}, node, "patches_t")
        v = self._move("reshape", v, (1, h * w, c * kh * kw), {"shape": [1, h * w, c * kh * kw]}, node, "im2col")
        act = self._emit_dense(node, v, ints, w_scale, qtype, wf, node.output[0] + "_tokens")
        self._conv_epilogue(node, act, d, (h, w), "nchw")

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
        self._conv_epilogue(node, act, d, (ho, wo), node.output[0] + "_nchw")

    def _conv_epilogue(self, node: onnx.NodeProto, act: Act, d: int, hw: tuple[int, int], nchw_name: str) -> None:
        """After a convolution's GEMM (rows [1, H*W, D]): its bias and a BatchNormalization that alone follows
        folded in, a Relu that alone follows fused into the epilogue, the requantization to the next quantizer's
        parameters (per-channel scales too) or calibrated ones, then the move back to NCHW."""
        if self._state(node, 2) is not None:
            self._fold_bias(act.dense, self._state(node, 2), 1.0, node)
        last = self._absorb_batchnorm(node, act)
        users = self._consumers.get(last.output[0], [])
        relu = users[0] if len(users) == 1 and users[0].op_type == "Relu" else None
        w = self._state(node, 1)
        rank = (w.ints if isinstance(w, QConst) else w.array).ndim  # the ONNX output's: 4, or 3 for Conv1d
        if relu is not None:
            act.dense.attrs["relu"] = True
            qt, scale, zp = self._output_quant(relu, self._act_bits(), bipolar=True, channel_rank=rank)
        else:
            qt, scale, zp = self._output_quant(last, self._internal_bits(), signed=True, bipolar=True,
                                               channel_rank=rank)
        act = self._quantize_act(act, np.atleast_1d(scale), zp, qt, "HALF_EVEN",
                                 _renamed(node, node.output[0] + "_q"))
        ho, wo = hw
        t = self._move("transpose", act.value, (1, d, ho * wo), {"perm": [0, 2, 1]}, node, nchw_name)
        out = self._move("reshape", t, (1, d, ho, wo), {"shape": [1, d, ho, wo]}, node, node.output[0])
        self._set_conv_out(node, last, Act(out, True, relu_applied=relu is not None, channel_scale=act.channel_scale))

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

    def _coarsen_rows(self, dn: Any, bias_acc: np.ndarray, over: np.ndarray, node: onnx.NodeProto) -> np.ndarray:
        """Output channels whose bias does not fit 32 bits at the accumulator's scale (a channel with tiny
        weights and a real bias: its products are below 2**-30 of the bias). Post-training quantized weights:
        those rows' weight scale is raised until the bias fits in 2**30 (their weights requantized from the float
        weights, coarser), said in the log; the bias in the new accumulator units is returned. Weights quantized
        in the model: refused, saying what to change."""
        wf = next((w for d, w in self._dense_nodes if d is dn), None)
        rows = np.flatnonzero(over)
        where = f"node '{self._name(node)}'"
        s_in = float(dn.inputs[0].info.scale[0])
        w_scale = np.broadcast_to(np.asarray(dn.attrs["w_scale"], dtype=np.float64), over.shape).copy()
        if wf is None or not isinstance(dn.attrs["w_type"], IntType):
            smallest = float((s_in * w_scale[rows]).min())
            raise VaqfError(f"{where}: the bias of output channel(s) {rows[:8].tolist()} does not fit 32 bits at the "
                            f"accumulator's scale (input scale x weight scale, {smallest:.3g})"
                            " and the weights are quantized in the model: quantize the bias at the accumulator's "
                            "scale (e.g. Brevitas Int32Bias) or give those channels a larger weight scale")
        factor = np.abs(bias_acc[rows]) / 2**30
        qt = dn.attrs["w_type"]
        weight = dn.attrs["weight"].astype(np.int64)
        old = w_scale[rows].copy()
        w_scale[rows] = f32(old * factor)
        weight[rows] = np.clip(round_real(wf[rows] / w_scale[rows, None], Rounding.HALF_EVEN), qt.min, qt.max)
        dn.attrs["w_scale"] = f32(w_scale)
        dn.attrs["weight"] = weight.astype(dn.attrs["weight"].dtype)
        bias_acc = bias_acc.copy()
        bias_acc[rows] = bias_acc[rows] * (old / w_scale[rows])
        log.warning("%s: the bias of %d output channel(s) did not fit 32 bits at the accumulator's scale: their "
                    "weight scale is raised up to %.3gx (weights requantized coarser; the accumulator stays 32 "
                    "bits)", where, rows.size, float(factor.max()))
        return bias_acc

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
        negative), on the input into the host's ops, or into the float Gemm/MatMul/unpadded Conv it alone feeds
        (vaqf.frontend.patterns.fold_batchnorm_forward); elsewhere refused with that reason."""
        if node.output[0] in self._absorbed:
            return  # folded by the convolution before it
        st = self._state(node, 0)
        if not isinstance(st, Act) or st.dense is None or len(self._consumers.get(node.input[0], [])) != 1 \
                or len(st.value.info.shape) != 2:
            raise UnsupportedOpError(self._name(node), "BatchNormalization",
                                     "only a BatchNormalization right after a convolution or a dense layer (Gemm, "
                                     "MatMul) that nothing else reads, on the model's input, or read only by a "
                                     "Gemm, MatMul or unpadded Conv with float weights is supported (it is folded "
                                     "into that layer's constants); fold it into a neighbouring layer before export")
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
        over = np.abs(ints) > 2**31 - 1
        if np.any(over):
            bias_acc = self._coarsen_rows(dn, np.asarray(bias_acc, dtype=np.float64), over, node)
            ints = round_real(bias_acc, rounding)
        self._bias_real[dn.name] = np.asarray(bias_acc, dtype=np.float64)
        dn.attrs["bias"] = ints.astype(np.int64)
        finalize_dense_attrs(dn, dn.inputs[0].info)
        dn.outputs[0].info = self._dense_out_info(dn, dn.inputs[0].info)
