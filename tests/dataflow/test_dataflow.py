"""The streaming dataflow architecture: a small MLP and a small CNN compiled to a pipeline, C-simulated bit-exact
against the simulator over several frames in one call, every stage's counted cycles equal to the estimate and
the counted steady-state interval and latency equal to the plan's."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest

from tests.helpers import add_dense, add_requant, small_graph
from vaqf.backend.csim import build, read_cycles
from vaqf.backend.emit import random_int_inputs, read_io_file, write_io_file, write_project
from vaqf.dataflow import DataflowSpace, DataflowUnsupported, build_pipeline
from vaqf.dataflow.stages import choices, thresholds
from vaqf.dse.search import dataflow_design
from vaqf.hw.board import get_board
from vaqf.ir import BinaryType, Graph, IntType, TensorInfo
from vaqf.ops import get_spec
from vaqf.ops.dense import finalize_dense_attrs
from vaqf.passes import optimize
from vaqf.sim.simulator import Simulator

BOARD = get_board("zcu102")


def _node(g: Graph, op: str, x, attrs: dict, name: str):
    node = g.add_node(op, [x], [g.new_value(name, TensorInfo((1,), IntType(8)))], attrs, name=name)
    node.outputs[0].info = get_spec(op).infer(node, [x.info])[0]
    return node


def small_cnn(rng: np.random.Generator) -> Graph:
    """int8 image [1,3,8,8] -> 3x3 conv (pad 1, bipolar weights, 2-bit narrow out: thresholds) -> 2x2 max pool ->
    2x2 conv (int2 weights, uint4 out: thresholds) -> flatten of 4 channels x 3x3 pixels (the dense weight
    columns follow the stream) -> dense logits (the accumulator)."""
    g = Graph("small_cnn")
    x = g.add_input("x", TensorInfo((1, 3, 8, 8), IntType(8, signed=True), [0.05], 0))
    c0 = _node(g, "im2col", x, {"kernel": [3, 3], "stride": [1, 1], "pads": [1, 1, 1, 1]}, "c0_im2col")
    w0 = np.where(rng.random((8, 27)) < 0.5, -1, 1)
    d0 = add_dense(g, c0.outputs[0], w0, rng.integers(-40, 40, size=8), BinaryType(), rng.uniform(0.01, 0.03, 8),
                   name="c0")
    q0 = add_requant(g, d0.outputs[0], 0.5, IntType(2, signed=True, narrow=True), name="c0_q")
    t0 = _node(g, "transpose", q0.outputs[0], {"perm": [0, 2, 1]}, "c0_t")
    r0 = _node(g, "reshape", t0.outputs[0], {"shape": [1, 8, 8, 8]}, "c0_r")
    p0 = _node(g, "pool", r0.outputs[0], {"kind": "max", "kernel": [2, 2], "stride": [2, 2], "pads": [0, 0, 0, 0]},
               "p0")
    c1 = _node(g, "im2col", p0.outputs[0], {"kernel": [2, 2], "stride": [1, 1], "pads": [0, 0, 0, 0]}, "c1_im2col")
    d1 = add_dense(g, c1.outputs[0], rng.integers(-1, 2, size=(4, 32)), rng.integers(-3, 3, size=4),
                   IntType(2, True, narrow=True), rng.uniform(0.1, 0.3, 4), name="c1")
    q1 = add_requant(g, d1.outputs[0], 0.2, IntType(4, signed=False), name="c1_q")
    t1 = _node(g, "transpose", q1.outputs[0], {"perm": [0, 2, 1]}, "c1_t")
    r1 = _node(g, "reshape", t1.outputs[0], {"shape": [1, 36]}, "flatten")
    d2 = add_dense(g, r1.outputs[0], rng.integers(-7, 8, size=(5, 36)), rng.integers(-50, 50, size=5),
                   IntType(4, True, narrow=True), rng.uniform(0.01, 0.02, 5), name="fc")
    g.outputs.append(d2.outputs[0])
    for n in (d0, d1, d2):
        finalize_dense_attrs(n, n.inputs[0].info)
    g.verify()
    return optimize(g).graph


def _measure(project, graph: Graph, frames: int) -> tuple[dict[str, int], np.ndarray, np.ndarray]:
    """Run the project's testbench on ``frames`` random frames in one call: counters, outputs, expected."""
    exe = build(project)
    ins = random_int_inputs(graph, frames, seed=3)
    work = project / "run"
    work.mkdir(exist_ok=True)
    write_io_file(work / "in.bin", ins, np.int32)
    subprocess.run([str(exe), "-", str(work / "in.bin"), str(work / "out.bin"), str(frames), str(work / "cyc.txt")],
                   check=True, timeout=600)
    got = read_io_file(work / "out.bin", graph.outputs, frames, np.int64)[0]
    exp = Simulator(graph).run_int(ins).outputs[0]
    counted = dict(line.split() for line in (work / "cyc.txt").read_text().splitlines())
    return {k: int(v) for k, v in counted.items()}, got, np.asarray(exp, dtype=np.int64)


