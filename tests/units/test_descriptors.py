"""Every unit's typed descriptors match the C++ structs of its kernel header, field by field, in order: a
field added, removed, renamed, reordered, resized or re-typed on one side only fails here, before any
C-simulation (an aggregate initializer would otherwise shift every later field silently)."""

from __future__ import annotations

import dataclasses
import re

import pytest

from vaqf.backend.package_files import hls_dir
from vaqf.ops import get_spec, registered_ops
from vaqf.units import get_unit, registered_units
from vaqf.units.base import Descriptor

DECL = re.compile(r"^\s*(long long|int)\s+(.+?);", re.M)


def struct_fields(header: str, name: str) -> list[tuple[str, str, int | None]]:
    """(type, field, array length or None) of ``struct name`` in a kernel header, in declaration order."""
    text = re.sub(r"//[^\n]*", "", (hls_dir() / header).read_text())
    m = re.search(r"struct\s+" + re.escape(name) + r"\s*\{(.*?)\};", text, re.S)
    assert m, f"struct {name} not found in {header}"
    consts = dict(re.findall(r"const int (\w+) = (\d+);", text))
    out = []
    for ctype, names in DECL.findall(m.group(1)):
        for item in names.split(","):
            item = item.strip()
            am = re.fullmatch(r"(\w+)\s*\[\s*(\w+)\s*\]", item)
            if am:
                n = am.group(2)
                out.append((ctype, am.group(1), int(consts.get(n, n))))
            else:
                out.append((ctype, item, None))
    return out


UNITS = [u for u in registered_units() if get_unit(u).descriptors]


def test_every_unit_declares_its_descriptors_and_every_op_names_its_unit():
    assert set(UNITS) == set(registered_units()) == {"gemm", "matmul", "softmax", "layernorm", "eltwise", "lut",
                                                     "pool", "mover"}
    for op in registered_ops():
        kind = get_spec(op).unit_kind
        assert kind is None or kind in registered_units(), op
    assert get_spec("rescale").unit_kind is None


@pytest.mark.parametrize("kind", UNITS)
def test_descriptor_fields_match_the_header(kind: str) -> None:
    unit = get_unit(kind)
    for desc in unit.descriptors:
        assert issubclass(desc, Descriptor)
        name = desc.cpp.split("::")[-1]
        declared = struct_fields(unit.header, name)
        fields = dataclasses.fields(desc)
        assert [f.name for f in fields] == [d[1] for d in declared], f"{desc.__name__} vs {unit.header} {name}"
        for ctype, fname, length in declared:
            assert desc.array_lengths.get(fname) == length, f"{name}.{fname}: array length"
            assert (fname in desc.wide) == (ctype == "long long"), f"{name}.{fname}: {ctype}"


def test_struct_parser_reads_arrays_and_wide_fields():
    fields = struct_fields("softmax.h", "softmax_desc")
    assert fields[0] == ("int", "rows", None)
