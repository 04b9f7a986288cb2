"""Bounded work on small hostile files: import linear in the node count, external data and constant folding
capped before anything large is allocated, a MemoryError reported as such."""

from __future__ import annotations

import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from vaqf.frontend.onnx_import import import_onnx
from vaqf.ir import Graph, IntType, TensorInfo

QONNX = "qonnx.custom_op.general"


def relu_chain(n: int) -> onnx.ModelProto:
    """Quant, then ``n`` Relu nodes in a row."""
    inits = [numpy_helper.from_array(np.array(v, np.float32), k) for k, v in (("s", 0.05), ("z", 0.0), ("b", 8.0))]
    nodes = [helper.make_node("Quant", ["x", "s", "z", "b"], ["t0"], domain=QONNX, signed=1, narrow=0,
                              rounding_mode="ROUND", name="q")]
    nodes += [helper.make_node("Relu", [f"t{i}"], [f"t{i + 1}"], name=f"r{i}") for i in range(n)]
    g = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16])],
                          [helper.make_tensor_value_info(f"t{n}", TensorProto.FLOAT, [1, 16])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(QONNX, 1)])


def python_calls(fn) -> int:  # noqa: ANN001
    """How many Python functions (generator steps included) ``fn()`` runs: a count of work, not a time."""
    count = 0

    def prof(frame, event, arg) -> None:  # noqa: ANN001
        nonlocal count
        if event == "call":
            count += 1

    sys.setprofile(prof)
    try:
        fn()
    finally:
        sys.setprofile(None)
    return count


def test_import_work_is_linear_in_the_node_count() -> None:
    # a per-node scan of the whole graph makes 4x the nodes cost 16x the calls; linear work costs 4x
    small = python_calls(lambda: import_onnx(relu_chain(300)))
    large = python_calls(lambda: import_onnx(relu_chain(1200)))
    assert large < 5 * small, (small, large)


def test_adding_nodes_does_not_scan_the_graph() -> None:
    class CountingDict(dict):
        scans = 0

        def values(self):  # noqa: ANN201
            CountingDict.scans += 1
            return super().values()

    g = Graph("chain")
    g._nodes = CountingDict()
    info = TensorInfo((1, 4), IntType(8))
    v = g.add_input("x", info)
    for i in range(200):
        out = g.new_value(f"t{i}", info)
        g.add_node("relu", [v], [out], name=f"r{i}")
        v = out
    g.outputs = [v]
    assert CountingDict.scans == 0
    g.verify()
