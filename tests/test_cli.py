"""The `vaqf` command: in process through vaqf.cli.main and as the installed console script."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from tests.helpers import qonnx_model, with_node_after_first_layer
from vaqf.backend.emit import MARKER
from vaqf.cli import main
from vaqf.examples import example_model

EXAMPLE_IN, EXAMPLE_OUT = 64, 10  # the built-in digits MLP


def _console_script() -> list[str]:
    exe = shutil.which("vaqf", path=str(Path(sys.executable).parent))
    assert exe is not None, "the vaqf console script is not installed next to this interpreter"
    return [exe]


def run_script(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(_console_script() + list(args), capture_output=True, text=True, cwd=cwd, timeout=300)


def run_main(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str, str]:
    rc = main(list(args))
    out, err = capsys.readouterr()
    return rc, out, err


def _assert_compile_json(data: dict, project: Path) -> None:
    assert Path(data["project"]) == project
    assert data["design"]["act_bits"] == 8
    assert data["design"]["board"]["name"] == "zcu102"
    est = data["estimate"]
    assert est["fps"] > 0 and est["cycles"] > 0
    assert est["fps"] == pytest.approx(data["design"]["clock_mhz"] * 1e6 / est["cycles"], rel=1e-3)
    assert set(est["resources"]) >= {"lut", "ff", "dsp", "bram18"}
    assert all(isinstance(v, int) and v >= 0 for v in est["resources"].values())


@pytest.fixture(scope="module")
def example_project(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """`vaqf compile --example mlp -o DIR --json`, in process, once for the module."""
    out = tmp_path_factory.mktemp("cli") / "mlp"
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = main(["compile", "--example", "mlp", "-o", str(out), "--json"])
    assert rc == 0
    return out, json.loads(buf.getvalue())


def test_compile_json(example_project: tuple[Path, dict]) -> None:
    out, data = example_project
    _assert_compile_json(data, out)
    assert (out / MARKER).is_file() and (out / "src" / "vaqf_top.cpp").is_file()
    assert json.loads((out / "design.json").read_text())["act_bits"] == data["design"]["act_bits"]


def test_compile_human_output(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    rc, out, _ = run_main(capsys, "compile", "--example", "mlp", "-o", str(tmp_path / "p"))
    assert rc == 0
    assert "FPS" in out and f"vaqf csim {tmp_path / 'p'}" in out


@pytest.mark.cxx
def test_csim_json(example_project: tuple[Path, dict], capsys: pytest.CaptureFixture) -> None:
    out, _ = example_project
    rc, stdout, _ = run_main(capsys, "csim", str(out), "--json", "--inputs", "50")
    assert rc == 0
    data = json.loads(stdout)
    assert data["inputs"] == 50 and data["bit_exact"] == 50 and data["mismatched_values"] == 0


@pytest.mark.cxx
def test_csim_on_float_inputs(example_project: tuple[Path, dict], tmp_path: Path,
                              capsys: pytest.CaptureFixture, rng: np.random.Generator) -> None:
    out, _ = example_project
    x = tmp_path / "x.npy"
    np.save(x, rng.uniform(0, 16, size=(12, EXAMPLE_IN)).astype(np.float32))
    rc, stdout, _ = run_main(capsys, "csim", str(out), "--input", str(x))
    assert rc == 0
    assert "bit-exact: 12/12" in stdout


def test_simulate_model_and_project(example_project: tuple[Path, dict], tmp_path: Path,
                                    capsys: pytest.CaptureFixture, rng: np.random.Generator) -> None:
    project, _ = example_project
    model = tmp_path / "mlp.onnx"
    onnx.save(example_model("mlp"), str(model))
    x = tmp_path / "x.npy"
    np.save(x, rng.uniform(0, 16, size=(7, EXAMPLE_IN)).astype(np.float32))
    y_model, y_project = tmp_path / "y_model.npy", tmp_path / "y_project.npy"
    rc, _, _ = run_main(capsys, "simulate", str(model), "--input", str(x), "--output", str(y_model))
    assert rc == 0
    rc, _, _ = run_main(capsys, "simulate", str(project), "--input", str(x), "--output", str(y_project))
    assert rc == 0
    a, b = np.load(y_model), np.load(y_project)
    assert a.shape == b.shape == (7, EXAMPLE_OUT)
    assert a.dtype == np.float32
    np.testing.assert_array_equal(a, b)  # the project holds the compiled model: identical outputs


def test_simulate_rejects_a_wrong_input_shape(example_project: tuple[Path, dict], tmp_path: Path,
                                              capsys: pytest.CaptureFixture) -> None:
    project, _ = example_project
    x = tmp_path / "x.npy"
    np.save(x, np.zeros((3, EXAMPLE_IN + 1), np.float32))
    rc, _, err = run_main(capsys, "simulate", str(project), "--input", str(x), "--output", str(tmp_path / "y.npy"))
    assert rc == 2 and "must be shaped" in err and not (tmp_path / "y.npy").exists()


def test_boards_json(capsys: pytest.CaptureFixture) -> None:
    rc, out, _ = run_main(capsys, "boards", "--json")
    assert rc == 0
    boards = {b["name"]: b for b in json.loads(out)["boards"]}
    assert {"zcu102", "zcu104", "ultra96v2", "pynqz2"} <= set(boards)
    assert boards["zcu102"]["dsp"] == 2520 and boards["zcu102"]["part"].startswith("xczu9eg")
    rc, out, _ = run_main(capsys, "boards")
    assert rc == 0 and "zcu102" in out


def test_explore_json(capsys: pytest.CaptureFixture) -> None:
    rc, out, _ = run_main(capsys, "explore", "--example", "mlp", "--board", "ultra96v2", "--json")
    assert rc == 0
    data = json.loads(out)
    assert data["designs"] and data["chosen"] is not None
    fps = [d["estimate"]["fps"] for d in data["designs"]]
    assert fps == sorted(fps, reverse=True)  # fastest first
    for d in data["designs"]:
        assert max(d["estimate"]["utilization"].values()) <= 0.8 + 1e-9  # within the default cap


def test_explore_front_is_pareto_in_the_reported_figures(capsys: pytest.CaptureFixture) -> None:
    rc, out, _ = run_main(capsys, "explore", "--example", "mlp", "--board", "ultra96v2", "--json")
    assert rc == 0
    # fastest first, so each slower design must be cheaper *in the figures it reports* (the search once
    # ranked designs on LUT counts that left out the activation buffers' LUTRAM, which the estimate includes)
    luts = [d["estimate"]["resources"]["lut"] for d in json.loads(out)["designs"]]
    assert luts == sorted(luts, reverse=True)


# ---- user errors ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def unsupported_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    model = with_node_after_first_layer(qonnx_model(np.random.default_rng(3)), "Sin", "weird_sine")
    path = tmp_path_factory.mktemp("unsupported") / "sin.onnx"
    onnx.save(model, str(path))
    return path


def _user_error_cases(tmp: Path, unsupported: Path) -> dict[str, tuple[list[str], list[str]]]:
    """name -> (arguments, words the message must contain)"""
    return {
        "missing_file": (["compile", str(tmp / "nope.onnx"), "-o", str(tmp / "o1")], ["nope.onnx", "does not exist"]),
        "bad_board": (["compile", "--example", "mlp", "-o", str(tmp / "o2"), "--board", "nosuchboard"],
                      ["nosuchboard"]),
        "unsupported_op": (["compile", str(unsupported), "-o", str(tmp / "o3")], ["weird_sine", "Sin"]),
        "no_model": (["compile", "-o", str(tmp / "o4")], ["--example"]),
        "not_a_project": (["csim", str(tmp)], ["vaqf project"]),
        "missing_input": (["simulate", str(unsupported), "--input", str(tmp / "x.npy"), "--output",
                           str(tmp / "y.npy")], ["x.npy", "does not exist"]),
    }


USER_ERRORS = ["missing_file", "bad_board", "unsupported_op", "no_model", "not_a_project", "missing_input"]


@pytest.mark.parametrize("case", USER_ERRORS)
def test_user_errors_exit_2_in_process(case: str, tmp_path: Path, unsupported_model: Path,
                                       capsys: pytest.CaptureFixture) -> None:
    args, words = _user_error_cases(tmp_path, unsupported_model)[case]
    rc, out, err = run_main(capsys, *args)
    assert rc == 2
    assert err.startswith("vaqf: error: ")
    for w in words:
        assert w in err
    assert "Traceback" not in err + out


@pytest.mark.parametrize("case", ["missing_file", "bad_board", "unsupported_op"])
def test_user_errors_exit_2_from_console_script(case: str, tmp_path: Path, unsupported_model: Path) -> None:
    args, words = _user_error_cases(tmp_path, unsupported_model)[case]
    proc = run_script(*args)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert proc.stderr.startswith("vaqf: error: ")
    for w in words:
        assert w in proc.stderr
    assert not any(p.name.startswith(("o1", "o2", "o3", ".o")) for p in tmp_path.iterdir())  # nothing written


def test_argument_errors_exit_2(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as e:
        main(["compile", "--example", "mlp"])  # -o is required
    assert e.value.code == 2
    assert main([]) == 2  # no command: help, and a usage error status
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    assert "vaqf 0." in capsys.readouterr().out


# ---- the output folder ------------------------------------------------------------------------


def _leftovers(parent: Path, name: str) -> list[str]:
    return [p.name for p in parent.iterdir() if p.name.startswith(f".{name}.")]


def test_output_folder_protection(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    (out / "sub").mkdir()
    (out / "sub" / "notes.md").write_text("mine too")
    rc, _, err = run_main(capsys, "compile", "--example", "mlp", "-o", str(out))
    assert rc == 2
    assert "--force" in err and "Traceback" not in err
    assert (out / "precious.txt").read_text() == "keep me"
    assert (out / "sub" / "notes.md").read_text() == "mine too"
    assert not (out / MARKER).exists()
    assert _leftovers(tmp_path, "mine") == []
    # --force replaces it
    rc, _, _ = run_main(capsys, "compile", "--example", "mlp", "-o", str(out), "--force")
    assert rc == 0
    assert not (out / "precious.txt").exists() and not (out / "sub").exists()
    assert (out / MARKER).is_file()
    # a folder vaqf made is replaced without --force, and stale files in it go away
    (out / "stale.txt").write_text("old build output")
    rc, _, _ = run_main(capsys, "compile", "--example", "mlp", "-o", str(out), "--board", "zcu104")
    assert rc == 0
    assert not (out / "stale.txt").exists()
    assert json.loads((out / "design.json").read_text())["board"]["name"] == "zcu104"
    assert _leftovers(tmp_path, "mine") == []


def test_output_path_that_is_a_file_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    f = tmp_path / "file"
    f.write_text("x")
    rc, _, err = run_main(capsys, "compile", "--example", "mlp", "-o", str(f))
    assert rc == 2 and "not a folder" in err and f.read_text() == "x"


def test_empty_existing_folder_is_used(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "empty"
    out.mkdir()
    rc, _, _ = run_main(capsys, "compile", "--example", "mlp", "-o", str(out))
    assert rc == 0 and (out / MARKER).is_file()


# ---- the console script -------------------------------------------------------------------------


def test_console_script_compile_json(tmp_path: Path) -> None:
    out = tmp_path / "proj"
    proc = run_script("compile", "--example", "mlp", "-o", str(out), "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    _assert_compile_json(json.loads(proc.stdout), out)


@pytest.mark.cxx
def test_console_script_csim_json(example_project: tuple[Path, dict]) -> None:
    out, _ = example_project
    proc = run_script("csim", str(out), "--json", "--inputs", "50")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["inputs"] == 50 and data["bit_exact"] == 50
