"""The op registry of the IR: ops register themselves, the IR looks them up and never imports them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from vaqf.errors import IRError
from vaqf.ir import Graph, IntType, TensorInfo
from vaqf.ir.opset import known_ops, op_definition, register_op
from vaqf.ops import get_spec, registered_ops

ROOT = Path(__file__).resolve().parents[2]


def test_every_op_is_known_to_the_ir() -> None:
    assert known_ops() == registered_ops()
    assert all(op_definition(op) is get_spec(op) for op in known_ops())


def test_an_unknown_op_fails_verify_with_its_name() -> None:
    g = Graph("g")
    x = g.add_input("x", TensorInfo((1, 4), IntType(8), np.array([0.1])))
    y = g.new_value("y", x.info)
    g.add_node("frobnicate", [x], [y], {})
    g.outputs = [y]
    with pytest.raises(IRError, match="no OpSpec registered for op 'frobnicate'"):
        g.verify()


def test_registering_twice_is_refused() -> None:
    with pytest.raises(IRError, match="op relu registered twice"):
        register_op(get_spec("relu"))


def test_without_the_ops_the_error_says_what_to_import() -> None:
    code = ("import numpy as np\nfrom vaqf.ir import Graph, IntType, TensorInfo\n"
            "g = Graph('g'); x = g.add_input('x', TensorInfo((1, 4), IntType(8), np.array([0.1])))\n"
            "y = g.new_value('y', x.info); g.add_node('relu', [x], [y]); g.outputs = [y]\n"
            "try:\n    g.verify()\nexcept Exception as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert "import vaqf.ops, which registers the built-in ops" in out.stdout
