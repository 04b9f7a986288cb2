"""Quantizers decoded into vaqf types: QONNX ``Quant``/``BipolarQuant``, ONNX ``QuantizeLinear``/
``DequantizeLinear``, and the look-ahead that lets an op take the parameters of the quantizer after it."""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx

from vaqf.errors import ModelError, UnsupportedOpError
from vaqf.frontend.onnx_import.loading import (
    QONNX_DOMAINS,
)
from vaqf.frontend.onnx_import.states import Act, Const, QConst, Raw, _per_axis
from vaqf.frontend.ptq import activation_quant, f32
from vaqf.ir import BinaryType, IntType, int_type_for_range
from vaqf.ir.qarith import Rounding, round_real

#: the ONNX integer element types QuantizeLinear may produce, as vaqf types
_ONNX_INT_TYPES = {
    onnx.TensorProto.INT8: IntType(8, True), onnx.TensorProto.UINT8: IntType(8, False),
    onnx.TensorProto.INT16: IntType(16, True), onnx.TensorProto.UINT16: IntType(16, False),
    onnx.TensorProto.INT4: IntType(4, True), onnx.TensorProto.UINT4: IntType(4, False),
    onnx.TensorProto.INT32: IntType(32, True),
}


def check_channel_axis(shape: tuple[int, ...], rank: int, where: str, op_type: str) -> None:
    """A per-channel activation scale of ``shape`` must vary along axis 1 (the channels) of a rank-``rank``
    tensor only, as ONNX broadcasting aligns it (a 1-D scale lines up with the last axis)."""
    s = (1,) * max(0, rank - len(shape)) + tuple(int(d) for d in shape)
    if len(s) != rank or [i for i, d in enumerate(s) if d != 1] != [1]:
        raise UnsupportedOpError(where, op_type, f"a scale of shape {list(shape)} on a rank-{rank} activation: "
                                 "per-channel activation scales must vary along the channel axis (1) only")


