"""``vaqf explore`` and the precision search through the API and the CLI; pinned designs round-trip."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import float_mlp_model
from vaqf.api import compile_model, exploration, explore, load_model
from vaqf.cli import main
from vaqf.dse.design import Design
from vaqf.dse.search import search
from vaqf.errors import InfeasibleDesign
from vaqf.examples import example_model
from vaqf.hw.board import Board, board_from_dict, get_board


@pytest.fixture
def float_model(tmp_path: Path) -> tuple[Path, Path]:
    import onnx

    rng = np.random.default_rng(11)
    model = tmp_path / "float_mlp.onnx"
    onnx.save(float_mlp_model(rng, (64, 128, 16)), str(model))
    calib = tmp_path / "calib.npy"
    np.save(calib, rng.normal(size=(64, 64)).astype(np.float32))
    return model, calib


def tight_board(lut: int) -> Board:
    return board_from_dict({"name": "tight", "part": "xc7z020clg400-1", "lut": lut, "ff": 4 * lut, "bram18": 100,
                            "dsp": 2000, "clock_mhz": 100, "ddr_gbps": 2.0, "axi_bits": 64})


def test_explore_searches_activation_bits_of_a_float_model(float_model: tuple[Path, Path]) -> None:
    model, calib = float_model
    ex = exploration(str(model), "pynqz2", fps=1.0, calib=str(calib))
    assert [c.act_bits for c in ex.candidates] == [8, 6, 4]
    assert ex.chosen is not None and ex.chosen.act_bits == 8  # every precision meets 1 FPS: the highest wins
    assert ex.infeasible is None
    assert {d.act_bits for d in ex.front} <= {8, 6, 4}
    front, chosen = explore(str(model), "pynqz2", fps=1.0, calib=str(calib))
    assert chosen.knobs == ex.chosen.knobs and len(front) == len(ex.front)


def test_a_lower_precision_wins_when_the_higher_cannot_meet_the_target(float_model: tuple[Path, Path],
                                                                      tmp_path: Path) -> None:
    model, calib = float_model
    g8, g4 = (load_model(str(model), act_bits=b, calib=str(calib)) for b in (8, 4))
    for lut in range(4_000, 40_000, 1_000):  # a board whose LUTs hold back the 8-bit design only
        board = tight_board(lut)
        try:
            best8, best4 = (search(g, board).estimate["fps"] for g in (g8, g4))
        except InfeasibleDesign:
            continue
        if best4 > best8:
            break
    else:
        pytest.fail("no board size where 4-bit activations allow a faster design than 8-bit ones")
    target = (best8 + best4) / 2
    ex = exploration(str(model), board, fps=target, calib=str(calib))
    assert ex.chosen is not None and ex.chosen.act_bits < 8 and ex.chosen.estimate["fps"] >= target
    res = compile_model(str(model), tmp_path / "proj", board, fps=target, calib=str(calib))
    assert res.design.act_bits == ex.chosen.act_bits and res.design.knobs == ex.chosen.knobs
    ex = exploration(str(model), board, fps=best4 * 10, calib=str(calib))
    assert ex.chosen is None
    assert [d["act_bits"] for d in ex.infeasible.best] == [8, 6, 4]


def test_a_model_with_its_own_quantizers_is_searched_at_its_precision() -> None:
    ex = exploration(example_model("mlp"), "zcu102")
    assert [c.act_bits for c in ex.candidates] == [8]
    assert ex.chosen.act_bits == 8


def test_cli_explore_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["explore", "--example", "mlp", "--board", "ultra96v2", "--fps", "20000", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {"designs", "chosen"}
    assert out["designs"]
    for d in out["designs"]:
        assert set(d) == {"act_bits", "knobs", "estimate"}
        assert {"fps", "cycles", "resources"} <= set(d["estimate"])
        assert set(d["estimate"]["resources"]) == {"lut", "ff", "dsp", "bram18", "uram"}
    fps = [d["estimate"]["fps"] for d in out["designs"]]
    assert fps == sorted(fps, reverse=True)
    expected = search(load_model(example_model("mlp")), get_board("ultra96v2"), 20000)
    assert out["chosen"]["knobs"] == expected.knobs
    assert out["chosen"]["estimate"]["fps"] >= 20000


def test_cli_explore_table_and_infeasible_target(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["explore", "--example", "mlp", "--board", "pynqz2"]) == 0
    text = capsys.readouterr().out
    assert "Pareto front on pynqz2" in text and "chosen: 8-bit activations" in text
    assert main(["explore", "--example", "mlp", "--board", "pynqz2", "--fps", "1e12", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["chosen"] is None
    assert out["infeasible"]["best"][0]["act_bits"] == 8
    assert "not reachable" in out["infeasible"]["error"]


def test_cli_explore_plot(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("matplotlib")
    png = tmp_path / "front.png"
    assert main(["explore", "--example", "mlp", "--fps", "20000", "--plot", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"plot: {png}" in capsys.readouterr().out
    assert main(["explore", "--example", "mlp", "--plot", str(tmp_path / "front.svg")]) == 2
    assert "PNG" in capsys.readouterr().err


def test_cli_explore_plot_without_matplotlib(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")] + ["matplotlib"]:
        monkeypatch.setitem(sys.modules, name, None)  # every import of matplotlib now fails
    assert main(["explore", "--example", "mlp", "--plot", str(tmp_path / "front.png")]) == 2
    err = capsys.readouterr().err
    assert "needs matplotlib" in err and "vaqf[plot]" in err


def test_cli_explore_rejects_bad_search_bits(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["explore", "--example", "mlp", "--search-bits", "8,x"]) == 2
    assert "--search-bits" in capsys.readouterr().err


def test_compile_design_round_trip(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    first = tmp_path / "first"
    assert main(["compile", "--example", "mlp", "-o", str(first), "--board", "kv260", "--fps", "50000",
                 "--json"]) == 0
    capsys.readouterr()
    design = Design.load(first / "design.json")
    assert design.board.name == "kv260" and design.target_fps == 50000
    second = tmp_path / "second"
    assert main(["compile", "--example", "mlp", "-o", str(second), "--board", "kv260",
                 "--design", str(first / "design.json"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    again = Design.load(second / "design.json")
    assert again.knobs == design.knobs == out["design"]["knobs"]
    assert again.act_bits == design.act_bits
    assert again.estimate["cycles"] == design.estimate["cycles"]
    assert again.objective == "pinned"


def test_pinned_design_keeps_the_activation_bits_of_a_float_model(float_model: tuple[Path, Path],
                                                                  tmp_path: Path) -> None:
    model, calib = float_model
    first = compile_model(str(model), tmp_path / "a", "zcu102", act_bits=6, calib=str(calib))
    assert first.design.act_bits == 6
    again = compile_model(str(model), tmp_path / "b", "zcu102", calib=str(calib),
                          design=tmp_path / "a" / "design.json")
    assert again.design.act_bits == 6 and again.design.knobs == first.design.knobs
    assert again.design.estimate["cycles"] == first.design.estimate["cycles"]