def _check(tmp_path, graph: Graph, knobs: dict | None, frames: int = 8) -> None:
    space = DataflowSpace.build(graph, BOARD)
    plan = space.plan(knobs) if knobs is not None else space.fastest(0.8)
    design = dataflow_design(plan, BOARD, 8, None, "test")
    project = write_project(graph, design, tmp_path / "p")
    counted, got, exp = _measure(project, graph, frames)
    np.testing.assert_array_equal(got.reshape(exp.shape), exp)
    for i, st in enumerate(plan.stages):
        assert counted[str(i)] == st.trips, (st.name, counted[str(i)], st.trips)
        assert counted[f"fill_{i}"] == st.depth + (64 if st.kind == "input" else 0), st.name
    assert counted["interval"] == plan.interval
    assert counted["latency"] == plan.latency
    # `vaqf csim --cycles` reads the same counters against design.json per stage
    cyc = read_cycles(project, project / "run" / "cyc.txt")
    assert all(c.measured == c.estimated for c in cyc), [c.to_json() for c in cyc if c.measured != c.estimated]


@pytest.mark.cxx
@pytest.mark.parametrize("knobs", [None, {"fc0": {"pe": 4, "simd": 3}, "fc1": {"pe": 1, "simd": 16}}])
def test_mlp_pipeline_bit_exact_and_cycles(tmp_path, rng, knobs):
    g = optimize(small_graph(rng)).graph
    assert [n.op for n in g.topo()] == ["dense", "dense"]
    pipe = build_pipeline(g)
    assert [layer.kind for layer in pipe.layers] == ["dense", "dense"]
    _check(tmp_path, g, knobs)


@pytest.mark.cxx
@pytest.mark.parametrize("knobs", [
    {"c0": {"pe": 2, "simd": 1}, "p0": {"p": 2}, "c1": {"pe": 4, "simd": 8}, "fc": {"pe": 1, "simd": 4}},
    {"c0": {"pe": 8, "simd": 3}, "p0": {"p": 1}, "c1": {"pe": 1, "simd": 1}, "fc": {"pe": 5, "simd": 36}},
])
def test_cnn_pipeline_bit_exact_and_cycles(tmp_path, rng, knobs):
    g = small_cnn(rng)
    kinds = [layer.kind for layer in build_pipeline(g).layers]
    assert kinds == ["conv", "pool", "conv", "dense"]
    _check(tmp_path, g, knobs)


def test_thresholds_equal_the_requantizer(rng):
    """Thresholds found by bisection give, for every reachable sum, the level the exact epilogue gives."""
    g = small_cnn(rng)
    layer = build_pipeline(g).layers[2]
    thr = thresholds(layer)  # on the raw sum; this layer's input zero point is 0
    node = layer.node
    a = node.attrs
    from vaqf.ir.qarith import Rounding
    from vaqf.sim.loops import epilogue_columns, epilogue_params, gemm_epilogue

    s = np.arange(-40, 41, dtype=np.int64)
    rq = a["requant"]
    cols = epilogue_columns(a["bias"], rq["mantissa"], rq["shift"], layer.n)
    params = epilogue_params(bool(a.get("relu")), True, int(rq["zero_point"]), 0, 15, Rounding(rq["rounding"]).cpp_id)
    exact = np.empty((s.size, layer.n), dtype=np.int64)
    gemm_epilogue(np.repeat(s[:, None], layer.n, axis=1), cols, params, exact)
    levels = (s[:, None, None] >= thr[None, :, :]).sum(axis=2)
    reach = np.abs(s)[:, None] <= np.abs(layer.weight).sum(axis=1)[None, :]  # |x| <= 1: the sums that occur
    assert reach.sum() > 100
    np.testing.assert_array_equal(levels[reach], exact[reach])


def test_unsupported_names_the_node(rng):
    g = Graph("res")
    x = g.add_input("x", TensorInfo((1, 8), IntType(8), [0.1], 0))
    d = add_dense(g, x, rng.integers(-3, 3, size=(8, 8)), name="fc")
    s = g.add_node("relu", [d.outputs[0]], [g.new_value("r", d.outputs[0].info)], {}, name="lonely_relu")
    g.outputs.append(s.outputs[0])
    with pytest.raises(DataflowUnsupported, match="lonely_relu"):
        build_pipeline(g)


def test_folding_choices_and_search_monotone(rng):
    assert choices(784) == [1, 2, 4, 8, 16, 784]
    assert choices(3) == [1, 3]
    g = small_cnn(rng)
    sp = DataflowSpace.build(g, BOARD)
    fast = sp.fastest(0.8)
    slow = sp.meeting(BOARD.clock_hz / (4 * fast.interval), 0.8)
    assert slow is not None and slow.interval <= 4 * fast.interval
    assert slow.resources().lut < fast.resources().lut
    assert fast.interval == min(sp.budgets())
