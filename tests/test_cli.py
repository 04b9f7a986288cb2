"""The `vaqf` command: in process through vaqf.cli.main and as the installed console script."""

from __future__ import annotations

import contextlib
import io
import json
import logging
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


def test_simulate_refuses_nan_inputs_unless_asked_to_saturate(example_project: tuple[Path, dict], tmp_path: Path,
                                                             capsys: pytest.CaptureFixture,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    project, _ = example_project
    x = tmp_path / "x.npy"
    a = np.full((2, EXAMPLE_IN), 1.0, np.float32)
    a[0, 0], a[1, 1] = np.nan, np.inf
    np.save(x, a)
    y = tmp_path / "y.npy"
    rc, _, err = run_main(capsys, "simulate", str(project), "--input", str(x), "--output", str(y))
    assert rc == 2 and "1 NaN and 1 infinite" in err and "--saturate" in err and not y.exists()
    with caplog.at_level(logging.WARNING):
        rc, _, _ = run_main(capsys, "simulate", str(project), "--input", str(x), "--output", str(y), "--saturate")
    assert rc == 0 and "1 NaN values set to 0 and 1 infinite values saturated" in caplog.text
    clean = a.copy()
    clean[0, 0], clean[1, 1] = 0.0, 1e6  # what saturation means: NaN is 0, +inf the top of the range
    x_clean, y_clean = tmp_path / "x_clean.npy", tmp_path / "y_clean.npy"
    np.save(x_clean, clean)
    rc, _, _ = run_main(capsys, "simulate", str(project), "--input", str(x_clean), "--output", str(y_clean))
    assert rc == 0
    np.testing.assert_array_equal(np.load(y), np.load(y_clean))


def test_csim_saturate_needs_float_inputs(example_project: tuple[Path, dict], capsys: pytest.CaptureFixture) -> None:
    project, _ = example_project
    rc, _, err = run_main(capsys, "csim", str(project), "--saturate")
    assert rc == 2 and "--input" in err


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
    assert err.strip().splitlines()[-1].startswith("vaqf: error: ")  # after the stage lines of what ran
    for w in words:
        assert w in err
    assert "Traceback" not in err + out


@pytest.mark.parametrize("case", ["missing_file", "bad_board", "unsupported_op"])
def test_user_errors_exit_2_from_console_script(case: str, tmp_path: Path, unsupported_model: Path) -> None:
    args, words = _user_error_cases(tmp_path, unsupported_model)[case]
    proc = run_script(*args)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert proc.stderr.strip().splitlines()[-1].startswith("vaqf: error: ")
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
    # --force replaces a folder vaqf did not make
    rc, _, _ = run_main(capsys, "compile", "--example", "mlp", "-o", str(out), "--force")
    assert rc == 0
    assert not (out / "precious.txt").exists() and not (out / "sub").exists()
    assert (out / MARKER).is_file()
    # a folder vaqf made is re-compiled without --force: vaqf's files replaced, anything else carried over
    (out / "vaqf_prj").mkdir()
    (out / "vaqf_prj" / "vivado_hls.log").write_text("a vendor tool's run")
    rc, _, _ = run_main(capsys, "compile", "--example", "mlp", "-o", str(out), "--board", "zcu104")
    assert rc == 0
    assert (out / "vaqf_prj" / "vivado_hls.log").read_text() == "a vendor tool's run"
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


# ---- issue 16: what a new user trips over ----------------------------------------------------------


def test_reused_design_that_does_not_fit_is_an_error(example_project: tuple[Path, dict], tmp_path: Path,
                                                      capsys: pytest.CaptureFixture) -> None:
    """The ZCU102 design of the example needs several times a PYNQ-Z2's DSPs: exit 2 naming what is over, not a
    summary with 600% in it; --refit searches for a design that fits instead."""
    project, _ = example_project
    rc, out, err = run_main(capsys, "compile", "--example", "mlp", "-o", str(tmp_path / "p"), "--board", "pynq-z2",
                            "--design", str(project / "design.json"))
    last = err.strip().splitlines()[-1]
    assert rc == 2 and last.startswith("vaqf: error: ") and "does not fit pynqz2" in last
    assert "DSP" in last and "%" in last and "--refit" in last
    assert not (tmp_path / "p").exists() and "project" not in out
    rc, out, err = run_main(capsys, "compile", "--example", "mlp", "-o", str(tmp_path / "p"), "--board", "pynq-z2",
                            "--design", str(project / "design.json"), "--refit", "--json")
    assert rc == 0, err
    util = json.loads(out)["estimate"]["utilization"]
    assert max(util.values()) <= 0.8 + 1e-9


def test_design_of_another_model_is_refused(example_project: tuple[Path, dict], tmp_path: Path,
                                            capsys: pytest.CaptureFixture) -> None:
    project, _ = example_project
    other = tmp_path / "other.onnx"
    np.save(tmp_path / "c.npy", np.random.default_rng(0).standard_normal((8, 64)).astype(np.float32))
    from tests.helpers import float_mlp_model

    onnx.save(float_mlp_model(np.random.default_rng(0), (64, 32, 10)), other)
    rc, _, err = run_main(capsys, "compile", str(other), "-o", str(tmp_path / "p"), "--calib", str(tmp_path / "c.npy"),
                          "--design", str(project / "design.json"))
    last = err.strip().splitlines()[-1]
    assert rc == 2 and "was made for another model" in last and "are not in" in last


def test_refit_without_design_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    rc, _, err = run_main(capsys, "compile", "--example", "mlp", "-o", str(tmp_path / "p"), "--refit")
    assert rc == 2 and "--refit" in err and not (tmp_path / "p").exists()


def test_compile_summary_shows_the_output_error_and_warns(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """With calibration data the summary gives the outputs' error against the float model; binarizing a float
    model that cannot take it warns, naming quantization-aware training and more bits."""
    from tests.helpers import float_mlp_model

    model = tmp_path / "f.onnx"
    onnx.save(float_mlp_model(np.random.default_rng(1), (16, 64, 64, 10)), model)
    calib = tmp_path / "calib.npy"
    np.save(calib, np.random.default_rng(0).standard_normal((32, 16)).astype(np.float32))
    rc, out, err = run_main(capsys, "compile", str(model), "-o", str(tmp_path / "k"), "--act-bits", "8",
                            "--calib", str(calib))
    assert rc == 0, err
    (line,) = [x for x in out.splitlines() if x.startswith("accuracy")]
    assert "relative L2 from the float model on 16 calibration inputs" in line and "warning" not in line
    assert float(line.split("outputs ")[1].split()[0]) < 0.05
    assert "differ from the float model" not in err
    rc, out, err = run_main(capsys, "compile", str(model), "-o", str(tmp_path / "b"), "--weights", "binary",
                            "--act-bits", "8", "--calib", str(calib), "--json")
    assert rc == 0, err
    data = json.loads(out)
    assert data["output_error"]["rel_l2"] > 0.25 and data["output_error"]["inputs"] == 16
    (warning,) = data["warnings"]
    assert "quantization-aware training" in warning and "vaqf export --qonnx" in warning
    assert "--weights int8" in warning and "--act-bits" not in warning  # 8-bit activations already


def test_startup_does_not_import_the_compiler() -> None:
    """--help, `vaqf boards` and argument errors load neither onnx, numba nor PyTorch (seconds of start-up)."""
    code = """
import contextlib, io, sys
from vaqf.cli import main
with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
    for argv in (["--help"], ["compile", "--help"], ["compile"], ["explore", "--fps", "x"]):
        try:
            main(argv)
        except SystemExit:
            pass
    assert main(["boards"]) == 0 and main(["boards", "--json"]) == 0
import vaqf
assert vaqf.__version__ and "Board" in dir(vaqf)
print(" ".join(m for m in ("onnx", "onnxruntime", "numba", "torch", "jinja2", "networkx") if m in sys.modules))
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "", f"imported at start-up: {proc.stdout.strip()}"


def test_broken_pipe_exits_quietly() -> None:
    """`vaqf boards --json | head -c 10`: the reader is gone before vaqf writes; no 'internal error'."""
    import os

    read, write = os.pipe()
    os.close(read)  # the reader went away: every write now fails with EPIPE
    try:
        proc = subprocess.run(_console_script() + ["boards", "--json"], stdout=write, stderr=subprocess.PIPE,
                              text=True, timeout=120)
    finally:
        os.close(write)
    assert proc.returncode == 141
    assert proc.stderr == "", proc.stderr


def test_help_states_defaults_and_points_at_shipped_docs(capsys: pytest.CaptureFixture) -> None:
    from vaqf.cli import _doc

    for cmd in ("compile", "explore"):
        with pytest.raises(SystemExit):
            main([cmd, "--help"])
        assert "(default zcu102)" in " ".join(capsys.readouterr().out.split())
    for name in ("frontend.md", "pruning.md", "design-space.md"):
        assert Path(_doc(name)).is_file(), name
    assert main(["boards"]) == 0
    assert _doc("design-space.md") in capsys.readouterr().out


def test_setup_cfg_keeps_dev_tools_out_of_the_users_extras() -> None:
    import configparser

    cfg = configparser.ConfigParser()
    cfg.read(Path(__file__).resolve().parents[1] / "setup.cfg")
    extras = {k: {r.split(">")[0].split("=")[0].strip() for r in v.split("\n") if r.strip()}
              for k, v in cfg["options.extras_require"].items()}
    dev_tools = {"pytest", "pytest-xdist", "hypothesis", "ruff", "build"}
    assert dev_tools <= extras["dev"]
    for name, reqs in extras.items():
        if name != "dev":
            assert not reqs & dev_tools, name
    assert "vaqf.docs = docs" in cfg["options"]["package_dir"]  # the pages --help points at ship in a wheel
    assert cfg["options.package_data"]["vaqf.docs"].strip() == "*.md"
    setup = (Path(__file__).resolve().parents[1] / "scripts" / "setup.sh").read_text()
    assert '".[all,dev]"' in setup


def test_stage_lines_when_piped(tmp_path: Path) -> None:
    """Progress stage lines go to stderr when it is not a terminal too: a start and an end line per step."""
    proc = run_script("compile", "--example", "mlp", "-o", str(tmp_path / "p"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.splitlines()
    assert any(x.startswith("vaqf: searching the design space") and x.endswith("...") for x in lines)
    assert any(x.startswith("vaqf: writing the project") and "done in" in x for x in lines)
    quiet = run_script("compile", "--example", "mlp", "-o", str(tmp_path / "q"), "-q", cwd=tmp_path)
    assert quiet.returncode == 0 and quiet.stderr == ""
