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
        """Op ``concat`` along an axis; constant inputs are quantized like the activation they join."""
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

    def _op_Flatten(self, node: onnx.NodeProto) -> None:
        """Op ``reshape``."""
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
        """Op ``pool`` (max; no ceil_mode or dilations)."""
        a = self._attrs(node)
        if int(a.get("ceil_mode", 0)) or list(a.get("dilations", [1, 1])) != [1, 1]:
            raise UnsupportedOpError(self._name(node), "MaxPool", "ceil_mode or dilations")
        k = [int(v) for v in a["kernel_shape"]]
        self._pool(node, "max", (k[0], k[1]), list(a.get("strides", [1, 1])), list(a.get("pads", [0, 0, 0, 0])))

    def _op_AveragePool(self, node: onnx.NodeProto) -> None:
        """Op ``pool`` (average, a dyadic 1 / window)."""
        a = self._attrs(node)
        k = [int(v) for v in a["kernel_shape"]]
        self._pool(node, "avg", (k[0], k[1]), list(a.get("strides", [1, 1])), list(a.get("pads", [0, 0, 0, 0])))

    def _op_GlobalAveragePool(self, node: onnx.NodeProto) -> None:
        """Op ``pool`` (average over the whole NCHW plane)."""
        shape = self._shape_of(self._state(node, 0))
        if len(shape) != 4:
            raise UnsupportedOpError(self._name(node), node.op_type, f"input {list(shape)} is not NCHW")
        self._pool(node, "avg", (shape[2], shape[3]), [1, 1], [0, 0, 0, 0])
