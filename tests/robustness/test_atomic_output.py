"""A failed or interrupted compile leaves the previous project intact and no temporary folders behind;
compiling twice gives byte-identical projects."""

from __future__ import annotations

import hashlib

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
