"""The op kinds the IR knows, registered by the package that defines them.

A Node stores only its op's name; what the op means (shape and type inference, its attribute record, its
reference semantics) is an OpSpec of :mod:`vaqf.ops`, which registers every built-in op here when it is
imported (as an MLIR context holds the dialects loaded into it). The IR looks op kinds up here and never
imports the ops, so the layering stays one way: ir below ops, ops below everything that uses them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from vaqf.errors import IRError

if TYPE_CHECKING:
    from vaqf.ir.graph import Node
    from vaqf.ir.tensor import TensorInfo


class OpDefinition(Protocol):
    """What :meth:`vaqf.ir.Graph.verify` asks of a registered op (vaqf.ops.OpSpec provides it)."""

    name: str

    def check_attrs(self, node: Node) -> None: ...

    def infer(self, node: Node, inputs: list[TensorInfo]) -> list[TensorInfo]: ...


_REGISTRY: dict[str, Any] = {}


def register_op(spec: OpDefinition) -> None:
    if spec.name in _REGISTRY:
        raise IRError(f"op {spec.name} registered twice")
    _REGISTRY[spec.name] = spec


def op_definition(op: str) -> Any:
    """The registered definition of ``op`` (an OpSpec), or an IRError saying how to register it."""
    try:
        return _REGISTRY[op]
    except KeyError:
        hint = "" if _REGISTRY else " (no op is registered: import vaqf.ops, which registers the built-in ops)"
        raise IRError(f"no OpSpec registered for op {op!r}{hint}") from None


def known_ops() -> list[str]:
    return sorted(_REGISTRY)
