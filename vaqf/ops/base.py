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

    def buffer(self, value_name: str) -> str:
        return self.buffers[value_name]

    def offset(self, node: Node, blob: str) -> int:
        return self.offsets[(node.name, blob)]


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
