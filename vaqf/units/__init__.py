"""The engine's hardware units (see :mod:`vaqf.units.base`), and how a node finds its unit."""

from __future__ import annotations

from typing import TYPE_CHECKING

from vaqf.errors import IRError
from vaqf.ops import get_spec
from vaqf.units.base import Descriptor, EmitContext, Unit, get_unit, register_unit, registered_units

if TYPE_CHECKING:
    from vaqf.ir import Node


def unit_of(node: Node) -> Unit | None:
    """The unit that runs ``node``; None for an op that runs on none (it only relabels its input)."""
    spec = get_spec(node.op)
    try:
        kind = spec.unit_kind
    except AttributeError:
        raise IRError(f"op {node.op} names no hardware unit (OpSpec.unit_kind)") from None
    return None if kind is None else get_unit(kind)


def instance_of(node: Node) -> str:
    """The shared instance that runs ``node`` ("none": no unit)."""
    u = unit_of(node)
    return "none" if u is None else u.instance(node)


def _load() -> None:
    """Import every unit module (each registers its unit)."""
    import importlib
    import pkgutil

    import vaqf.units as pkg

    for m in pkgutil.iter_modules(pkg.__path__):
        if m.name != "base":
            importlib.import_module(f"vaqf.units.{m.name}")


_load()

__all__ = ["Descriptor", "EmitContext", "Unit", "get_unit", "instance_of", "register_unit", "registered_units",
           "unit_of"]
