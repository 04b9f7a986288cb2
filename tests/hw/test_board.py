"""Boards: the built-in table against the data sheets, and user boards from JSON and YAML files."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from vaqf.cli import main
from vaqf.errors import VaqfError
from vaqf.hw.board import BOARDS, Board, board_from_dict, get_board, load_board_file, register_board

# FACTS.md section 4 (vendor data sheets): LUT, FF, BRAM36, URAM, DSP
DATASHEETS = {
    "zcu102": ("xczu9eg-ffvb1156-2-e", 274_080, 548_160, 912, 0, 2_520),
    "zcu104": ("xczu7ev-ffvc1156-2-e", 230_400, 460_800, 312, 96, 1_728),
    "ultra96v2": ("xczu3eg-sbva484-1-e", 70_560, 141_120, 216, 0, 360),
    "kv260": ("xck26-sfvc784-2LV-c", 117_120, 234_240, 144, 64, 1_248),
    "pynqz2": ("xc7z020clg400-1", 53_200, 106_400, 140, 0, 220),
    "u250": ("xcu250-figd2104-2L-e", 1_728_000, 3_456_000, 2_688, 1_280, 12_288),
}

USER = {"name": "myboard", "part": "xczu5ev-sfvc784-1-e", "lut": 117_120, "ff": 234_240, "bram18": 288,
        "uram": 64, "dsp": 1_248, "clock_mhz": 150, "ddr_gbps": 9.5, "axi_bits": 128,
        "description": "a custom ZU5EV carrier"}


@pytest.mark.parametrize("name", list(DATASHEETS))
def test_builtin_boards_match_the_data_sheets(name: str) -> None:
    part, lut, ff, bram36, uram, dsp = DATASHEETS[name]
    b = BOARDS[name]
    assert (b.part, b.lut, b.ff, b.bram18, b.uram, b.dsp) == (part, lut, ff, 2 * bram36, uram, dsp)
    assert b.clock_mhz > 0 and b.ddr_gbps > 0 and b.axi_bits >= 32
    # a weight byte per cycle is bounded by both the DDR rate and one AXI master
    assert b.ddr_bytes_per_cycle == min(b.ddr_gbps * 1e9 / b.clock_hz, b.axi_bits / 8)


def test_aliases_and_case() -> None:
    assert get_board("ZCU102") is BOARDS["zcu102"]
    assert get_board("ultra96") is BOARDS["ultra96v2"]
    assert get_board("pynq-z2") is BOARDS["pynqz2"]
    with pytest.raises(VaqfError, match="unknown board 'zcu999'.*zcu102"):
        get_board("zcu999")


def test_json_board_file(tmp_path: Path) -> None:
    p = tmp_path / "myboard.json"
    p.write_text(json.dumps(USER))
    b = get_board(str(p))
    assert b == Board(**{**USER, "clock_mhz": 150.0})
    assert b.resources() == {"lut": 117_120, "ff": 234_240, "dsp": 1_248, "bram18": 288, "uram": 64}


@pytest.mark.parametrize("suffix", [".yaml", ".yml"])
def test_yaml_board_file(tmp_path: Path, suffix: str) -> None:
    pytest.importorskip("yaml")
    p = tmp_path / f"myboard{suffix}"
    p.write_text("\n".join(f"{k}: {json.dumps(v)}" for k, v in USER.items() if k not in ("uram", "axi_bits")))
    b = get_board(str(p))
    assert b.name == "myboard" and b.clock_mhz == 150.0 and b.ddr_gbps == 9.5
    assert b.uram == 0 and b.axi_bits == 128  # defaults for the optional fields


def test_yaml_without_pyyaml_says_what_to_do(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = tmp_path / "myboard.yaml"
    p.write_text("name: myboard\n")
    monkeypatch.setitem(sys.modules, "yaml", None)  # import yaml now raises ImportError
    with pytest.raises(VaqfError, match=r"needs PyYAML.*pip install pyyaml.*\.json"):
        load_board_file(p)


@pytest.mark.parametrize(("change", "message"), [
    ({"lut": None}, "missing fields \\['lut'\\]"),
    ({"luts": 5}, "unknown fields \\['luts'\\]"),
    ({"lut": -1}, "lut must be a positive integer"),
    ({"dsp": 12.5}, "dsp must be a non-negative integer"),
    ({"clock_mhz": 0}, "clock_mhz must be a positive number"),
    ({"ddr_gbps": "fast"}, "ddr_gbps must be a positive number"),
    ({"axi_bits": 48}, "axi_bits must be a power of two"),
    ({"name": ""}, "name must not be empty"),
    ({"lut": 0}, "lut must be a positive integer"),
    ({"ff": 0}, "ff must be a positive integer"),
    ({"dsp": 10**12}, "dsp must be a non-negative integer of at most"),
    # the name, part and description reach generated C++, Tcl and cfg files: data only
    ({"name": "my\nboard"}, "name must be a short identifier"),
    ({"name": "b */ std::system(\"touch x\"); /*"}, "name must be a short identifier"),
    ({"name": "b" * 33}, "name must be a short identifier"),
    ({"name": "[exec touch x]"}, "name must be a short identifier"),
    ({"part": "xczu9eg}; exec touch x; #"}, "part must be a Xilinx part name"),
    ({"part": "xczu9eg-ffvb1156-2-e\ntb.file=/etc/passwd"}, "part must be a Xilinx part name"),
    ({"part": "zcu102"}, "part must be a Xilinx part name"),
    ({"description": "two\nlines"}, "description must be plain text"),
    ({"description": "bidi \u202e override"}, "description must be plain text"),
    ({"description": "ansi \x1b[31m red"}, "description must be plain text"),
    ({"description": "x" * 201}, "description must be plain text"),
])
def test_bad_board_files_are_rejected_with_the_field(tmp_path: Path, change: dict, message: str) -> None:
    data = {k: v for k, v in {**USER, **change}.items() if v is not None}
    p = tmp_path / "bad.json"
    p.write_text(json.dumps(data))
    with pytest.raises(VaqfError, match=message):
        get_board(str(p))


@pytest.mark.parametrize("field", ["clock_mhz", "ddr_gbps"])
@pytest.mark.parametrize("value", [float("inf"), float("nan"), -float("inf"), 1e300])
def test_board_numbers_are_finite_and_bounded(tmp_path: Path, field: str, value: float) -> None:
    p = tmp_path / "bad.json"
    p.write_text(json.dumps({**USER, field: value}))  # json writes Infinity/NaN and reads them back
    with pytest.raises(VaqfError, match=f"{field} must be a positive number of at most"):
        get_board(str(p))


@pytest.mark.parametrize("part", ["xczu9eg-ffvb1156-2-e", "xc7z020clg400-1", "xck26-sfvc784-2LV-c",
                                  "xcvc1902-vsva2197-2MP-e-S", "xcu280-fsvh2892-2L-e", "xa7a35t-cpg236-2I",
                                  "xqzu5ev-ffrb900-1-i"])
def test_real_part_names_are_accepted(part: str) -> None:
    assert board_from_dict({**USER, "part": part}).part == part


def test_builtin_boards_pass_the_board_file_checks() -> None:
    for b in BOARDS.values():
        assert board_from_dict(b.to_json()) == b


def test_a_board_built_in_python_is_checked_when_registered() -> None:
    bad = Board(**{**USER, "clock_mhz": 150.0, "name": "evil\n#include <x>"})
    with pytest.raises(VaqfError, match="name must be a short identifier"):
        register_board(bad)


def test_unreadable_board_files(tmp_path: Path) -> None:
    with pytest.raises(VaqfError, match="does not exist"):
        get_board(str(tmp_path / "none.json"))
    p = tmp_path / "broken.json"
    p.write_text("{not json")
    with pytest.raises(VaqfError, match="not valid JSON"):
        get_board(str(p))
    p.write_text("[1, 2]")
    with pytest.raises(VaqfError, match="mapping of board fields"):
        get_board(str(p))
    with pytest.raises(VaqfError, match="mapping"):
        board_from_dict("zcu102")


def test_malformed_yaml(tmp_path: Path) -> None:
    pytest.importorskip("yaml")
    y = tmp_path / "broken.yaml"
    y.write_text("name: [unclosed\n")
    with pytest.raises(VaqfError, match="not valid YAML"):
        get_board(str(y))


def test_a_board_read_from_a_file_is_known_by_name(tmp_path: Path) -> None:
    """A design names its board; once read, a user board resolves by that name (the emitter needs it)."""
    p = tmp_path / "b.json"
    p.write_text(json.dumps({**USER, "name": "registered_board"}))
    b = get_board(str(p))
    assert get_board("registered_board") is b
    assert register_board(BOARDS["zcu104"]) is BOARDS["zcu104"]
    p.write_text(json.dumps({**USER, "name": "zcu102"}))  # a different board under a built-in name
    with pytest.raises(VaqfError, match="differs from the built-in board"):
        get_board(str(p))


def test_compile_for_a_board_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = tmp_path / "carrier.json"
    p.write_text(json.dumps({**USER, "name": "carrier"}))
    out = tmp_path / "proj"
    assert main(["compile", "--example", "mlp", "-o", str(out), "--board", str(p), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["design"]["board"]["name"] == "carrier" and result["design"]["clock_mhz"] == 150.0
    assert "xczu5ev-sfvc784-1-e" in (out / "scripts" / "build_vitis_hls.tcl").read_text()


def test_cli_boards_lists_and_shows(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["boards", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [b["name"] for b in out["boards"]] == list(BOARDS)
    assert out["boards"][0]["clock_mhz"] == BOARDS["zcu102"].clock_mhz
    assert main(["boards"]) == 0
    text = capsys.readouterr().out
    assert all(name in text for name in BOARDS) and "MHz" in text and "DDR GB/s" in text
    p = tmp_path / "myboard.json"
    p.write_text(json.dumps(USER))
    assert main(["boards", str(p), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["boards"] == [{**USER, "clock_mhz": 150.0}]
    p.write_text(json.dumps({**USER, "lut": -5}))
    assert main(["boards", str(p)]) == 2
    assert "lut must be a positive integer" in capsys.readouterr().err
