"""User text in generated files is data in every output language (vaqf/backend/escape.py).

Every template is rendered with hostile strings in every user-controlled field: a board (built in Python,
past the board-file checks, which would refuse it) whose name and part carry newlines, ``*/``, ``}``,
``[exec ...]`` and a ``std::system`` call; a model whose name and node names carry ``<script>``, ANSI escapes
and bidi overrides. Then: g++ compiles the C++ and the attack does not run (the C-simulation stays
bit-exact), tclsh with stubbed Vivado/HLS commands sees only the calls a benign board gives, the cfg keeps
one value per line, the HTML report has no element or attribute from user text, the Markdown and the
terminal get no raw control character. Each filter also round-trips through its language's own reader.
"""

from __future__ import annotations

import ast
import dataclasses
import json
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import onnx
import pytest

import vaqf
from vaqf.backend import escape
from vaqf.backend.csim import run_csim
from vaqf.backend.emit import render_sources
from vaqf.cli import main
from vaqf.examples import example_model
from vaqf.hw.board import Board
from vaqf.report import write_report

STANDINS = Path(__file__).parents[1] / "backend" / "vivado_standins.tcl"
ESC, BIDI = "\x1b", "\u202e"
#: strings every filter must survive (quotes, comment closers, Tcl and shell metacharacters, line breaks,
#: control, bidi, non-ASCII, a trailing backslash, trigraphs)
NASTY = ['quote"s \'and\' `ticks`', "end */ of comment /* again", "line\nbreak\r\nand\ttab", "[exec touch x] $y {z} ;",
         "ansi \x1b[31mred\x1b[0m bell\x07 nul\x00", "bidi \u202eevil\u202c \u2066iso\u2069 zw\u200b",
         "non-ascii Ω 名前 🙂", "trailing backslash \\", "trigraph ??/", "<script>alert(1)</script>", "a|b", "`", ""]


def _hostile_board(marker: Path, base: Board) -> Board:
    name = f'evil"""\n std::system("touch {marker}_cpp"); // */ }} [exec touch {marker}_tcl] $x ; "\n#'
    part = f'{base.part}}}\nexec touch {marker}_part\n[exec touch {marker}_part2]\ntb.file=/etc/passwd'
    return dataclasses.replace(base, name=name, part=part,
                               description=f"desc \u202e</p><script>x</script> {ESC}[2J `rm` $(touch {marker}_sh)")


HOSTILE_NODE = "<script>alert('{i}')</script><img src=x onerror=alert({i})>\x1b[31m\u202e#{i}"


def _hostile_model() -> onnx.ModelProto:
    m = onnx.ModelProto()
    m.CopyFrom(example_model("mlp"))
    m.graph.name = "<script>alert('model')</script>\x1b]0;title\x07\u202emodel"
    tensors = sorted({t for n in m.graph.node for t in list(n.input) + list(n.output) if t}
                     | {v.name for coll in (m.graph.input, m.graph.output, m.graph.initializer) for v in coll})
    mapping = {t: HOSTILE_NODE.format(i=f"t{i}") for i, t in enumerate(tensors)}
    for i, n in enumerate(m.graph.node):
        n.input[:] = [mapping.get(t, t) for t in n.input]
        n.output[:] = [mapping.get(t, t) for t in n.output]
        n.name = HOSTILE_NODE.format(i=f"n{i}")
    for coll in (m.graph.input, m.graph.output, m.graph.initializer):
        for v in coll:
            v.name = mapping[v.name]
    return m


def _render_into(src: Path, dst: Path, graph, design) -> dict[str, str]:  # noqa: ANN001 - Graph, Design
    shutil.copytree(src, dst)
    shutil.rmtree(dst / "build", ignore_errors=True)
    sources, _, _ = render_sources(graph, design)
    for rel, text in sources.items():
        (dst / rel).write_text(text)
    write_report(dst, graph, design, design.board)
    return sources


@pytest.fixture(scope="module")
def projects(tmp_path_factory):
    """One graph rendered for a benign user board and for a hostile one (both without a block design)."""
    root = tmp_path_factory.mktemp("escaping")
    marker = root / "PWNED"
    res = vaqf.compile_model(_hostile_model(), root / "base")
    graph, design = res.graph, res.design
    good = dataclasses.replace(design, board=dataclasses.replace(design.board, name="userboard", description=""))
    bad = dataclasses.replace(design, board=_hostile_board(marker, design.board))
    benign_sources = _render_into(res.project, root / "benign", graph, good)
    sources = _render_into(res.project, root / "hostile", graph, bad)
    return {"root": root, "marker": marker, "benign": root / "benign", "hostile": root / "hostile",
            "sources": sources, "benign_sources": benign_sources, "board": bad.board, "benign_board": good.board}


def _no_marker(p: dict) -> None:
    hits = sorted(q.name for q in p["root"].iterdir() if q.name.startswith("PWNED"))
    assert not hits, f"user text ran as code: {hits}"


