"""Single-op graphs for op tests: build, simulate, emit and C-simulate one op in isolation."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vaqf.backend.csim import run_csim
from vaqf.backend.emit import write_project
from vaqf.dse.design import Design
from vaqf.hw.model import unit_knob_space, units_of
from vaqf.ir import Graph, IntType, TensorInfo, Value
from vaqf.ops import get_spec


def single_op(op: str, inputs: list[TensorInfo], attrs: dict, name: str = "op") -> Graph:
    g = Graph(f"single_{op}")
    vals = [g.add_input(f"in{i}", info) for i, info in enumerate(inputs)]
    out = g.new_value("out", TensorInfo(inputs[0].shape, IntType(32)))
    node = g.add_node(op, vals, [out], attrs, name=name)
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


def int_inputs(graph: Graph, rng: np.random.Generator, count: int) -> list[np.ndarray]:
    return [rng.integers(int(v.info.qtype.min), int(v.info.qtype.max) + 1, size=(count,) + v.info.sample_shape)
            for v in graph.inputs]
