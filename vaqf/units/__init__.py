"""The engine's hardware units (see :mod:`vaqf.units.base`), and how a node finds its unit."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from vaqf.ops import get_spec
from vaqf.units.base import Descriptor, Unit, get_unit, register_unit, registered_units

if TYPE_CHECKING:
    from vaqf.ir import Node


class _OpSpecUnit(Unit):
    """TRANSITION ONLY: an op whose hardware still lives on its OpSpec (removed once every op names a unit)."""

    def __init__(self, spec: Any) -> None:
        self.spec = spec
        self.kind = "legacy"
        self.template = f"{spec.name}.j2"
        self.in_place = bool(getattr(spec, "in_place", False))
        self.desc_fields = int(getattr(spec, "desc_fields", 16))

    @property
    def template_path(self) -> str:
        return f"ops/{self.template}"

    def instance(self, node):
        return self.spec.unit(node)

    def knobs(self, node):
        return self.spec.knobs(node)

    def cost(self, node, knobs, board):
        return self.spec.cost(node, knobs, board)

    def cost_key(self, node):
        own = getattr(self.spec, "cost_key", None)
        return () if own is None else own(node)

    def ddr_blobs(self, node, word_bits, knobs, board):
        return self.spec.ddr_blobs_for(node, word_bits, knobs, board)

    def config(self, instance, nodes, knobs, word_bits):
        return self.spec.unit_params(instance, nodes, knobs, word_bits)

    def describe(self, node, ctx):
        return self.spec.template_params(node, ctx)

    def buffer_kinds(self, node, in_kinds):
        return self.spec.buffer_kinds(node, in_kinds)


def unit_of(node: Node) -> Unit | None:
    """The unit that runs ``node``; None for an op that runs on none (it only relabels its input)."""
    spec = get_spec(node.op)
    kind = getattr(spec, "unit_kind", "")
    if kind == "":
        if spec.unit(node) == "none":
            return None
        return _OpSpecUnit(spec)
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

__all__ = ["Descriptor", "Unit", "get_unit", "instance_of", "register_unit", "registered_units", "unit_of"]
