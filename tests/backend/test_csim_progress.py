"""``vaqf csim`` on a big design: the input count defaults from the design's size and says so, progress shows per
input (a bar on a terminal, a line otherwise), and Ctrl-C stops the run with the results so far."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

import vaqf
from vaqf import cli, progress
from vaqf.backend import csim
from vaqf.backend.csim import CsimInterrupted, default_input_count, run_csim


@pytest.fixture
def project(compiled: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("VAQF_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(csim, "STEP_S", 0.0)  # one input per step, whatever the machine's speed
    dst = tmp_path / "mlp"
    shutil.copytree(compiled, dst)
    return dst


@pytest.fixture(autouse=True)
def progress_off():  # noqa: ANN201 - the CLI turns progress on for the process; put it back
    yield
    progress.enable(False)


def test_default_input_count_follows_the_design_size(compiled: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    graph = vaqf.load(compiled).graph
    macs = csim.graph_macs(graph)
    assert default_input_count(graph)[0] == csim.DEFAULT_INPUTS  # a small MLP: the full 200
    monkeypatch.setattr(csim, "CSIM_MACS_PER_S", macs / 200.0)  # one input takes 200 s, as DeiT-tiny's does
    n, why = default_input_count(graph)
    assert n == 1 and "1 random input," in why and "3 min 20 s an input" in why and "--inputs" in why
    monkeypatch.setattr(csim, "CSIM_MACS_PER_S", macs / 10.0)
    assert default_input_count(graph)[0] == int(csim.DEFAULT_RUN_S // 10)


@pytest.mark.cxx
def test_csim_says_what_it_chose_and_prints_a_line_per_input(project: Path, capsys: pytest.CaptureFixture,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(csim, "DEFAULT_INPUTS", 4)
    assert cli.main(["csim", str(project)]) == 0
    out, err = capsys.readouterr()
    assert "4 random inputs, chosen for the design's size" in err
    lines = [line for line in err.splitlines() if line.startswith("vaqf: C-simulation: ")]
    assert [line.split()[2] for line in lines] == ["1/4", "2/4", "3/4", "4/4"]  # piped: a line per input
    assert "left" in lines[0] and "4 bit-exact" in lines[-1]
    assert "bit-exact: 4/4" in out


@pytest.mark.cxx
def test_ctrl_c_stops_with_the_results_so_far(project: Path, capsys: pytest.CaptureFixture,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    real_step = csim._run_step
    steps: list[int] = []

    def interrupted_third(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        steps.append(1)
        if len(steps) == 3:
            raise KeyboardInterrupt  # Ctrl-C while the third input runs
        return real_step(*args, **kwargs)

    monkeypatch.setattr(csim, "_run_step", interrupted_third)
    with pytest.raises(CsimInterrupted) as info:
        run_csim(project, count=10)
    res = info.value.result
    assert (res.inputs, res.requested, res.bit_exact, res.interrupted) == (2, 10, 2, True)
    assert res.outputs[0].shape[0] == 2 and res.expected[0].shape[0] == 2

    steps.clear()
    assert cli.main(["csim", str(project), "--inputs", "10"]) == 130
    out, err = capsys.readouterr()
    assert "C-simulation interrupted after 2 of 10 inputs: 2/2 identical to the simulator" in out
    assert "vaqf: interrupted" in err and "Traceback" not in err

    steps.clear()
    assert cli.main(["csim", str(project), "--inputs", "10", "--json"]) == 130
    data = json.loads(capsys.readouterr().out)
    assert data["interrupted"] is True and data["inputs"] == 2 and data["requested"] == 10


def test_a_bar_with_an_eta_on_a_terminal(capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(progress, "_terminal", lambda: True)
    progress.enable()
    with progress.counter(3, "C-simulation", "input") as c:
        for _ in range(3):
            c.advance(1, "bit-exact")
    err = capsys.readouterr().err
    assert "3/3" in err and "input/s" in err and "<" in err  # tqdm: count, rate and the time left
    assert "vaqf: C-simulation: 3/3 inputs" not in err  # no per-line output on a terminal


def test_bad_counts_and_timeouts_are_user_errors(compiled: Path, capsys: pytest.CaptureFixture) -> None:
    assert cli.main(["csim", str(compiled), "--inputs", "0"]) == 2
    assert cli.main(["csim", str(compiled), "--timeout", "-1"]) == 2
    err = capsys.readouterr().err
    assert "--inputs must be at least 1" in err and "--timeout must be a positive" in err
