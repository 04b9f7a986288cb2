"""save_graph / load_graph: a loaded graph is the same graph and simulates identically."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.helpers import assert_same_graph, qdq_model, qonnx_model, small_graph
from vaqf.api import load_model
from vaqf.backend.emit import random_int_inputs
from vaqf.errors import VaqfError
from vaqf.ir import Graph
from vaqf.ir.serialize import load_graph, save_graph
from vaqf.sim.simulator import Simulator


def _graphs(rng: np.random.Generator) -> dict[str, Graph]:
    return {"small": small_graph(rng), "small_requant_first": small_graph(rng, relu_first=False, out_zp=7),
            "qonnx": load_model(qonnx_model(rng)), "qonnx_unfused": load_model(qonnx_model(rng), optimize=False),
            "qdq": load_model(qdq_model(rng))}


@pytest.mark.parametrize("which", ["small", "small_requant_first", "qonnx", "qonnx_unfused", "qdq"])
def test_round_trip_gives_identical_simulation(which: str, tmp_path: Path, rng: np.random.Generator) -> None:
    g = _graphs(rng)[which]
    paths = save_graph(g, tmp_path)
    assert sorted(p.name for p in paths) == ["graph.json", "graph.npz"]
    back = load_graph(tmp_path)
    assert_same_graph(g, back)
    assert back.name == g.name and back.metadata.keys() == g.metadata.keys()
    ints = random_int_inputs(g, 300, seed=3)
    want = Simulator(g).run_int(ints)
    got = Simulator(back).run_int(ints)
    for a, b in zip(want.outputs, got.outputs, strict=True):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(want.dequantized, got.dequantized, strict=True):
        np.testing.assert_array_equal(a, b)
    # saving the loaded graph again writes the same structure
    again = tmp_path / "again"
    again.mkdir()
    save_graph(back, again)
    assert (again / "graph.json").read_text() == (tmp_path / "graph.json").read_text()


def test_round_trip_keeps_types_and_attributes(tmp_path: Path, rng: np.random.Generator) -> None:
    g = load_model(qonnx_model(rng))
    save_graph(g, tmp_path, stem="m")
    back = load_graph(tmp_path, stem="m")
    for a, b in zip(g.topo(), back.topo(), strict=True):
        assert (a.name, a.op, a.source) == (b.name, b.op, b.source)
        assert a.attrs["w_type"] == b.attrs["w_type"]
        assert a.attrs["weight"].dtype == b.attrs["weight"].dtype
        for va, vb in zip(a.outputs, b.outputs, strict=True):
            assert va.name == vb.name and va.info.same_meaning(vb.info)
    assert [v.name for v in back.inputs] == [v.name for v in g.inputs]
    assert back.metadata["input_rounding"] == g.metadata["input_rounding"]


def test_load_graph_errors(tmp_path: Path, rng: np.random.Generator) -> None:
    with pytest.raises(VaqfError, match="is it a vaqf project"):
        load_graph(tmp_path)
    save_graph(small_graph(rng), tmp_path)
    (tmp_path / "graph.npz").write_bytes(b"not an npz")
    with pytest.raises(VaqfError, match="cannot read"):
        load_graph(tmp_path)
    save_graph(small_graph(rng), tmp_path)
    text = (tmp_path / "graph.json").read_text().replace('"format": 1', '"format": 99')
    (tmp_path / "graph.json").write_text(text)
    with pytest.raises(VaqfError, match="format 99"):
        load_graph(tmp_path)
