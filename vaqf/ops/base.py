"""OpSpec: everything vaqf knows about one op kind, and the registry of op kinds."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from vaqf.errors import IRError

if TYPE_CHECKING:
    from vaqf.hw.board import Board
    from vaqf.hw.cost import Cost
    from vaqf.ir import Node, TensorInfo


@dataclass(frozen=True)
class Epilogue:
    """An elementwise step another op can absorb into its output stage (see passes.fuse)."""

    kind: str
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class EmitContext:
    """What the emitter tells an op when it renders it: buffer names and DDR word offsets."""

    buffers: dict[str, str]            # value name -> C++ buffer expression
    offsets: dict[tuple[str, str], int]  # (node name, blob name) -> word offset in the DDR image
    ident: dict[str, str]              # node name -> sanitized C++ identifier
    dummy: dict[str, str]              # container kind -> name of a 1-element dummy buffer
    knobs: dict[str, dict[str, int]] = field(default_factory=dict)  # unit -> the design's knobs for it
    board: Board | None = None         # the board the design targets
    lanes: int = 1                     # lanes of every activation word (vaqf.hw.layout), the design's
    word_bits: int = 128               # bits of one DDR word, the design's
    modes: dict[str, Any] = field(default_factory=dict)  # node name -> the unit's per-layer mode, the design's

    def buffer(self, value_name: str) -> str:
        return self.buffers[value_name]

    def offset(self, node: Node, blob: str) -> int:
        return self.offsets[(node.name, blob)]

    def mode(self, node: Node) -> Any:
        """The per-layer decision the design records for ``node`` (``Unit.mode``), as the backend reads it."""
        return self.modes.get(node.name)


class OpSpec:
    """Base class; every method must be implemented by each op (there are no free defaults for cost)."""

    name: ClassVar[str]
    #: the op only relabels its input (same data, new shape): it shares the input's buffer, no kernel
    aliases_input: ClassVar[bool] = False
    #: the op only reorders elements (every input element lands in exactly one output place, same meaning)
    permutes_elements: ClassVar[bool] = False
    #: the op can read its first two inputs through strided views (attrs a_view / b_view)
    accepts_operand_views: ClassVar[bool] = False
    #: every output element is one input element, at an affine position (reshape, transpose, slice, ...)
    moves_elements: ClassVar[bool] = False
    #: elementwise along its first input: the output may overwrite that input's buffer when it dies here
    in_place: ClassVar[bool] = False
    #: the op's inputs are "activations" in the sense of the activation precision knob (matrix products)
    precision_inputs: ClassVar[bool] = False
    #: each output element depends only on the input elements at the same position (after NumPy broadcasting)
    elementwise: ClassVar[bool] = False

    def infer(self, node: Node, inputs: list[TensorInfo]) -> list[TensorInfo]:
        raise NotImplementedError

    def reference(self, node: Node, inputs: list[np.ndarray]) -> list[np.ndarray]:
        """Bit-accurate integer semantics; arrays carry a leading batch axis in place of the IR's 1."""
        raise NotImplementedError

    def unit(self, node: Node) -> str:
        """Name of the shared hardware unit that executes this node (nodes of one unit share hardware)."""
        raise NotImplementedError

    def knobs(self, node: Node) -> dict[str, list[int]]:
        """Legal values of each parallelism knob of this node's unit."""
        raise NotImplementedError

    def cost(self, node: Node, knobs: dict[str, int], board: Board) -> Cost:
        raise NotImplementedError(f"op {self.name} has no cost model")

    def ddr_blobs(self, node: Node, word_bits: int) -> dict[str, np.ndarray]:
        """Constant data this node streams from DDR, as arrays of ``word_bits``-wide words (uint32 lanes)."""
        return {}

    def ddr_blobs_for(self, node: Node, word_bits: int, knobs: dict[str, int],
                      board: Board | None) -> dict[str, np.ndarray]:
        """``ddr_blobs`` for a chosen design: ops whose DDR layout depends on their unit's knobs override it."""
        return self.ddr_blobs(node, word_bits)

    def template_params(self, node: Node, ctx: EmitContext) -> dict[str, Any]:
        raise NotImplementedError

    def unit_params(self, unit: str, nodes: list[Node], knobs: dict[str, int], word_bits: int) -> dict[str, Any]:
        """Parameters of the unit's C++ config struct, sized for every node it serves."""
        raise NotImplementedError

    def buffer_kinds(self, node: Node, in_kinds: list[str]) -> list[str]:
        """On-chip container of each output: "act" (activation precision) or "acc" (accumulator)."""
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

    def find_blocks(self, node: Node) -> bool:
        """Record (or drop) the dense-block structure of the node's weights where it can pay off; return
        whether the attributes changed."""
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


_REGISTRY: dict[str, OpSpec] = {}


def register(cls: type[OpSpec]) -> type[OpSpec]:
    if cls.name in _REGISTRY:
        raise IRError(f"op {cls.name} registered twice")
    _REGISTRY[cls.name] = cls()
    return cls


def get_spec(op: str) -> OpSpec:
    try:
        return _REGISTRY[op]
    except KeyError:
        raise IRError(f"no OpSpec registered for op {op!r}") from None


def registered_ops() -> list[str]:
    return sorted(_REGISTRY)
