"""Hardware units: one home per unit of the engine, owning how the hardware runs the ops bound to it.

An op (vaqf/ops) owns what a computation means: shapes, integer semantics, the questions passes ask. A unit
owns how the engine runs it: its knobs, its cycle and resource model, its config struct, a typed per-layer
descriptor (checked field by field against the C++ struct in its kernel header by tests/units), its DDR layout,
its kernel (``hls/vaqf/<header>``) and its template (``templates/units/<template>``). An op names its unit
with ``OpSpec.unit_kind``; :func:`unit_of` finds it.

A unit is one C++ function instance per *instance name* (``instance(node)``): the GEMM unit has one
instance per weight container width (``dense_binary``, ``dense_int8``), every other unit one. The top pins
each instance to one with ``ALLOCATION limit=1`` (docs/hls.md).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from vaqf.errors import IRError

if TYPE_CHECKING:
    from vaqf.hw.board import Board
    from vaqf.hw.cost import Cost
    from vaqf.ir import Node


@dataclass(frozen=True)
class Descriptor:
    """A per-layer descriptor: the fields of a C++ struct of the kernel header, in declaration order.

    Subclasses are frozen dataclasses whose field names are the struct's; ``cpp`` names the struct
    (``vaqf::dense_desc``). An ``int`` field is a C++ ``int``; a ``tuple`` field a C++ ``int name[N]``
    (its length fixed by ``array_lengths``); ``wide`` lists the fields declared ``long long``.
    """

    cpp: ClassVar[str]
    array_lengths: ClassVar[dict[str, int]] = {}
    wide: ClassVar[tuple[str, ...]] = ()

    def items(self) -> list[tuple[str, Any]]:
        """(field, value) in declaration order; arrays as lists of ints, checked against their lengths."""
        out = []
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if isinstance(v, tuple | list | np.ndarray):
                v = [int(x) for x in v]
                n = self.array_lengths.get(f.name)
                if n is None or len(v) != n:
                    raise IRError(f"{self.cpp}.{f.name}: {len(v)} values for an array of {n}")
            else:
                v = int(v)
                lo, hi = (-(2**63), 2**63 - 1) if f.name in self.wide else (-(2**31), 2**31 - 1)
                if not lo <= v <= hi:
                    raise IRError(f"{self.cpp}.{f.name} = {v} does not fit its C++ type")
            out.append((f.name, v))
        return out

    def to_json(self) -> dict[str, Any]:
        return dict(self.items())


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
    units: dict[str, list[Node]] = field(default_factory=dict)  # unit instance -> the nodes it runs, in order

    def buffer(self, value_name: str) -> str:
        return self.buffers[value_name]

    def offset(self, node: Node, blob: str) -> int:
        return self.offsets[(node.name, blob)]

    def mode(self, node: Node) -> Any:
        """The per-layer decision the design records for ``node`` (``Unit.mode``), as the backend reads it."""
        return self.modes.get(node.name)


class Unit:
    """Base class of the engine's hardware units; each method is the unit's own (no free defaults)."""

    kind: ClassVar[str]
    #: the kernel header under hls/vaqf/ and the template under templates/units/
    header: ClassVar[str]
    template: ClassVar[str]
    #: the typed descriptors its layers pass (each checked against its struct in the header by tests/units)
    descriptors: ClassVar[tuple[type[Descriptor], ...]] = ()
    #: the knob that is the design's lane count (every unit's words have the design's lanes)
    lane_knob: ClassVar[str] = "lanes"
    #: the kernel may write its output over its first input (same buffer): elementwise and not DATAFLOW
    in_place: ClassVar[bool] = False
    #: int fields of the unit's descriptor, the width of its descriptor ROM (vaqf.hw.model.sharing_cost)
    desc_fields: ClassVar[int] = 16

    @property
    def template_path(self) -> str:
        """The unit's template, relative to templates/."""
        return f"units/{self.template}"

    def instance(self, node: Node) -> str:
        """Name of the shared instance that runs ``node`` (nodes of one instance share the hardware)."""
        return self.kind

    def knobs(self, node: Node) -> dict[str, list[int]]:
        """Legal values of each knob of the unit for this node; the lane knob lists every lane choice."""
        raise NotImplementedError

    def cost(self, node: Node, knobs: dict[str, int], board: Board) -> Cost:
        """Cycles (what the kernel's counters count) and resources of the node on the unit."""
        raise NotImplementedError(f"unit {self.kind} has no cost model")

    def cost_key(self, node: Node) -> tuple:
        """What the cost reads besides shapes, types and attributes (vaqf.hw.model.cost_key)."""
        return ()

    def mode(self, node: Node, knobs: dict[str, int], board: Board) -> Any:
        """The per-layer decision the unit takes for these knobs (JSON), recorded in the Design; None if none."""
        return None

    def blocks_pay_off(self, node: Node) -> bool:
        """Whether the node's recorded dense blocks (passes.sparsity.FindDenseBlocks) can make it faster on
        this unit; units without a block form say no."""
        return False

    def shared_cost(self, nodes: list[Node], knobs: dict[str, int]) -> Cost | None:
        """Hardware the instance holds for all its nodes together, on top of the largest node's (a ROM of
        every layer's constants); None when there is none."""
        return None

    def ddr_blobs(self, node: Node, word_bits: int, knobs: dict[str, int],
                  board: Board | None) -> dict[str, np.ndarray]:
        """Constant data the node reads from DDR, as uint32 lanes of whole ``word_bits`` words."""
        return {}

    def config(self, instance: str, nodes: list[Node], knobs: dict[str, int], word_bits: int) -> dict[str, Any]:
        """Values of the instance's C++ config struct, sized for every node it runs."""
        raise NotImplementedError

    def describe(self, node: Node, ctx: EmitContext) -> dict[str, Any]:
        """Template values of one layer: its descriptor(s) and the buffers its call binds."""
        raise NotImplementedError

    def buffer_kinds(self, node: Node, in_kinds: list[str]) -> list[str]:
        """On-chip container of each output: "act" (activation precision) or "acc" (accumulator)."""
        raise NotImplementedError

    def calls(self, node: Node, lanes: int) -> int:
        """Calls of the unit's wrapper the layer makes at ``lanes`` (one descriptor each, one ROM entry)."""
        return 1


_UNITS: dict[str, Unit] = {}


def register_unit(cls: type[Unit]) -> type[Unit]:
    if cls.kind in _UNITS:
        raise IRError(f"unit {cls.kind} registered twice")
    _UNITS[cls.kind] = cls()
    return cls


def get_unit(kind: str) -> Unit:
    try:
        return _UNITS[kind]
    except KeyError:
        raise IRError(f"no hardware unit {kind!r} registered") from None


def registered_units() -> list[str]:
    return sorted(_UNITS)