class QuantizerDecoding:
    """Importer handlers for quantizer decoding; mixed into :class:`Importer`, whose state they use."""

    def _scale(self, node: onnx.NodeProto, i: int) -> np.ndarray:
        """A quantizer's scale input: a constant of finite, positive values."""
        scale = np.asarray(self._const(node, i, "scale"), dtype=np.float64)
        if scale.size == 0 or not np.all(np.isfinite(scale)) or not np.all(scale > 0):
            raise ModelError(f"node '{self._name(node)}' ({node.op_type}) has a scale that is not finite and positive")
        return scale

    def _quant(self, node: onnx.NodeProto) -> None:
        """The quantizer of an activation (requantization or the input's type) or of constant weights and biases."""
        a = self._attrs(node)
        scale = self._scale(node, 1)
        zeropt = np.asarray(self._const(node, 2, "zero point"), dtype=np.float64)
        if not np.all(np.isfinite(zeropt)):
            raise ModelError(f"node '{self._name(node)}' has a non-finite zero point")
        bits_a = np.asarray(self._const(node, 3, "bit width"), dtype=np.float64).reshape(-1)
        st = self._state(node, 0)
        top = 32 if isinstance(st, (Const, QConst)) else 16  # constants: 32-bit bias quantizers (Int32Bias)
        if bits_a.size != 1 or bits_a[0] != np.floor(bits_a[0]) or not 2 <= bits_a[0] <= top:
            raise UnsupportedOpError(self._name(node), node.op_type, f"bit width {bits_a.tolist()} (need 2..{top})")
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
        if scale.size != 1 and np.any(scale != scale.reshape(-1)[0]) and isinstance(st, Act):
            check_channel_axis(scale.shape, len(st.value.info.shape), self._name(node), node.op_type)
        self._set(node, self._quantize_act(st, scale, int(zeropt.reshape(-1)[0]), qt, rounding.value, node))

    def _trunc(self, node: onnx.NodeProto) -> None:
        """QONNX Trunc (version 2: input, scale, zero point, input bits, output scale, output bits) of an average
        pooling that only it reads (Brevitas's TruncAvgPool2d): the window's integer sum truncated by the power
        of two between the scales, rounded as the node says (FLOOR by default) into the output bits, done by the
        pooling itself (exact)."""
        from vaqf.ops import get_spec

        where = self._name(node)
        if len(node.input) != 6:
            raise UnsupportedOpError(where, "Trunc", f"{len(node.input)} inputs: only Trunc version 2 (input, "
                                     "scale, zero point, input bits, output scale, output bits) is supported")
        st = self._state(node, 0)
        pool = self.graph.producer(st.value) if isinstance(st, Act) else None
        if (pool is None or pool.op != "pool" or pool.attrs["kind"] != "avg" or "qtype" in pool.attrs
                or len(self._consumers.get(node.input[0], [])) != 1 or st.channel_scale is not None):
            raise UnsupportedOpError(where, "Trunc", "only a Trunc right after a 2-D average pooling that nothing "
                                     "else reads, on a per-tensor scale, is supported (TruncAvgPool2d)")
        a = self._attrs(node)
        scale = self._scale(node, 1).reshape(-1)
        out_scale = self._scale(node, 4).reshape(-1)
        zp = np.asarray(self._const(node, 2, "zero point"), dtype=np.float64).reshape(-1)
        bits = np.asarray(self._const(node, 5, "output bit width"), dtype=np.float64).reshape(-1)
        x = pool.inputs[0].info
        if scale.size != 1 or out_scale.size != 1 or np.any(zp != 0) or x.zero_point != 0:
            raise UnsupportedOpError(where, "Trunc", "per-tensor scales and zero points of 0 only")
        if bits.size != 1 or bits[0] != np.floor(bits[0]) or not 2 <= bits[0] <= 16:
            raise UnsupportedOpError(where, "Trunc", f"output bit width {bits.tolist()} (need 2..16)")
        kh, kw = pool.attrs["kernel"]
        # the Trunc's input integers, round(avg / scale) = sum * s_x / (K * scale): the sum itself times 2**k
        ratio = float(x.scale[0]) / (kh * kw * float(scale[0]))
        k = int(np.round(np.log2(ratio)))
        t = int(np.round(np.log2(float(out_scale[0]) / float(scale[0]))))  # qonnx: the power of two truncated
        if not np.isclose(ratio, 2.0**k, rtol=1e-6, atol=0) or k < 0 or t - k < 0:
            raise UnsupportedOpError(where, "Trunc", f"its input scale {float(scale[0]):.6g} is not the pooling's "
                                     f"sum scale (input scale / {kh * kw}) times a power of two, or it widens")
        mode = a.get("rounding_mode", b"FLOOR")
        mode = mode.decode() if isinstance(mode, bytes) else str(mode)
        try:
            rounding = Rounding.parse(mode)
        except ValueError as e:
            raise UnsupportedOpError(where, "Trunc", str(e)) from None
        pool.attrs.update({"mantissa": 1, "shift": t - k, "rounding": rounding.value,
                           "qtype": IntType(int(bits[0]), bool(a.get("signed", 1)), bool(a.get("narrow", 0))),
                           "scale": np.asarray([float(f32(out_scale[0]))])})
        pool.outputs[0].info = get_spec("pool").infer(pool, [x])[0]
        self._set(node, Act(pool.outputs[0], True))

    def _bipolar(self, node: onnx.NodeProto) -> None:
        """Bipolar (+1/-1) constant weights (binary weights of the GEMM), or a bipolar activation: +1 where the
        input is at least 0, else -1 (a requantization to the sign, fused into the producer's epilogue; on the
        model's input, the host's quantizer)."""
        scale = self._scale(node, 1)
        st = self._state(node, 0)
        if st is None:
            raise ModelError(f"node '{self._name(node)}' ({node.op_type}) has no input to quantize")
        if not isinstance(st, (Const, QConst)):
            if scale.size != 1:
                raise UnsupportedOpError(self._name(node), node.op_type,
                                         "per-channel scales on a bipolar activation; use a per-tensor scale")
            self._set(node, self._quantize_act(st, scale, 0, BinaryType(), "HALF_EVEN", node))
            return
        x = st.array.astype(np.float64) if isinstance(st, Const) else st.real()
        self._set(node, QConst(np.where(x >= 0, 1, -1).astype(np.int64), f32(scale), BinaryType()))

    def _op_QuantizeLinear(self, node: onnx.NodeProto) -> None:
        """QDQ: the quantizer of an activation or of constant weights, with the pair's DequantizeLinear."""
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
        """QDQ: the real values of the integers a QuantizeLinear made (or of integer constants)."""
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

    def _output_quant(self, node: onnx.NodeProto, bits: int, signed: bool | None = None,
                      bipolar: bool = False, channel_rank: int = 0) -> tuple[IntType | BinaryType, Any, int]:
        """Type, scale and zero point for a new output: the following quantizer's if the output feeds exactly
        one quantizer with constant parameters (with ``bipolar``, a BipolarQuant too: BinaryType; with
        ``channel_rank``, the output's ONNX rank, a scale per channel (axis 1) too: an array), else
        post-training quantization from calibration."""
        users = self._consumers.get(node.output[0], [])
        if len(users) == 1:
            q = users[0]
            params = self._quantizer_params(q, per_channel=channel_rank > 0)
            if params is not None and isinstance(params[1], np.ndarray):
                check_channel_axis(params[1].shape, channel_rank, self._name(q), q.op_type)
            if params is not None and (bipolar or not isinstance(params[0], BinaryType)):
                return params
        lo, hi = self._calibrated_range(node.output[0], node)
        if signed is True and lo >= 0:
            lo = -hi
        qt, scale = activation_quant(lo, hi, bits)
        return qt, scale, 0

    def _quantizer_params(self, q: onnx.NodeProto, per_channel: bool = False) \
            -> tuple[IntType | BinaryType, float | np.ndarray, int] | None:
        """The (type, scale, zero point) of quantizer ``q`` if its parameters are constants vaqf can place; a
        per-channel scale (an array) only with ``per_channel`` (the caller requantizes channels on its last
        axis)."""
        try:
            if q.domain in QONNX_DOMAINS and q.op_type == "BipolarQuant":
                scale = np.asarray(self._const(q, 1, "scale"), dtype=np.float64).reshape(-1)
                if scale.size != 1 or not scale[0] > 0:
                    return None
                return BinaryType(), float(f32(scale[0])), 0
            if q.domain in QONNX_DOMAINS and q.op_type in ("Quant", "IntQuant"):
                a = self._attrs(q)
                scale = np.asarray(self._const(q, 1, "scale"), dtype=np.float64).reshape(-1)
                zp = np.asarray(self._const(q, 2, "zero point"), dtype=np.float64).reshape(-1)
                bits = int(np.asarray(self._const(q, 3, "bit width")).reshape(-1)[0])
                signed, narrow = bool(a.get("signed", 1)), bool(a.get("narrow", 0))
                if zp.size != 1 or not 2 <= bits <= 16 or not np.all(scale > 0):
                    return None
                qt = IntType(bits, signed, narrow)
                if scale.size != 1 and np.any(scale != scale[0]):
                    full = f32(np.asarray(self._const(q, 1, "scale"), dtype=np.float64))  # with its axes
                    return (qt, full, int(zp[0])) if per_channel else None
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