def test_escaping_adds_no_line_and_no_raw_control_character(projects):
    """Every file keeps the benign render's line structure; a newline from user text would add a line."""
    for rel, text in projects["sources"].items():
        benign = projects["benign_sources"][rel]
        assert text.count("\n") == benign.count("\n"), rel
        assert ESC not in text and BIDI not in text and "\x07" not in text, rel
        if not rel.endswith(".md"):  # non-ASCII is escaped in code; Markdown shows it
            assert text.isascii(), rel


def test_cpp_comment_holds_the_board_and_nothing_runs(projects):
    params = (projects["hostile"] / "src" / "vaqf_params.h").read_text()
    first = params.splitlines()[0]
    assert first.startswith("// Generated by vaqf") and "std::system" in first and "*/" not in first
    assert not first.rstrip().endswith("\\")


@pytest.mark.cxx
def test_hostile_project_compiles_and_stays_bit_exact(projects):
    res = run_csim(projects["hostile"], count=8)
    assert res.bit_exact == 8
    _no_marker(projects)


def _tclsh() -> str:
    exe = shutil.which("tclsh")
    if exe is None:
        pytest.skip("tclsh is not installed (scripts/setup.sh installs Debian's tcl)")
    return exe


def _run_tcl(work: Path, script: str, log: Path) -> tuple[int, str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VAQF_")}
    env["VAQF_TCL_LOG"] = str(log)
    proc = subprocess.run([_tclsh(), str(STANDINS), f"scripts/{script}"], cwd=work, env=env, capture_output=True,
                          text=True)
    return proc.returncode, log.read_text() if log.exists() else "", proc.stdout + proc.stderr


@pytest.mark.parametrize("script", ["build_vitis_hls.tcl", "build_vivado_hls.tcl", "build_bd.tcl"])
def test_tcl_sees_only_the_expected_calls(projects, script, tmp_path):
    rc_b, log_b, _ = _run_tcl(projects["benign"], script, tmp_path / "benign.log")
    rc_h, log_h, out_h = _run_tcl(projects["hostile"], script, tmp_path / "hostile.log")
    board = projects["board"]
    assert rc_h == rc_b, out_h
    # the same calls, with the part as one word holding exactly the user's text
    assert log_h == log_b.replace(f"\t{projects['benign_board'].part}\n", f"\t{board.part}\n")
    if script == "build_bd.tcl":  # a user board has no block design: the script says so, naming the board
        assert rc_h == 1 and board.name in out_h
    else:
        assert f"set_part\t{board.part}\n" in log_h
    _no_marker(projects)


def test_cfg_keeps_one_value_per_line(projects):
    def keys(text: str) -> list[str]:
        return [line.split("=", 1)[0] for line in text.splitlines() if line and not line.startswith(("#", "["))]

    hostile = (projects["hostile"] / "scripts" / "hls_config.cfg").read_text()
    benign = (projects["benign"] / "scripts" / "hls_config.cfg").read_text()
    assert keys(hostile) == keys(benign)
    assert "tb.file=/etc/passwd" not in hostile.splitlines()


def test_makefile_and_driver_hold_the_board_as_text(projects):
    make = (projects["hostile"] / "Makefile").read_text()
    assert make.splitlines()[0].startswith("# Generated by vaqf") and "$(" not in make.splitlines()[0]
    drv_h = ast.parse((projects["hostile"] / "driver" / "vaqf_driver.py").read_text())
    drv_b = ast.parse((projects["benign"] / "driver" / "vaqf_driver.py").read_text())
    assert [ast.dump(n) for n in drv_h.body[1:]] == [ast.dump(n) for n in drv_b.body[1:]]  # only the docstring
    assert "touch" in ast.get_docstring(drv_h)


class _Markup(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, tuple[str, ...]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):  # noqa: ANN001 - HTMLParser's signature
        self.tags.append((tag, tuple(sorted(a for a, _ in attrs))))

    def handle_data(self, data):  # noqa: ANN001
        self.text.append(data)


def _markup(path: Path) -> _Markup:
    p = _Markup()
    p.feed(path.read_text())
    return p


def test_html_report_has_no_element_or_attribute_from_user_text(projects):
    hostile, benign = _markup(projects["hostile"] / "report.html"), _markup(projects["benign"] / "report.html")
    assert hostile.tags == benign.tags
    assert not {t for t, _ in hostile.tags} & {"script", "img"} - {t for t, _ in benign.tags}
    text = "".join(hostile.text)
    assert "<script>alert('model')</script>" in text and "onerror=alert(" in text  # shown, as text
    assert ESC not in text and BIDI not in text


def test_markdown_has_no_raw_markup_or_control(projects):
    for name in ("report.md", "README.md"):
        text = (projects["hostile"] / name).read_text()
        assert ESC not in text and BIDI not in text, name
        # outside code spans (where Markdown shows HTML as text) no tag and no table cell break survives
        prose = re.sub(r"(`+)(?!`).*?(?<!`)\1(?!`)", "", text)
        assert not re.search(r"(?<!\\)<(script|img)", prose), name


def test_vaqf_report_prints_no_raw_escape(projects, capsys):
    hostile = projects["root"] / "hostile_report"
    shutil.copytree(projects["benign"], hostile)
    assert main(["report", str(hostile), "--regenerate"]) == 0
    out = capsys.readouterr().out
    assert "script" in out  # the model name is shown ...
    assert ESC not in out and BIDI not in out and "\x07" not in out  # ... without what a terminal acts on


@pytest.mark.parametrize("text", NASTY)
def test_tcl_word_round_trips_through_tclsh(text, tmp_path):
    script = tmp_path / "t.tcl"
    script.write_text(f"fconfigure stdout -encoding utf-8 -translation lf\nputs -nonewline {escape.tcl(text)}\n",
                      encoding="ascii")
    proc = subprocess.run([_tclsh(), str(script)], capture_output=True)
    assert proc.returncode == 0, proc.stderr
    # Tcl 8.6 holds only the Basic Multilingual Plane: a character beyond it reads back as U+FFFD
    assert proc.stdout.decode("utf-8") == "".join(c if ord(c) < 0x10000 else "\ufffd" for c in text)


@pytest.mark.cxx
def test_cpp_comment_and_string_round_trip_through_gxx(tmp_path):
    if shutil.which("g++") is None:
        pytest.skip("g++ is not installed")
    lines = ["#include <cstdio>", "#include <cstring>", "int main() {", "    int bad = 0;"]
    for text in NASTY:
        lines.append(f"    // {escape.cpp_comment(text)}")
        lines.append("    bad += 1;")  # a line spliced into the comment above would drop this
        lines.append(f"    /* {escape.cpp_comment(text)} */ bad -= 1;")
        lit = escape.cpp_string(text)
        lines.append(f'    {{ static const char s[] = "{lit}"; bad += sizeof(s) - 1 != {len(text.encode())}u; }}')
        lines.append(f'    std::fwrite("{lit}", 1, {len(text.encode())}, stdout); std::fputc(0x1e, stdout);')
    lines += ["    return bad;", "}"]
    src = tmp_path / "t.cpp"
    src.write_text("\n".join(lines) + "\n", encoding="ascii")
    exe = tmp_path / "t"
    build = subprocess.run(["g++", "-std=c++14", "-trigraphs", "-Wall", "-Werror", "-o", str(exe), str(src)],
                           capture_output=True, text=True)
    assert build.returncode == 0, build.stderr
    run = subprocess.run([str(exe)], capture_output=True)
    assert run.returncode == 0
    assert run.stdout.split(b"\x1e")[:-1] == [t.encode("utf-8") for t in NASTY]


@pytest.mark.parametrize("text", NASTY)
def test_python_text_round_trips(text):
    assert ast.literal_eval('"""' + escape.py_text(text) + '"""') == text


@pytest.mark.parametrize("text", NASTY)
def test_single_line_filters_stay_on_one_printable_line(text):
    for f in (escape.cpp_comment, escape.tcl_comment, escape.cfg, escape.make_text, escape.py_text, escape.tcl):
        out = f(text)
        assert out.isascii() and out.isprintable(), (f.__name__, out)
    assert "*/" not in escape.cpp_comment(text) and "??" not in escape.cpp_comment(text)
    assert not escape.cpp_comment(text).endswith("\\") and not escape.tcl_comment(text).endswith("\\")
    assert not set(escape.tcl_comment(text)) & set("{}")
    assert not set(escape.cfg(text)) & set("#;")
    for f in (escape.terminal, escape.md, escape.md_code):
        assert all(c.isprintable() for c in f(text)), f.__name__


def test_md_code_is_one_code_span():
    assert escape.md_code("a`b") == "``a`b``"
    assert escape.md_code("`x") == "`` `x ``"
    assert escape.md_code("a|b") == "`a\\|b`"
    assert escape.md("<b>*x*</b>") == "\\<b\\>\\*x\\*\\</b\\>"


def test_autoescape_follows_every_suffix():
    assert escape.is_html("project/report.html.j2") and escape.is_html("x.htm") and escape.is_html(None)
    assert not escape.is_html("project/vaqf_top.cpp.j2") and not escape.is_html("project/README.md.j2")


def test_identifier_positions_refuse_raw_names():
    with pytest.raises(vaqf.VaqfError, match="unsanitized"):
        escape.cpp_ident("x; system(1)")
    assert escape.cpp_ident("l0_dense") == "l0_dense"


def test_layers_json_keeps_the_raw_names(projects):
    layers = json.loads((projects["hostile"] / "data" / "layers.json").read_text())
    assert any("<script>" in layer["node"] for layer in layers)  # JSON escapes them; tools map back by it
    assert np.all([escape.cpp_ident(layer["ident"]) for layer in layers])
