"""The generated build scripts and host driver, checked without vendor tools.

The Tcl scripts run under a real tclsh against stand-ins for the Vivado/Vitis HLS commands that record
each call; the driver's quantization is compared with the simulator's.
"""

from __future__ import annotations

import configparser
import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import vaqf
from vaqf.examples import example_inputs, example_model
from vaqf.sim.simulator import Simulator

STANDINS = """
set ::log [open $::env(VAQF_TCL_LOG) w]
foreach cmd {open_project set_top add_files open_solution set_part create_clock config_interface csim_design
             csynth_design export_design} {
    proc $cmd {args} "puts \\$::log \\"$cmd \\$args\\"; flush \\$::log"
}
# one-vector cosim: the RTL's outputs are the expected ones (OUT is the third -argv word)
proc cosim_design {args} {
    puts $::log "cosim_design"; flush $::log
    set out [lindex [lindex $args 1] 2]
    set f [open data/tb_expected.bin rb]; set all [read $f]; close $f
    set f [open $out wb]; puts -nonewline $f [string range $all 0 [expr {8 * $::env(VAQF_OUT_VALUES) - 1}]]; close $f
}
proc exit {args} { close $::log }
source [lindex $argv 0]
"""


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("proj") / "mlp"
    vaqf.compile_model(example_model("mlp"), out)
    return out


def _run_tcl(project: Path, script: str, tmp_path: Path, steps: str | None) -> list[list[str]]:
    if shutil.which("tclsh") is None:
        pytest.skip("tclsh is not installed")
    wrapper = tmp_path / "standins.tcl"
    wrapper.write_text(STANDINS)
    log = tmp_path / "calls.log"
    outs = vaqf.load(project).graph.outputs
    env = dict(os.environ, VAQF_TCL_LOG=str(log), VAQF_OUT_VALUES=str(sum(v.info.size for v in outs)))
    env.pop("VAQF_STEPS", None)
    if steps is not None:
        env["VAQF_STEPS"] = steps
    subprocess.run(["tclsh", str(wrapper), f"scripts/{script}"], cwd=project, env=env, check=True,
                   capture_output=True, text=True)
    return [line.split() for line in log.read_text().splitlines()]


@pytest.mark.parametrize("script", ["build_vivado_hls.tcl", "build_vitis_hls.tcl"])
@pytest.mark.parametrize(("steps", "expected"), [
    (None, ["csim_design", "csynth_design"]),
    ("csim csynth cosim export", ["csim_design", "csynth_design", "cosim_design", "export_design"]),
    ("csynth", ["csynth_design"]),
])
def test_tcl_call_order_and_files(project, tmp_path, script, steps, expected):
    calls = _run_tcl(project, script, tmp_path, steps)
    names = [c[0] for c in calls]
    assert names[:2] == ["open_project", "set_top"]
    assert names.index("open_solution") < names.index("set_part") < names.index("create_clock")
    assert [n for n in names if n.endswith("_design")] == expected
    assert ["set_top", "vaqf_top"] in calls
    # every file handed to the tool exists, and the testbench gets its data files
    added = [c[2] if c[1] == "-tb" else c[1] for c in calls if c[0] == "add_files"]
    for f in added:
        assert (project / f).is_file(), f
    assert {"tb/testbench.cpp", "data/weights.bin", "data/tb_inputs.bin", "data/tb_expected.bin"} <= set(added)
    part = next(c for c in calls if c[0] == "set_part")
    assert "xczu9eg-ffvb1156-2-e" in " ".join(part)
    if "vitis" in script:
        assert "-flow_target" in next(c for c in calls if c[0] == "open_solution")


def test_unified_flow_config_points_at_real_files(project):
    text = (project / "scripts" / "hls_config.cfg").read_text()
    cfg = configparser.ConfigParser(strict=False, allow_no_value=True)
    cfg.read_string("[general]\n" + text)
    assert cfg["general"]["part"] == "xczu9eg-ffvb1156-2-e"
    assert cfg["hls"]["syn.top"] == "vaqf_top"
    base = project / "scripts"  # v++ resolves config paths against the config file's folder
    files = [line.split("=", 1)[1].strip() for line in text.splitlines()
             if line.startswith(("syn.file=", "tb.file="))]
    assert files and all((base / f).resolve().is_file() for f in files)


def test_driver_quantizes_like_the_simulator(project):
    spec = importlib.util.spec_from_file_location("vaqf_driver", project / "driver" / "vaqf_driver.py")
    driver = importlib.util.module_from_spec(spec)
    sys.modules["vaqf_driver_test"] = driver
    spec.loader.exec_module(driver)
    x, _ = example_inputs("mlp")
    x = np.concatenate([x, x * 1.7 - 0.3])  # values outside the range and on rounding ties too
    sim = Simulator(vaqf.load(project).graph)
    np.testing.assert_array_equal(driver.quantize(x), sim.quantize_inputs([x])[0])
    q = sim.quantize_inputs([x])[0]
    res = sim.run_int([q])
    np.testing.assert_allclose(driver.dequantize(res.outputs[0]), res.dequantized[0], rtol=0, atol=1e-12)
    weights = (project / "data" / "weights.bin").stat().st_size
    assert weights == driver.IO["ddr_words"] * driver.IO["word_bits"] // 8
