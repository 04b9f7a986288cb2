"""Hostile node and tensor names never reach generated code, and the project still builds bit-exactly."""

from __future__ import annotations

import re

import numpy as np
import onnx
import pytest

import vaqf
from vaqf.backend.csim import run_csim
from vaqf.backend.names import NameTable, sanitize
from vaqf.examples import example_model

HOSTILE = [
    'quote"s and \'apostrophes\'',
    "comment */ int evil = 1; /*",
    "line\nbreak\r\nand\ttab",
    "[exec rm -rf /tmp/x] $env(HOME) {brace}",
    "non-ascii Ω≈ç√∫ 名前 🙂",
    "x" * 10_000,
    "#include <stdlib.h>",
    "../../etc/passwd",
    "",
    "dup",
    "dup",
]


def _rename(model: onnx.ModelProto) -> onnx.ModelProto:
    """Give every node a hostile name and every tensor a hostile (but unique) name."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    mapping = {}
    names = sorted({t for n in m.graph.node for t in list(n.input) + list(n.output) if t}
                   | {i.name for i in m.graph.input} | {o.name for o in m.graph.output}
                   | {t.name for t in m.graph.initializer})
    for i, t in enumerate(names):
        mapping[t] = f"{HOSTILE[i % len(HOSTILE)]}#{i}"
    for n in m.graph.node:
        n.input[:] = [mapping.get(t, t) for t in n.input]
        n.output[:] = [mapping.get(t, t) for t in n.output]
    for i, n in enumerate(m.graph.node):
        n.name = HOSTILE[i % len(HOSTILE)]
    for coll in (m.graph.input, m.graph.output, m.graph.initializer):
        for v in coll:
            v.name = mapping[v.name]
    return m


@pytest.fixture(scope="module")
def hostile_project(tmp_path_factory):
    model = _rename(example_model("mlp"))
    onnx.checker.check_model(model)
    out = tmp_path_factory.mktemp("hostile") / "proj"
    vaqf.compile_model(model, out)
    return out


def test_generated_sources_hold_no_raw_names(hostile_project):
    texts = [p.read_text(errors="replace") for p in hostile_project.rglob("*")
             if p.is_file() and p.suffix in (".cpp", ".h", ".tcl", ".cfg", ".py", "") and p.name != "Makefile"]
    texts.append((hostile_project / "Makefile").read_text())
    for text in texts:
        for bad in ("*/ int evil", "[exec", "#include <stdlib.h>", "名前", "../../etc", "x" * 100, 'quote"s'):
            assert bad not in text
    for path in hostile_project.rglob("*"):
        assert re.fullmatch(r"[A-Za-z0-9_.\-]+", path.name), path.name


@pytest.mark.cxx
def test_hostile_project_builds_bit_exact(hostile_project):
    res = run_csim(hostile_project, count=50)
    assert res.bit_exact == 50


def test_name_table_is_collision_free_and_valid():
    table = NameTable()
    idents = [table(n) for n in HOSTILE + [h.upper() for h in HOSTILE] + ["main", "int", "_Reserved", "__x"]]
    assert len(set(idents)) == len(set(HOSTILE + [h.upper() for h in HOSTILE] + ["main", "int", "_Reserved", "__x"]))
    for ident in idents:
        assert re.fullmatch(r"[A-Za-z][A-Za-z0-9_]{0,47}", ident), ident
        assert ident not in ("main", "int")
    assert len({i.lower() for i in idents}) == len(set(idents))  # also unique on case-insensitive file systems
    assert sanitize("x" * 10_000) == "x" * 40


def test_report_escapes_names(tmp_path):
    model = _rename(example_model("mlp"))
    out = tmp_path / "p"
    vaqf.compile_model(model, out)
    html = (out / "report.html").read_text()
    for raw in ('quote"s', "<stdlib.h>"):
        assert raw not in html  # names appear only HTML-escaped (autoescape), never as markup


def test_duplicate_tensor_names_are_a_model_error():
    m = example_model("mlp")
    m.graph.node[1].output[0] = m.graph.node[0].output[0]  # two producers of one tensor: not SSA
    with pytest.raises(vaqf.VaqfError):
        vaqf.load_model(m)


def test_names_survive_in_simulation_results(hostile_project):
    x = np.random.default_rng(0).uniform(0, 1, size=(5, 64)).astype(np.float32)
    y = vaqf.simulate(hostile_project, x).dequantized[0]
    assert y.shape == (5, 10)
