"""Ops that move or relabel data without changing its integer meaning: reshapes, transposes, slices,
concatenation, and the window movers (pooling)."""

from __future__ import annotations

import numpy as np
import onnx

from vaqf.errors import ModelError, UnsupportedOpError, VaqfError
from vaqf.frontend.onnx_import.states import Act, Const, FloatInput, QConst, _renamed
from vaqf.ir import TensorInfo, Value


class LayoutOps:
    """Importer handlers for data movement; mixed into :class:`Importer`, whose state they use."""

    def _op_Identity(self, node: onnx.NodeProto) -> None:
        """Passed through."""
        self._set(node, self._state(node, 0))

    def _op_Dropout(self, node: onnx.NodeProto) -> None:
        """Identity at inference (the mask output unused)."""
        self._set(node, self._state(node, 0))  # inference: identity (mask output unused)

    def _op_Transpose(self, node: onnx.NodeProto) -> None:
        """Op ``transpose`` on activations (passes fold permutation chains into strided views)."""
        st = self._state(node, 0)
        if isinstance(st, (Const, QConst)):
            return self._fold_constant(node)
        shape = self._shape_of(st)
        perm = [int(p) for p in self._attrs(node).get("perm", list(range(len(shape)))[::-1])]
        x = self._per_tensor(node, 0, keeps_channels=perm[-1] == len(shape) - 1)
        out = self._move("transpose", x.value, tuple(shape[p] for p in perm), {"perm": perm}, node, node.output[0])
        self._set(node, Act(out, x.quantized))

    def _op_Concat(self, node: onnx.NodeProto) -> None:
        """Op ``concat`` along an axis, of any number of inputs, all on one quantization: the inputs' own when
        they share it, else the output's (its following quantizer's, or calibrated from the concatenation's
        range), else the widest-ranging input's; constants are quantized like the activations they join."""
        states = [self._state(node, i) for i in range(len(node.input))]
        acts = [i for i, s in enumerate(states) if isinstance(s, (Act, FloatInput))]
        if not acts:
            return self._fold_constant(node)
        infos = [self._act_input(node, i, need_quantized=True, bits=self._internal_bits()).value.info for i in acts]
        ref = infos[0]
        same = all(i.qtype == ref.qtype and i.zero_point == ref.zero_point and not i.per_channel
                   and float(i.scale[0]) == float(ref.scale[0]) for i in infos)
        if not same:
            users = self._consumers.get(node.output[0], [])
            if (len(users) == 1 and self._quantizer_params(users[0]) is not None) or self.opt.calib is not None:
                qt, scale, zp = self._output_quant(node, self._internal_bits())
                ref = TensorInfo(ref.shape, qt, np.array([scale]), zp)
            else:
                ref = max(infos, key=lambda i: float(np.max(i.scale)) * max(abs(int(i.qtype.min) - i.zero_point),
                                                                             abs(int(i.qtype.max) - i.zero_point)))
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
        """Op ``slice`` (start/stop/step per axis) on activations."""
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
        """A scalar index along an axis, as op ``slice`` (class-token readout); other indices are refused."""
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
        """One op ``slice`` per output."""
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
        """Op ``reshape``."""
        self._squeeze(node, unsqueeze=False)

    def _op_Unsqueeze(self, node: onnx.NodeProto) -> None:
        """Op ``reshape``."""
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

    def _reshape_state(self, node: onnx.NodeProto, shape: tuple[int, ...]) -> None:
        st = self._state(node, 0)
        if isinstance(st, FloatInput):
            self._set(node, FloatInput(st.name, st.shape, st.reshapes + [shape], st.ops))
        else:
            st = self._per_tensor(node, 0, keeps_channels=bool(shape) and shape[-1] == self._shape_of(st)[-1])
            self._set(node, self._reshape(st, shape, node))

    def _op_Resize(self, node: onnx.NodeProto) -> None:
        """Nearest-neighbour resizing of an NCHW image by integer factors (U-Net upsampling): op
        ``strided_copy`` reading each source pixel s_h x s_w times (stride 0 on the repeat axes), then a
        reshape. Which source pixel each output takes is computed by ONNX's reference implementation of this
        node's attributes (coordinate transformation, nearest mode) and must be that pattern."""
        self._upsample(node, 1 if node.op_type == "Upsample" else 2, 3)

    def _op_Upsample(self, node: onnx.NodeProto) -> None:
        """The deprecated form of ``Resize`` (scales as input 1): the same nearest upsampling."""
        self._upsample(node, 1, None)

    def _upsample(self, node: onnx.NodeProto, scales_at: int, sizes_at: int | None) -> None:
        from onnx.reference import ReferenceEvaluator

        a = self._attrs(node)
        mode = a.get("mode", b"nearest")
        mode = mode.decode() if isinstance(mode, bytes) else str(mode)
        if mode != "nearest":
            raise UnsupportedOpError(self._name(node), node.op_type, f"mode '{mode}' (only nearest)")
        x = self._per_tensor(node, 0, keeps_channels=False)
        shp = x.value.info.shape
        if len(shp) != 4:
            raise UnsupportedOpError(self._name(node), node.op_type, f"input {list(shp)} is not NCHW")
        inputs = {}
        for i in range(1, len(node.input)):
            if node.input[i]:
                st = self._state(node, i)
                if not isinstance(st, Const):
                    raise UnsupportedOpError(self._name(node), node.op_type, "scales/sizes must be constants")
                inputs[node.input[i]] = np.asarray(st.array)
        sc = inputs.get(node.input[scales_at]) if scales_at < len(node.input) and node.input[scales_at] else None
        sz = inputs.get(node.input[sizes_at]) if sizes_at is not None and sizes_at < len(node.input) \
            and node.input[sizes_at] else None
        if (sc is not None and sc.size == 4 and list(sc[:2]) != [1, 1]) or \
                (sz is not None and sz.size == 4 and list(sz[:2]) != list(shp[:2])):
            raise UnsupportedOpError(self._name(node), node.op_type, "resizing the batch or channel axis")
        # the source of every output pixel, by ONNX's reference Resize on the pixels' own flat indices
        probe = np.arange(shp[2] * shp[3], dtype=np.float32).reshape(1, 1, shp[2], shp[3])
        fixed = dict(inputs)
        if scales_at < len(node.input) and node.input[scales_at] and fixed[node.input[scales_at]].size == 4:
            sc = fixed[node.input[scales_at]].astype(np.float32).copy()
            sc[:2] = 1.0
            fixed[node.input[scales_at]] = sc
        if sizes_at is not None and sizes_at < len(node.input) and node.input[sizes_at]:
            sz = fixed[node.input[sizes_at]].astype(np.int64).copy()
            sz[:2] = 1
            fixed[node.input[sizes_at]] = sz
        g = onnx.helper.make_graph(
            [node], "probe", [onnx.helper.make_tensor_value_info(node.input[0], onnx.TensorProto.FLOAT, None)]
            + [onnx.helper.make_tensor_value_info(k, onnx.helper.np_dtype_to_tensor_dtype(v.dtype), None)
               for k, v in fixed.items()],
            [onnx.helper.make_tensor_value_info(node.output[0], onnx.TensorProto.FLOAT, None)])
        model = onnx.helper.make_model(g, opset_imports=list(self.model.opset_import))
        try:
            src = np.asarray(ReferenceEvaluator(model).run(None, {node.input[0]: probe, **fixed})[0])
        except Exception as e:
            raise UnsupportedOpError(self._name(node), node.op_type, f"cannot evaluate its resizing "
                                     f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from e
        ho, wo = src.shape[2], src.shape[3]
        if src.shape[:2] != (1, 1) or ho % shp[2] or wo % shp[3]:
            raise UnsupportedOpError(self._name(node), node.op_type, f"resizing {list(shp[2:])} to {[ho, wo]} "
                                     "(integer upsampling factors only, batch and channels kept)")
        sh, sw = ho // shp[2], wo // shp[3]
        rows = np.repeat(np.arange(shp[2]), sh)[:, None] * shp[3] + np.repeat(np.arange(shp[3]), sw)[None, :]
        if not np.array_equal(src[0, 0], rows.astype(np.float32)):
            raise UnsupportedOpError(self._name(node), node.op_type, "its coordinate transformation does not "
                                     "repeat each pixel as a block (use nearest with asymmetric/floor, the "
                                     "PyTorch export, or half_pixel)")
        n, c, h, w = shp
        box = [n, c, h, sh, w, sw]
        v = self._move("strided_copy", x.value, tuple(box),
                       {"shape": box, "strides": [c * h * w, h * w, w, 0, 1, 0], "base": 0}, node,
                       node.output[0] + "_rep")
        out = self._move("reshape", v, (n, c, ho, wo), {"shape": [n, c, ho, wo]}, node, node.output[0])
        self._set(node, Act(out, x.quantized, relu_applied=x.relu_applied))

    def _op_Flatten(self, node: onnx.NodeProto) -> None:
        """Op ``reshape``."""
        st = self._state(node, 0)
        if isinstance(st, (Const, QConst)):
            return self._fold_constant(node)
        shape = self._shape_of(st)
        axis = int(self._attrs(node).get("axis", 1))
        axis = axis + len(shape) if axis < 0 else axis
        if axis < 1 and shape[0] != 1:
            raise UnsupportedOpError(self._name(node), "Flatten", "axis 0 would merge the batch axis")
        # axis 0 (Keras) on one sample: [1, everything], as axis 1 gives
        new = (1, int(np.prod(shape))) if axis == 0 else (int(np.prod(shape[:axis])), int(np.prod(shape[axis:])))
        self._reshape_state(node, new)

    def _op_Reshape(self, node: onnx.NodeProto) -> None:
        """Op ``reshape`` (the target shape must be constant)."""
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
        """The shape as a constant (shapes are static)."""
        st = self._state(node, 0)
        if isinstance(st, (Const, QConst)):
            return self._fold_constant(node)
        shape = np.asarray(self._shape_of(st), dtype=np.int64)
        a = self._attrs(node)
        start, end = a.get("start", 0), a.get("end", None)
        self._set(node, Const(shape[start:end]))

    def _pool(self, node: onnx.NodeProto, kind: str, kernel: tuple[int, int], strides: list[int],
              pads: list[int]) -> None:
        from vaqf.ops.im2col import conv_geometry
        from vaqf.ops.pool import pool_attrs

        x = self._per_tensor(node, 0, keeps_channels=False)
        channels = x.channel_scale  # pooling keeps each channel apart: per-channel scales pass through
        if not x.quantized:
            x = self._act_input(node, 0, need_quantized=True, bits=self._internal_bits())
        shp = x.value.info.shape
        one_d = len(shp) == 3  # [N, C, L] pooled as [N, C, 1, L]
        if one_d:
            x = Act(self._move("reshape", x.value, (shp[0], shp[1], 1, shp[2]), {"shape": [shp[0], shp[1], 1, shp[2]]},
                               node, node.output[0] + "_2d"), True, relu_applied=x.relu_applied)
        elif len(shp) != 4:
            raise UnsupportedOpError(self._name(node), node.op_type, f"input {list(shp)} is neither NCL nor NCHW")
        try:
            attrs = pool_attrs(kind, kernel, (int(strides[0]), int(strides[1])), tuple(int(p) for p in pads))
            c, _, _, ho, wo = conv_geometry(x.value.info.shape, attrs)
        except VaqfError as e:
            raise UnsupportedOpError(self._name(node), node.op_type, str(e)) from None
        out = self._move("pool", x.value, (1, c, ho, wo), attrs, node, node.output[0])
        if one_d:
            out = self._move("reshape", out, (1, c, wo), {"shape": [1, c, wo]}, node, node.output[0] + "_1d")
        self._set(node, Act(out, True, relu_applied=x.relu_applied, channel_scale=channels))

    def _pool_window(self, node: onnx.NodeProto) -> tuple[tuple[int, int], list[int], list[int]]:
        """MaxPool/AveragePool's kernel, strides and pads as 2-D (a 1-D window is 1 x k); ceil_mode and
        dilations refused."""
        a = self._attrs(node)
        k = [int(v) for v in a["kernel_shape"]]
        rank = len(k)
        if rank not in (1, 2):
            raise UnsupportedOpError(self._name(node), node.op_type, f"a {rank}-D window (1-D and 2-D only)")
        if int(a.get("ceil_mode", 0)) or [int(v) for v in a.get("dilations", [1] * rank)] != [1] * rank:
            raise UnsupportedOpError(self._name(node), node.op_type, "ceil_mode or dilations")
        strides = [int(v) for v in a.get("strides", [1] * rank)]
        pads = [int(v) for v in a.get("pads", [0] * 2 * rank)]
        if rank == 1:
            return (1, k[0]), [1, strides[0]], [0, pads[0], 0, pads[1]]
        return (k[0], k[1]), strides, pads

    def _op_MaxPool(self, node: onnx.NodeProto) -> None:
        """Op ``pool`` (max, 1-D or 2-D; no ceil_mode or dilations)."""
        self._pool(node, "max", *self._pool_window(node))

    def _op_AveragePool(self, node: onnx.NodeProto) -> None:
        """Op ``pool`` (average, 1-D or 2-D, a dyadic 1 / window; no padding)."""
        self._pool(node, "avg", *self._pool_window(node))

    def _op_GlobalAveragePool(self, node: onnx.NodeProto) -> None:
        """Op ``pool`` (average over the whole NCHW plane)."""
        shape = self._shape_of(self._state(node, 0))
        if len(shape) not in (3, 4):
            raise UnsupportedOpError(self._name(node), node.op_type, f"input {list(shape)} is neither NCL nor NCHW")
        self._pool(node, "avg", (1, shape[2]) if len(shape) == 3 else (shape[2], shape[3]), [1, 1], [0, 0, 0, 0])
