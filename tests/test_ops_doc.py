"""docs/ops.md is what ``python -m vaqf.optable`` writes from the registries: every IR op and every ONNX op
the importer lowers is in it, and the committed file is not out of date."""

from __future__ import annotations

from vaqf.frontend.onnx_import.importer import QONNX_HANDLERS, Importer
from vaqf.ir.opset import known_ops
from vaqf.optable import DOC, main, render


def test_committed_table_is_up_to_date() -> None:
    assert DOC.read_text() == render(), "docs/ops.md is out of date: run python -m vaqf.optable"
    assert main(["--check"]) == 0


def test_every_op_and_handler_is_listed_with_a_description() -> None:
    text = render()
    for op in known_ops():
        assert f"| `{op}` |" in text
    handlers = [n[len("_op_"):] for n in dir(Importer) if n.startswith("_op_")] + list(QONNX_HANDLERS)
    for op in handlers:
        (row,) = [line for line in text.splitlines() if line.startswith(f"| `{op}` |")]
        assert not row.endswith("|  |"), f"{op}: the handler has no docstring"


def test_check_fails_on_a_stale_file(tmp_path) -> None:
    stale = tmp_path / "ops.md"
    stale.write_text(render().replace("Sigmoid", "Sigmoidal"))
    assert main(["--check", "-o", str(stale)]) == 1
    assert main(["-o", str(stale)]) == 0 and main(["--check", "-o", str(stale)]) == 0
