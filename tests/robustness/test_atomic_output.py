"""A failed or interrupted compile leaves the previous project intact and no temporary folders behind; the
install is one atomic exchange (or two renames where there is none) that signals cannot split; compiling twice
gives byte-identical projects."""

from __future__ import annotations

import hashlib
import json
import os
import signal

import pytest

import vaqf
from vaqf.backend import emit
from vaqf.errors import OutputExists
from vaqf.examples import example_model


def _digest(folder) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("exc", [RuntimeError("disk full"), KeyboardInterrupt()])
def test_failed_compile_keeps_previous_project(tmp_path, monkeypatch, exc):
    out = tmp_path / "proj"
    vaqf.compile_model(example_model("mlp"), out)
    before = _digest(out)

    def boom(*args, **kwargs):
        raise exc

    monkeypatch.setattr(emit, "save_graph", boom)
    with pytest.raises(type(exc)):
        vaqf.compile_model(example_model("mlp"), out, board="zcu104")
    assert _digest(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["proj"]  # no temporary folders left


def test_foreign_folder_is_never_touched(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("precious")
    with pytest.raises(OutputExists):
        vaqf.compile_model(example_model("mlp"), out)
    assert (out / "notes.txt").read_text() == "precious"
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]


def test_compiles_are_byte_identical(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    vaqf.compile_model(example_model("mlp"), a)
    vaqf.compile_model(example_model("mlp"), b)
    da, db = _digest(a), _digest(b)
    assert da == db
    text = "".join((a / f).read_text(errors="replace") for f in da if not f.endswith((".bin", ".npz", ".png")))
    assert str(tmp_path) not in text  # no absolute paths in generated files


def test_install_is_one_exchange_and_minus_o_always_exists(tmp_path, monkeypatch):
    out = tmp_path / "proj"
    vaqf.compile_model(example_model("mlp"), out)
    seen = []
    real = emit._exchange

    def spy(a, b):
        seen.append(b.is_dir())
        done = real(a, b)
        seen.append((done, b.is_dir()))
        return done

    monkeypatch.setattr(emit, "_exchange", spy)
    vaqf.compile_model(example_model("mlp"), out, board="zcu104")
    assert seen == [True, (True, True)]
    assert emit.project_problem(out) is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["proj"]


def test_two_rename_install_where_there_is_no_exchange(tmp_path, monkeypatch):
    out = tmp_path / "proj"
    vaqf.compile_model(example_model("mlp"), out)
    (out / "notes.txt").write_text("mine")
    monkeypatch.setattr(emit, "_exchange", lambda a, b: False)
    vaqf.compile_model(example_model("mlp"), out, board="zcu104")
    assert (out / "notes.txt").read_text() == "mine" and emit.project_problem(out) is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["proj"]


def test_ctrl_c_during_the_install_waits_for_it_to_finish(tmp_path, monkeypatch):
    out = tmp_path / "proj"
    vaqf.compile_model(example_model("mlp"), out)
    (out / "vaqf_prj").mkdir()
    (out / "vaqf_prj" / "run.log").write_text("synthesis")
    real = emit._exchange

    def interrupted(a, b):
        os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C while the user's files move and the folders trade places
        return real(a, b)

    monkeypatch.setattr(emit, "_exchange", interrupted)
    with pytest.raises(KeyboardInterrupt):
        vaqf.compile_model(example_model("mlp"), out, board="zcu104")
    # delivered once the install was complete: the new project, with the user's files, and nothing left over
    assert emit.project_problem(out) is None
    assert json.loads((out / "design.json").read_text())["board"]["name"] == "zcu104"
    assert (out / "vaqf_prj" / "run.log").read_text() == "synthesis"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["proj"]
