"""OpSpec: everything vaqf knows about one op kind, and the registry of op kinds."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from vaqf.errors import IRError
from vaqf.ir import Graph, Node, TensorInfo, Value
from vaqf.ir.opset import known_ops, op_definition, register_op
from vaqf.ops.attrs import Attr, check_record


@dataclass(frozen=True)
class Epilogue:
    """An elementwise step another op can absorb into its output stage (see passes.fuse)."""

    kind: str
    params: dict[str, Any] = field(default_factory=dict)


class OpSpec:
    """What an op kind means: shapes and types, integer semantics, the questions passes ask. How the engine
    runs it is its unit's (``unit_kind`` names it in :mod:`vaqf.units`; None: the op only relabels its input
    and runs on no unit).

    Each op module keeps, beside its spec, a module-level ``reference`` function: the readable numpy
    definition of the op's integer semantics (stated rounding and saturation), which the spec's
    ``reference`` method calls. The simulator's fast path for the op (if it has one) lives in
    :mod:`vaqf.sim.fast` and is tested equal to it.
    """

    name: ClassVar[str]
    unit_kind: ClassVar[str | None]
    #: the op's attribute record: every key its nodes' ``attrs`` may hold (checked by Graph.verify)
    attributes: ClassVar[tuple[Attr, ...]] = ()
    #: the op only relabels its input (same data, new shape): it shares the input's buffer, no kernel
    aliases_input: ClassVar[bool] = False
    #: the op only reorders elements (every input element lands in exactly one output place, same meaning)
    permutes_elements: ClassVar[bool] = False
    #: the op can read its first two inputs through strided views (attrs a_view / b_view)
    accepts_operand_views: ClassVar[bool] = False
    #: every output element is one input element, at an affine position (reshape, transpose, slice, ...)
    moves_elements: ClassVar[bool] = False
    #: the op's inputs are "activations" in the sense of the activation precision knob (matrix products)
    precision_inputs: ClassVar[bool] = False
    #: each output element depends only on the input elements at the same position (after NumPy broadcasting)
    elementwise: ClassVar[bool] = False

    def infer(self, node: Node, inputs: list[TensorInfo]) -> list[TensorInfo]:
        raise NotImplementedError

    # ---- attributes ----
    def derive(self, node: Node) -> dict[str, Any]:
        """The derived attributes (``Attr.derived``) as the node's inputs' types give them (see finalize)."""
        return {}

    def finalize(self, node: Node) -> None:
        """Set the derived attributes from the node's inputs' types (after creating or retyping the node)."""
        node.attrs.update(self.derive(node))

    def check_attrs(self, node: Node) -> None:
        """IRError naming the node, the op and the attribute when ``node.attrs`` breaks the op's record: an
        unknown or missing key, a value of the wrong type, or a derived value its input no longer gives."""
        why = check_record(node.attrs, self.attributes)
        if why is None:
            derived = [a.name for a in self.attributes if a.derived]
            if derived:
                want = self.derive(node)
                for key in derived:
                    if key in node.attrs and not _same(node.attrs[key], want[key]):
                        why = (f"attribute '{key}' is {node.attrs[key]!r} but its input gives {want[key]!r} "
                               "(a pass retyped the input without re-deriving it: call the op's finalize)")
                        break
        if why is not None:
            raise IRError(f"node {node.name} ({node.op}): {why}")

    @classmethod
    def make(cls, graph: Graph, inputs: list[Value], attrs: dict[str, Any], name: str | None = None,
             source: str = "", out_name: str | None = None) -> Node:
        """Add a node of this op reading ``inputs`` and writing one new value (named ``out_name``, else after the
        node): its derived attributes filled in, its attributes checked against the record, its output typed
        by ``infer``. When a check fails the graph is left as it was and the error names the node."""
        spec = get_spec(cls.name)
        placeholder = inputs[0].info if inputs else attrs["info"]  # typed by infer below
        out = graph.new_value(out_name or name or cls.name, placeholder)
        node = graph.add_node(cls.name, inputs, [out], attrs, name=name, source=source)
        try:
            spec.finalize(node)
            spec.check_attrs(node)
            (out.info,) = spec.infer(node, [v.info for v in inputs])
        except Exception:
            graph.remove(node)
            raise
        return node

    def reference(self, node: Node, inputs: list[np.ndarray]) -> list[np.ndarray]:
        """Bit-accurate integer semantics; arrays carry a leading batch axis in place of the IR's 1."""
        raise NotImplementedError

    def as_epilogue(self, node: Node) -> Epilogue | None:
        return None

    def macs(self, node: Node) -> int:
        """Multiply-accumulates the node performs per sample (0 for ops without products)."""
        return 0

    def merge_with_consumer(self, node: Node, consumer: Node) -> dict[str, Any] | None:
        """Attributes of one node of this op doing ``node`` then ``consumer``, if that exists."""
        return None

    def is_identity(self, node: Node) -> bool:
        """Whether the node returns its single input unchanged (same integers, same meaning)."""
        return False

    def absorb_epilogue(self, node: Node, epilogue: Epilogue) -> bool:
        """Fold ``epilogue`` into this node's output stage if it can; return whether it did."""
        return False

    # ---- constant elements (passes.sparsity) ----
    def known_outputs(self, node: Node, known: list[Known | None]) -> list[Known | None]:
        """Which output elements are the same integer for every input sample, and their values.

        ``known[i]`` describes input i (None: nothing known). Derived from the op's flags: elementwise ops
        know an element when every input knows it there; ops that only move elements carry each known
        element to where it lands. Any other op claims nothing, which is always exact.
        """
        if all(k is None for k in known) or len(node.outputs) != 1:
            return [None] * len(node.outputs)
        shape = (1,) + tuple(node.outputs[0].info.shape)
        if self.aliases_input and len(node.inputs) == 1:
            k = known[0]
            return [Known(k.mask.reshape(shape), k.values.reshape(shape))]
        if self.moves_elements and len(node.inputs) == 1:
            src = node.inputs[0].info
            idx = self.reference(node, [np.arange(src.size, dtype=np.int64).reshape((1,) + src.shape)])[0]
            idx = idx.reshape(-1)
            k = known[0]
            return [Known(k.mask.reshape(-1)[idx].reshape(shape), k.values.reshape(-1)[idx].reshape(shape))]
        if self.elementwise:
            if any(k is None for k in known):
                return [None]
            mask = np.ones(shape, dtype=bool)
            for k in known:
                mask &= np.broadcast_to(k.mask, shape)
            if not mask.any():
                return [None]
            values = np.asarray(self.reference(node, [k.values for k in known])[0], dtype=np.int64)
            return [Known(mask, np.broadcast_to(values, shape).copy())]
        return [None] * len(node.outputs)

    def fold_known_inputs(self, node: Node, known: list[Known | None]) -> bool:
        """Fold input elements that are known constants into the node's own constants (a GEMM's bias), so
        it stops reading them; return whether anything changed. Must keep the node's results exact."""
        return False

    # ---- removing unused input columns (passes.sparsity) ----
    def needed_input_columns(self, node: Node) -> np.ndarray | None:
        """Boolean mask over the last axis of input 0: the columns the node reads (None: all of them)."""
        return None

    def keep_input_columns(self, node: Node, kept: np.ndarray) -> None:
        """Adapt the node to an input 0 that now holds only the columns ``kept`` (indices into the old
        last axis; every column it needed is among them). Only called when ``needed_input_columns`` said
        some column was not needed."""
        raise NotImplementedError(f"op {self.name} cannot drop input columns")

    def select_output_columns(self, node: Node, needed: np.ndarray) -> tuple[dict[str, Any], np.ndarray] | None:
        """New attributes making the node produce fewer columns (last axis) of its output, given the
        columns its consumer needs (boolean mask); and the indices of the columns it will still produce
        (a superset of the needed ones). None when it cannot."""
        return None

    def find_blocks(self, node: Node, pays_off: Callable[[Node], bool]) -> bool:
        """Record (or drop) the dense-block structure of the node's weights, keeping it where ``pays_off``
        (the hardware's answer: its unit's ``blocks_pay_off``) says so; return whether the attributes
        changed."""
        return False

    def densified_attrs(self, node: Node) -> dict[str, Any] | None:
        """Attributes of the same node with its sparsity ignored (zero weights made non-zero, removed columns
        restored): the baseline a report compares against. None when the node has no sparsity to ignore."""
        return None


@dataclass
class Known:
    """Elements of a tensor that hold the same integer for every input sample: ``mask`` marks them and
    ``values`` holds them (the zero point where ``mask`` is False); both are shaped like a batch of one
    sample, (1,) + the value's IR shape, as references take them."""

    mask: np.ndarray
    values: np.ndarray


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return np.array_equal(np.asarray(a), np.asarray(b))
    return a == b


def register(cls: type[OpSpec]) -> type[OpSpec]:
    """Register an op kind with the IR (:mod:`vaqf.ir.opset`), which looks it up by name."""
    register_op(cls())
    return cls


def get_spec(op: str) -> OpSpec:
    spec = op_definition(op)
    if not isinstance(spec, OpSpec):
        raise IRError(f"op {op!r} is registered by something other than an OpSpec")
    return spec


def registered_ops() -> list[str]:
    return known_ops()
