"""Tampered graph.json / graph.npz: typed, acyclic and consistent, or a one-line VaqfError naming the file,
never an internal error."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import small_graph
from vaqf.errors import VaqfError
from vaqf.ir.serialize import load_graph, save_graph


def _node(d: dict, op: str) -> dict:
    return next(n for n in d["nodes"] if n["op"] == op)


def _qtype(d: dict) -> dict:
    return d["nodes"][0]["outputs"][0]["info"]["qtype"]


def _deep(d: dict) -> None:
    x: dict = {}
    d["nodes"][0]["attrs"]["deep"] = x
    for _ in range(200):
        x["a"] = {}
        x = x["a"]


def _cycle(d: dict) -> None:  # the first node reads the last node's output
    d["nodes"][0]["inputs"] = [d["nodes"][-1]["outputs"][0]["name"]]


CASES: dict[str, Callable[[dict], None]] = {
    "unknown op": lambda d: d["nodes"][0].__setitem__("op", "frobnicate"),
    "cycle": _cycle,
    "undefined input": lambda d: d["nodes"][1].__setitem__("inputs", ["nowhere"]),
    "missing nodes": lambda d: d.pop("nodes"),
    "missing op": lambda d: d["nodes"][0].pop("op"),
    "missing info": lambda d: d["nodes"][0]["outputs"][0].pop("info"),
    "bits 0": lambda d: _qtype(d).__setitem__("bits", 0),
    "bits 200": lambda d: _qtype(d).__setitem__("bits", 200),
    "qtype kind": lambda d: _qtype(d).__setitem__("kind", "quaternion"),
    "negative shape": lambda d: d["inputs"][0]["info"].__setitem__("shape", [1, -12]),
    "huge shape": lambda d: d["inputs"][0]["info"].__setitem__("shape", [2**20, 2**20, 2**20]),
    "shape of strings": lambda d: d["inputs"][0]["info"].__setitem__("shape", ["1", "12"]),
    "nan scale": lambda d: d["inputs"][0]["info"].__setitem__("scale", [float("nan")]),
    "zero scale": lambda d: d["inputs"][0]["info"].__setitem__("scale", [0.0]),
    "zero point string": lambda d: d["inputs"][0]["info"].__setitem__("zero_point", "0"),
    "deep nesting": _deep,
    "missing array": lambda d: _node(d, "dense")["attrs"]["weight"].__setitem__("__array__", "nope"),
    "duplicate node": lambda d: d["nodes"].append(dict(d["nodes"][-1])),
    "output never computed": lambda d: d.__setitem__("outputs", ["ghost"]),
    "no outputs": lambda d: d.__setitem__("outputs", []),
    "output type changed": lambda d: _node(d, "dense")["outputs"][0]["info"]["shape"].__setitem__(-1, 99),
    "attrs tampered": lambda d: _node(d, "dense")["attrs"].pop("weight"),
    "nodes not a list": lambda d: d.__setitem__("nodes", {"a": 1}),
    "name a number": lambda d: d.__setitem__("name", 7),
}


@pytest.fixture
def project(tmp_path: Path, rng: np.random.Generator) -> Path:
    save_graph(small_graph(rng), tmp_path)
    return tmp_path


def test_the_saved_graph_loads(project: Path) -> None:
    assert load_graph(project).outputs


@pytest.mark.parametrize("case", sorted(CASES))
def test_tampered_graph_json_is_a_clear_error(case: str, project: Path) -> None:
    path = project / "graph.json"
    d = json.loads(path.read_text())
    CASES[case](d)
    path.write_text(json.dumps(d))
    with pytest.raises(VaqfError) as e:
        load_graph(project)
    msg = str(e.value)
    assert "\n" not in msg and "graph" in msg, msg


@pytest.mark.parametrize("text", ["[" * 100000, "{}", "[]", "\xff"])
def test_unreadable_graph_json(text: str, project: Path) -> None:
    (project / "graph.json").write_bytes(text.encode("latin-1"))
    with pytest.raises(VaqfError):
        load_graph(project)


def test_npz_with_a_wrong_array_is_a_clear_error(project: Path) -> None:
    with np.load(project / "graph.npz") as z:
        arrays = {k: z[k] for k in z.files}
    key = next(k for k, a in arrays.items() if a.ndim == 2)
    arrays[key] = np.zeros((3, 3), arrays[key].dtype)
    np.savez(project / "graph.npz", **arrays)
    with pytest.raises(VaqfError, match="graph"):
        load_graph(project)
