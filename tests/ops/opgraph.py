"""Single-op graphs for op tests: build, simulate, emit and C-simulate one op in isolation."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tests.helpers import assert_equals_reference
from vaqf.backend.csim import run_csim
from vaqf.backend.emit import write_project
from vaqf.dse.design import Design
from vaqf.hw.model import unit_knob_space, units_of
from vaqf.ir import Graph, IntType, TensorInfo, Value
from vaqf.ops import get_spec
from vaqf.sim.fast import FAST_PLANS, run_fast
from vaqf.sim.simulator import Simulator


def single_op(op: str, inputs: list[TensorInfo], attrs: dict, name: str = "op") -> Graph:
    g = Graph(f"single_{op}")
    vals = [g.add_input(f"in{i}", info) for i, info in enumerate(inputs)]
    out = g.new_value("out", TensorInfo(inputs[0].shape, IntType(32)))
    node = g.add_node(op, vals, [out], attrs, name=name)
    get_spec(op).finalize(node)  # the derived attributes, as the importer's constructors set them
    out.info = get_spec(op).infer(node, [v.info for v in vals])[0]
    g.outputs = [out]
    g.verify()
    return g


def add_input(g: Graph, name: str, info: TensorInfo) -> Value:
    return g.add_input(name, info)


def knobs_for(graph: Graph, pick: str = "max") -> dict[str, dict[str, int]]:
    """Every unit at its largest (or smallest) setting: exercises the unrolled paths of the kernels."""
    out = {}
    for u, nodes in units_of(graph).items():
        space = unit_knob_space(nodes)
        out[u] = {k: (v[-1] if pick == "max" else v[0]) for k, v in space.items()}
    return out


def csim_matches(graph: Graph, folder: Path, count: int = 20, pick: str = "max", seed: int = 0) -> None:
    """Emit the graph, build it with g++, and assert the C++ equals the simulator on every output."""
    design = Design("zcu102", 8, knobs_for(graph, pick), 200.0, 128)
    write_project(graph, design, folder, force=True)
    res = run_csim(folder, count=count, seed=seed, graph=graph)
    assert res.inputs == count
    assert res.mismatched_values == 0, f"{res.mismatched_values} values differ"
    assert res.bit_exact == count
    assert_equals_reference(folder, res, seed)


def int_inputs(graph: Graph, rng: np.random.Generator, count: int) -> list[np.ndarray]:
    return [rng.integers(int(v.info.qtype.min), int(v.info.qtype.max) + 1, size=(count,) + v.info.sample_shape)
            for v in graph.inputs]


def edge_samples(info: TensorInfo, rng: np.random.Generator, count: int) -> np.ndarray:
    """``count`` integer samples [count, *sample shape] over the value's type: the first four are the edge
    cases (every element the type's minimum, its maximum, the zero point, alternating minimum and maximum),
    the rest uniform random."""
    lo, hi = int(info.qtype.min), int(info.qtype.max)
    x = rng.integers(lo, hi + 1, size=(count,) + info.sample_shape, dtype=np.int64)
    edges = [np.full(info.sample_shape, lo), np.full(info.sample_shape, hi),
             np.full(info.sample_shape, min(max(int(info.zero_point), lo), hi)),
             np.where(np.arange(int(np.prod(info.sample_shape))).reshape(info.sample_shape) % 2 == 0, lo, hi)]
    for i, e in enumerate(edges[:count]):
        x[i] = e
    return x


def assert_fast_equals_reference(graph: Graph, rng: np.random.Generator, count: int = 40,
                                 inputs: list[np.ndarray] | None = None) -> np.ndarray:
    """The simulator (the op's fast path, where it has one) equals the op's readable reference on edge cases
    and random samples of the one-node graph; returns the reference's output [count, *IR shape]."""
    (node,) = [n for n in graph.nodes if n.op != "const"] or graph.nodes  # constants feed the node under test
    samples = inputs if inputs is not None else [edge_samples(v.info, rng, count) for v in graph.inputs]
    count = samples[0].shape[0] if samples else 1
    given = {v.name: np.asarray(a).reshape((a.shape[0],) + v.info.shape)
             for a, v in zip(samples, graph.inputs, strict=True)}
    ir = []
    for v in node.inputs:
        p = graph.producer(v)
        ir.append(given[v.name] if p is None else get_spec(p.op).reference(p, [])[0])
    want = get_spec(node.op).reference(node, ir)[0]
    got = Simulator(graph).run_int(samples).outputs[0]
    assert want.dtype == np.int64
    np.testing.assert_array_equal(got, np.broadcast_to(want, (count,) + want.shape[1:]).reshape(got.shape))
    if node.op in FAST_PLANS:
        fast = run_fast(node, ir)[0]
        np.testing.assert_array_equal(fast, want)
    return want
