"""docs/ops.md from the registries, so the table of supported ops cannot drift from the code.

``python -m vaqf.optable`` writes docs/ops.md; ``--check`` exits 1 when the file differs from what the code
says (tests/test_ops_doc.py runs it). Two tables: the IR's ops (vaqf/ops: the unit each runs on, its
attribute record) and the ONNX ops the importer lowers (its ``_op_<Type>`` handlers and the QONNX quantizers),
each described by the first line of its docstring.
"""

from __future__ import annotations

import argparse
import inspect
import sys
from pathlib import Path

DOC = Path(__file__).resolve().parents[1] / "docs" / "ops.md"


def _first_line(obj: object) -> str:
    doc = inspect.getdoc(obj) or ""
    return " ".join(doc.split("\n\n")[0].split()).replace("|", "\\|")


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def render() -> str:
    """The text of docs/ops.md."""
    import vaqf.ops  # noqa: F401 - registers every op
    from vaqf.frontend.onnx_import.importer import QONNX_HANDLERS, Importer
    from vaqf.frontend.onnx_import.loading import QONNX_DOMAINS
    from vaqf.ir.opset import known_ops, op_definition
    from vaqf.ops.lut import FUNCTIONS, MAX_INPUT_BITS

    lines = [
        "# Supported ops",
        "",
        "Generated from the code by `python -m vaqf.optable` (tests/test_ops_doc.py fails when this file is",
        "out of date); do not edit by hand.",
        "",
        "## ONNX ops the importer lowers",
        "",
        "Any node whose inputs are all constants is folded at import (shape arithmetic and other constant",
        "subgraphs, size-capped; docs/robustness.md) whatever its type. Every other node needs a handler below;",
        "an op without one is refused with the node's name and type. Ops in the standard domain (`ai.onnx`) and",
        f"the QONNX quantizers (domains {', '.join(f'`{d}`' for d in sorted(QONNX_DOMAINS))}):",
        "",
        "| ONNX op | domain | how it is lowered |",
        "|---|---|---|",
    ]
    handlers = sorted(n[len("_op_"):] for n in dir(Importer) if n.startswith("_op_"))
    for op in handlers:
        lines.append(f"| `{op}` | ai.onnx | {_first_line(getattr(Importer, f'_op_{op}'))} |")
    for op, method in sorted(QONNX_HANDLERS.items()):
        lines.append(f"| `{op}` | QONNX | {_first_line(getattr(Importer, method))} |")
    lines += [
        "",
        f"Table functions (op `lut`, inputs of at most {MAX_INPUT_BITS} bits): "
        + ", ".join(f"`{name}`" + (f" ({', '.join(params)})" if params else "")
                    for name, (_, params) in FUNCTIONS.items()) + ".",
        "",
        "## IR ops",
        "",
        "Each runs on one unit of the engine (vaqf/units); the dataflow pipeline streams dense layers,",
        "convolution windows and max pooling and fuses elementwise ops into dense epilogues (docs/dataflow.md).",
        "Attributes marked *derived* are recomputed from the input's type by `Graph.verify()`.",
        "",
        "| op | engine unit | what it is | attributes |",
        "|---|---|---|---|",
    ]
    for name in known_ops():
        spec = op_definition(name)
        attrs = "; ".join(f"`{a.name}`{' (derived)' if a.derived else ''}{'' if a.required else ' (optional)'}: "
                          f"{_cell(a.doc)}" for a in spec.attributes) or "-"
        what = _first_line(inspect.getmodule(type(spec))) or _first_line(type(spec))
        lines.append(f"| `{name}` | {spec.unit_kind or '-'} | {what} | {attrs} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vaqf.optable", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if docs/ops.md is out of date")
    parser.add_argument("-o", "--output", type=Path, default=DOC, help="file to write (default docs/ops.md)")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        if not args.output.exists() or args.output.read_text() != text:
            print(f"{args.output} is out of date: run python -m vaqf.optable", file=sys.stderr)
            return 1
        return 0
    args.output.write_text(text)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
