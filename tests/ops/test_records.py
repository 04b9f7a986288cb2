"""Every registered op: a test module of its own (tests/ops/test_<op>.py, with a one-node ``sample()``), a
readable module-level ``reference``, and an attribute record that Graph.verify enforces key by key."""

from __future__ import annotations

import copy
import importlib
import inspect
import re
from pathlib import Path

import numpy as np
import pytest

from vaqf.errors import IRError
from vaqf.ir import Graph, Node
from vaqf.ops import get_spec, registered_ops

HERE = Path(__file__).parent


def _module(op: str):
    return importlib.import_module(f"tests.ops.test_{op}")


def _node(g: Graph, op: str) -> Node:
    return next(n for n in g.nodes if n.op == op)


def test_every_op_has_its_test_module() -> None:
    missing = [op for op in registered_ops() if not (HERE / f"test_{op}.py").is_file()]
    assert missing == []


@pytest.mark.parametrize("op", registered_ops())
def test_sample_verifies_and_its_record_lists_every_key(op: str) -> None:
    g = _module(op).sample()
    g.verify()
    node = _node(g, op)
    record = {a.name for a in get_spec(op).attributes}
    assert set(node.attrs) <= record
    assert all(a.doc for a in get_spec(op).attributes)


@pytest.mark.parametrize("op", registered_ops())
def test_module_keeps_a_readable_reference(op: str) -> None:
    module = importlib.import_module(type(get_spec(op)).__module__)
    ref = getattr(module, "reference", None)
    assert callable(ref) and inspect.getdoc(ref), f"{module.__name__} has no documented reference()"


@pytest.mark.parametrize("op", registered_ops())
def test_verify_names_node_op_and_attribute(op: str) -> None:
    """A missing required key, a value of the wrong type and an unknown key each fail verify with a message
    naming the node, the op and the attribute."""
    g = _module(op).sample()
    node = _node(g, op)
    saved = copy.copy(node.attrs)
    where = re.escape(f"node {node.name} ({op}): attribute")
    for a in get_spec(op).attributes:
        if a.required:
            del node.attrs[a.name]
            with pytest.raises(IRError, match=rf"^{where} '{a.name}' is missing"):
                g.verify()
            node.attrs.update(saved)
        if a.name in node.attrs:
            node.attrs[a.name] = object()
            with pytest.raises(IRError, match=rf"^{where} '{a.name}' "):
                g.verify()
            node.attrs.update(saved)
    node.attrs["colour"] = "blue"
    with pytest.raises(IRError, match=rf"^{where} 'colour' is not one of this op's"):
        g.verify()
    del node.attrs["colour"]
    g.verify()


def test_nested_records_are_checked() -> None:
    """A fused requantization with a float mantissa fails verify, naming the nested field."""
    from tests.ops.test_dense import sample

    g = sample()
    rq = g.nodes[0].attrs["requant"]
    rq["mantissa"] = np.asarray(rq["mantissa"], dtype=np.float64)
    with pytest.raises(IRError, match="attribute 'requant' attribute 'mantissa' must be a numpy array of ints"):
        g.verify()
