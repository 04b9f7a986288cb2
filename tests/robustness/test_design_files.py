"""Tampered design.json files: every field typed and in range, the knobs this model's units and their legal
values; a one-line VaqfError (exit 2 from the CLI) otherwise, never an internal error or a silent estimate."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest

from vaqf.api import compile_model, load_model
from vaqf.cli import main
from vaqf.dse.design import Design, check_knobs
from vaqf.errors import VaqfError
from vaqf.examples import example_model


@pytest.fixture(scope="module")
def mlp_design(tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("mlp") / "p"
    compile_model(example_model("mlp"), out)
    return json.loads((out / "design.json").read_text())


@pytest.fixture(scope="module")
def mlp_graph():  # noqa: ANN201
    return load_model(example_model("mlp"))


def _unit(d: dict) -> str:
    return sorted(d["knobs"])[0]


def _set_knob(value: object):  # noqa: ANN202
    def edit(d: dict) -> None:
        u = _unit(d)
        d["knobs"][u][sorted(d["knobs"][u])[0]] = value
    return edit


STRUCTURAL = {
    "knob 0": (_set_knob(0), "outside 1..65536"),
    "knob negative": (_set_knob(-4), "outside 1..65536"),
    "knob 2**62": (_set_knob(2**62), "outside 1..65536"),
    "knob 1.5": (_set_knob(1.5), "must be an integer"),
    "knob true": (_set_knob(True), "must be an integer"),
    "knob string": (_set_knob("4"), "must be an integer"),
    "knobs a list": (lambda d: d.__setitem__("knobs", [1, 2]), "knobs must map"),
    "act_bits 0": (lambda d: d.__setitem__("act_bits", 0), "act_bits = 0 is outside 2..16"),
    "act_bits 200": (lambda d: d.__setitem__("act_bits", 200), "act_bits = 200 is outside 2..16"),
    "clock nan": (lambda d: d.__setitem__("clock_mhz", float("nan")), "clock_mhz must be a finite"),
    "word_bits 7": (lambda d: d.__setitem__("word_bits", 7), "word_bits must be one of"),
    "missing knobs": (lambda d: d.pop("knobs"), "lacks knobs"),
    "missing board": (lambda d: d.pop("board"), "lacks board"),
    "unknown field": (lambda d: d.__setitem__("knobz", {}), "unknown fields 'knobz'"),
    "old version": (lambda d: d.__setitem__("version", 1), "version 1"),
    "board not a record": (lambda d: d.__setitem__("board", 5), "board"),
}


@pytest.mark.parametrize("case", sorted(STRUCTURAL))
def test_malformed_design_is_a_clear_error(case: str, mlp_design: dict, tmp_path: Path) -> None:
    edit, message = STRUCTURAL[case]
    d = copy.deepcopy(mlp_design)
    edit(d)
    p = tmp_path / "design.json"
    p.write_text(json.dumps(d))
    with pytest.raises(VaqfError, match=message.replace("(", r"\(").replace("*", r"\*")) as e:
        Design.load(p)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("text", ["[" * 100000 + "]" * 100000, "not json", "\xff\xfe", "[]", "null"])
def test_unreadable_design_files(text: str, tmp_path: Path) -> None:
    p = tmp_path / "design.json"
    p.write_bytes(text.encode("latin-1"))
    with pytest.raises(VaqfError) as e:
        Design.load(p)
    assert "\n" not in str(e.value)


def _knob_case(mlp_design: dict, edit) -> dict:  # noqa: ANN001
    d = copy.deepcopy(mlp_design)
    edit(d["knobs"])
    return d["knobs"]


def test_the_compiled_design_passes_the_model_check(mlp_design: dict, mlp_graph) -> None:  # noqa: ANN001
    check_knobs(Design.from_json(mlp_design).knobs, mlp_graph)


@pytest.mark.parametrize("edit, message", [
    (lambda k: k[sorted(k)[0]].__setitem__("turbo", 4), "has no knob 'turbo'"),
    (lambda k: k.__setitem__("dense_int2", {"pe": 1}), "units 'dense_int2' that this model does not have"),
    (lambda k: k.pop(sorted(k)[0]), "no knobs for its units"),
    (lambda k: k[sorted(k)[0]].pop("pe"), "lacks knob pe"),
    (lambda k: k[sorted(k)[0]].__setitem__("pe", 3), "pe = 3 is not one of this model's choices"),
    (lambda k: k[sorted(k)[0]].__setitem__("pe", 4096), "pe = 4096 is not one of this model's choices"),
], ids=["unknown knob", "unknown unit", "missing unit", "missing knob", "not a power of two", "above the choices"])
def test_knobs_must_be_this_models(edit, message: str, mlp_design: dict, mlp_graph) -> None:  # noqa: ANN001
    knobs = _knob_case(mlp_design, edit)
    with pytest.raises(VaqfError, match=message):
        check_knobs(knobs, mlp_graph)


@pytest.mark.parametrize("value", [-4, 0, 3, 2**62, "x"])
def test_cli_compile_with_a_tampered_design_exits_2(value: object, mlp_design: dict, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture) -> None:
    d = copy.deepcopy(mlp_design)
    d["knobs"][_unit(d)]["pe"] = value
    p = tmp_path / "design.json"
    p.write_text(json.dumps(d))
    rc = main(["compile", "--example", "mlp", "-o", str(tmp_path / "out"), "--design", str(p)])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert "internal error" not in err
    assert len([line for line in err.splitlines() if line.startswith("vaqf: error:")]) == 1
    assert not (tmp_path / "out").exists()


def test_the_compiled_design_compiles_again(mlp_design: dict, tmp_path: Path) -> None:
    p = tmp_path / "design.json"
    p.write_text(json.dumps(mlp_design))
    res = compile_model(example_model("mlp"), tmp_path / "again", design=p)
    assert res.design.knobs == mlp_design["knobs"] and np.isfinite(res.design.estimate["fps"])
