"""The generated Vivado block-design and HLS scripts, the Makefile chain, for every built-in board.

Each Tcl script runs under a real tclsh against stand-ins for the Vivado / HLS commands
(tests/backend/vivado_standins.tcl) that record every call; the tests check the calls and their arguments:
part, board preset, PL clock, HP ports per m_axi bundle, control port, address assignment, synthesis to
write_bitstream, and the files copied to deploy/.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import vaqf
from vaqf.backend.bd import BUNDLES, block_design_values
from vaqf.backend.emit import _env
from vaqf.errors import VaqfError
from vaqf.examples import example_model
from vaqf.hw.board import BOARDS, SHELLS

STANDINS = Path(__file__).with_name("vivado_standins.tcl")
ZYNQ_BOARDS = sorted(SHELLS)
#: what a Vivado installation with every board's files answers to get_board_parts
BOARD_PARTS = ("xilinx.com:zcu102:part0:3.2 xilinx.com:zcu102:part0:3.4 xilinx.com:zcu104:part0:1.1 "
               "avnet.com:ultra96v2:part0:1.2 xilinx.com:kv260_som:part0:1.3 tul.com.tw:pynq-z2:part0:1.0")
NEWEST_PART = {"zcu102": "xilinx.com:zcu102:part0:3.4", "zcu104": "xilinx.com:zcu104:part0:1.1",
               "ultra96v2": "avnet.com:ultra96v2:part0:1.2", "kv260": "xilinx.com:kv260_som:part0:1.3",
               "pynqz2": "tul.com.tw:pynq-z2:part0:1.0"}
#: Vivado and HLS commands (UG835, UG1399); a stand-in call outside this set is a typo in a script
KNOWN = {"create_project", "get_board_parts", "set_property", "current_project", "update_ip_catalog", "get_ipdefs",
         "create_bd_design", "create_bd_cell", "apply_bd_automation", "get_bd_cells", "get_bd_pins",
         "get_bd_intf_pins", "connect_bd_net", "connect_bd_intf_net", "assign_bd_address", "get_bd_addr_spaces",
         "get_bd_addr_segs", "get_property", "validate_bd_design", "save_bd_design", "get_files", "make_wrapper",
         "current_fileset", "update_compile_order", "launch_runs", "wait_on_run", "get_runs", "open_run",
         "report_timing_summary", "report_utilization", "get_timing_paths", "exit", "open_project", "set_top",
         "add_files", "open_solution", "set_part", "create_clock", "config_interface", "csim_design",
         "csynth_design", "cosim_design", "export_design"}


def _tclsh() -> str:
    exe = shutil.which("tclsh")
    if exe is None:
        pytest.skip("tclsh is not installed (scripts/setup.sh installs Debian's tcl)")
    return exe


class _Projects:
    """The MLP example compiled per built-in board, on first use; a board the engine cannot compile the MLP
    for skips the tests that need its project (the block-design tests render the script without one)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.done: dict[str, Path | str] = {}

    def __getitem__(self, board: str) -> Path:
        if board not in self.done:
            try:
                self.done[board] = vaqf.compile_model(example_model("mlp"), self.root / board, board=board).project
            except VaqfError as e:
                self.done[board] = str(e)
        got = self.done[board]
        if isinstance(got, str):
            pytest.skip(f"the MLP does not compile for {board}: {got}")
        return got


@pytest.fixture(scope="module")
def projects(tmp_path_factory) -> _Projects:
    return _Projects(tmp_path_factory.mktemp("boards"))


def render_bd(board: str, clock_mhz: float) -> str:
    """scripts/build_bd.tcl as render_sources writes it for ``board`` at ``clock_mhz``."""
    b = BOARDS[board]
    return _env().get_template("project/build_bd.tcl.j2").render(
        version=vaqf.__version__, board=b.name, part=b.part, top="vaqf_top", bd=block_design_values(b, clock_mhz))


def bd_project(board: str, tmp_path: Path, with_ip: bool = True) -> Path:
    """A folder holding only what scripts/build_bd.tcl reads: itself and the exported IP."""
    work = tmp_path / board
    (work / "scripts").mkdir(parents=True)
    (work / "scripts" / "build_bd.tcl").write_text(render_bd(board, BOARDS[board].clock_mhz))
    if with_ip:
        ip = work / "vaqf_prj" / "solution1" / "impl" / "ip"
        ip.mkdir(parents=True)
        (ip / "component.xml").write_text("<fake/>")
    return work


@pytest.mark.parametrize("board", sorted(BOARDS))
def test_the_project_carries_the_block_design_script(projects, board):
    p = projects[board]
    assert (p / "scripts" / "build_bd.tcl").read_text() == render_bd(board, vaqf.load(p).design.clock_mhz)


def _copy(project: Path, tmp_path: Path, with_ip: bool = True) -> Path:
    work = tmp_path / project.name
    shutil.copytree(project, work)
    if with_ip:  # what `make ip` leaves behind
        ip = work / "vaqf_prj" / "solution1" / "impl" / "ip"
        ip.mkdir(parents=True)
        (ip / "component.xml").write_text("<fake/>")
    return work


def run_tcl(work: Path, script: str, tmp_path: Path, **env: str) -> tuple[int, list[list[str]], str]:
    """Run ``scripts/<script>`` in ``work`` under the stand-ins: exit status, calls, stdout + stderr."""
    log = tmp_path / f"{script}.log"
    full = dict(os.environ, VAQF_TCL_LOG=str(log), VAQF_FAKE_BOARD_PARTS=BOARD_PARTS)
    for k in ("VAQF_STEPS", "VAQF_IP_REPO", "VAQF_JOBS", "VAQF_FAKE_PL_HZ", "VAQF_FAKE_SLACK", "VAQF_FAKE_COSIM"):
        full.pop(k, None)
    full.update(env)
    proc = subprocess.run([_tclsh(), str(STANDINS), f"scripts/{script}"], cwd=work, env=full, capture_output=True,
                          text=True)
    calls = [line.split("\t") for line in log.read_text().splitlines()] if log.exists() else []
    unknown = {c[0] for c in calls} - KNOWN
    assert not unknown, f"calls to commands Vivado does not have: {unknown}"
    return proc.returncode, calls, proc.stdout + proc.stderr


def _index(calls: list[list[str]], name: str, *args: str) -> int:
    for i, c in enumerate(calls):
        if c[0] == name and all(a in c[1:] for a in args):
            return i
    raise AssertionError(f"no call {name} {args}")


def _ps_config(calls: list[list[str]]) -> dict[str, str]:
    """The PS properties set with set_property -dict [list k v ...] ps."""
    for c in calls:
        if c[:2] == ["set_property", "-dict"] and c[-1] == "ps":
            words = c[2].split()
            return {k: v.strip("{}") for k, v in zip(words[::2], words[1::2], strict=True)}
    raise AssertionError("the PS is never configured")


def _nets(calls: list[list[str]], kind: str) -> list[tuple[str, ...]]:
    return [tuple(c[1:]) for c in calls if c[0] == kind]


@pytest.mark.parametrize("board", ZYNQ_BOARDS)
def test_block_design_for_every_zynq_board(tmp_path, board):
    work = bd_project(board, tmp_path)
    rc, calls, out = run_tcl(work, "build_bd.tcl", tmp_path)
    assert rc == 0, out
    shell, b = SHELLS[board], BOARDS[board]
    clock = b.clock_mhz
    names = [c[0] for c in calls]

    # project on the board's part, the newest installed board files, the exported IP
    assert calls[_index(calls, "create_project")][-2:] == ["-part", b.part]
    assert ["set_property", "board_part", NEWEST_PART[board], "vaqf_bd"] in calls
    assert ["set_property", "ip_repo_paths", str((work / "vaqf_prj/solution1/impl/ip").resolve()), "vaqf_bd"] in calls
    assert names.index("set_property") < names.index("update_ip_catalog") < names.index("create_bd_design")

    # the PS (newest version in the catalog), its board preset, then the design's ports and clock
    ps_vlnv = {"zynqmp": "xilinx.com:ip:zynq_ultra_ps_e:3.5", "zynq7": "xilinx.com:ip:processing_system7:5.5"}
    i_ps = _index(calls, "create_bd_cell", ps_vlnv[shell.family], "ps")
    i_preset = _index(calls, "apply_bd_automation", "-rule", shell.ps_rule)
    assert calls[i_preset][3] == "-config" and 'apply_board_preset "1"' in calls[i_preset][4]
    if shell.family == "zynq7":
        assert 'make_external "FIXED_IO, DDR"' in calls[i_preset][4]
    cfg = _ps_config(calls)
    i_cfg = next(i for i, c in enumerate(calls) if c[:2] == ["set_property", "-dict"] and c[-1] == "ps")
    assert i_ps < i_preset < i_cfg  # the preset first: applied later it would reset the clock to 100 MHz
    assert float(cfg[shell.pl_clock_property]) == clock
    assert cfg[shell.pl_clock_enable] == "1" and cfg[shell.control_enable] == "1"
    for port, enable, _ in shell.hp_ports[: len(BUNDLES)]:
        assert cfg[enable] == "1", port
    assert [v for k, v in cfg.items() if "DATA_WIDTH" in k] == [str(b.axi_bits)] * len(BUNDLES)
    for prop in shell.disable:
        assert cfg[prop] == "0"

    # one HP port per m_axi bundle, each through its own SmartConnect; the control port on HPM/GP
    intf = set(_nets(calls, "connect_bd_intf_net"))
    used_hp = []
    for i, bundle in enumerate(BUNDLES):
        hp = shell.hp_ports[i][0]
        assert (f"vaqf_top_0/m_axi_{bundle}", f"sc_{bundle}/S00_AXI") in intf
        assert (f"sc_{bundle}/M00_AXI", f"ps/{hp}") in intf
        used_hp.append(hp)
    assert len(set(used_hp)) == len(BUNDLES)
    assert (f"ps/{shell.control_port}", "sc_control/S00_AXI") in intf
    assert ("sc_control/M00_AXI", "vaqf_top_0/s_axi_control") in intf
    assert len(intf) == 2 * (len(BUNDLES) + 1)
    for sc in ["sc_control"] + [f"sc_{b_}" for b_ in BUNDLES]:
        assert ["create_bd_cell", "-type", "ip", "-vlnv", "xilinx.com:ip:smartconnect:1.0", sc] in calls
    assert ["create_bd_cell", "-type", "ip", "-vlnv", "xilinx.com:hls:vaqf_top:1.0", "vaqf_top_0"] in calls

    # every clock pin on the PL clock, resets from the reset block
    clk = f"ps/{shell.pl_clock_pin}"
    clocked = {n[1] for n in _nets(calls, "connect_bd_net") if n[0] == clk}
    want = {"vaqf_top_0/ap_clk", "rst_pl/slowest_sync_clk", f"ps/{shell.control_clock_pin}",
            "sc_control/aclk"} | {f"ps/{c}" for _, _, c in shell.hp_ports[: len(BUNDLES)]} | {
            f"sc_{b_}/aclk" for b_ in BUNDLES}
    assert clocked == want
    nets = set(_nets(calls, "connect_bd_net"))
    assert (f"ps/{shell.pl_reset_pin}", "rst_pl/ext_reset_in") in nets
    assert ("rst_pl/peripheral_aresetn", "vaqf_top_0/ap_rst_n") in nets

    # addresses assigned once everything is connected, and each space checked; then validation
    i_addr = names.index("assign_bd_address")
    last_connect = max(i for i, n in enumerate(names) if n.startswith("connect_bd"))
    assert last_connect < i_addr < names.index("validate_bd_design") < names.index("save_bd_design")
    spaces = {c[-1] for c in calls[i_addr:] if c[0] == "get_bd_addr_spaces"}
    assert spaces == {"ps/Data"} | {f"vaqf_top_0/Data_m_axi_{b_}" for b_ in BUNDLES}
    assert "ps/Data: ps/Data/SEG_vaqf_top_0_Reg at 0x00A0000000, 65536 bytes" in out
    assert "WARNING" not in out

    # wrapper, synthesis, implementation to the bitstream, reports, copies to deploy/
    i_wrap = _index(calls, "make_wrapper", "-top")
    i_synth = _index(calls, "launch_runs", "synth_1")
    i_impl = _index(calls, "launch_runs", "impl_1", "write_bitstream")
    assert i_wrap < i_synth < _index(calls, "wait_on_run", "synth_1") < i_impl < _index(calls, "wait_on_run", "impl_1")
    assert _index(calls, "report_timing_summary") > i_impl
    assert (work / "deploy" / "vaqf.bit").read_text() == "fake bitstream"
    assert (work / "deploy" / "vaqf.hwh").read_text() == "<fake hwh/>"
    assert calls[-1] == ["exit", "0"]


def test_block_design_uses_the_ip_repo_and_job_count_given(tmp_path):
    work = bd_project("zcu102", tmp_path, with_ip=False)
    repo = tmp_path / "elsewhere"
    repo.mkdir()
    (repo / "component.xml").write_text("<fake/>")
    rc, calls, out = run_tcl(work, "build_bd.tcl", tmp_path, VAQF_IP_REPO=str(repo), VAQF_JOBS="12")
    assert rc == 0, out
    assert ["set_property", "ip_repo_paths", str(repo.resolve()), "vaqf_bd"] in calls
    assert calls[_index(calls, "launch_runs", "synth_1")][-2:] == ["-jobs", "12"]


@pytest.mark.parametrize(("case", "env", "message"), [
    ("no_ip", {}, "run `make ip` first"),
    ("no_board_files", {"VAQF_FAKE_BOARD_PARTS": "xilinx.com:zcu104:part0:1.1"}, "no board files for zcu102"),
])
def test_block_design_stops_with_a_clear_message(tmp_path, case, env, message):
    work = bd_project("zcu102", tmp_path, with_ip=case != "no_ip")
    rc, calls, out = run_tcl(work, "build_bd.tcl", tmp_path, **env)
    assert rc == 1 and message in out
    assert "create_bd_design" not in [c[0] for c in calls]
    assert not (work / "deploy").exists()


@pytest.mark.parametrize(("env", "warning"), [
    ({"VAQF_FAKE_PL_HZ": "187498123"}, "the PS gives the PL 187498123 Hz, not 200 MHz"),
    ({"VAQF_FAKE_SLACK": "-0.412"}, "timing is not met at 200 MHz (worst setup slack -0.412 ns)"),
])
def test_block_design_warns_about_clock_and_timing(tmp_path, env, warning):
    work = bd_project("zcu102", tmp_path)
    rc, _, out = run_tcl(work, "build_bd.tcl", tmp_path, **env)
    assert rc == 0 and f"WARNING: vaqf: {warning}" in out


def test_alveo_has_no_block_design_and_says_so(projects, tmp_path):
    work = _copy(projects["u250"], tmp_path)
    rc, calls, out = run_tcl(work, "build_bd.tcl", tmp_path)
    assert rc == 1 and "no block design for board u250" in out
    assert [c[0] for c in calls] == ["exit"]
    readme = (work / "README.md").read_text()
    assert "does **not** provide a bitstream flow" in readme and "v++ --link" in readme


# --- HLS scripts -----------------------------------------------------------------------------------------

FAKE_COSIM = """
import os
import sys
from pathlib import Path
import numpy as np
from vaqf.backend.emit import read_io_file, write_io_file
from vaqf.ir.serialize import load_graph
from vaqf.sim.simulator import Simulator
weights, inp, out, n = sys.argv[1:5]
assert n == "1" and Path(weights).name == "weights.bin", sys.argv
graph = load_graph(Path.cwd())
ins = read_io_file(Path(inp), graph.inputs, 1, np.int32)
res = Simulator(graph).run_int(ins).outputs
if os.environ.get("FAKE_COSIM_WRONG"):  # a wrong RTL result
    res = [r + 1 for r in res]
write_io_file(Path(out), res, np.int64)
"""


@pytest.mark.parametrize("board", sorted(BOARDS))
@pytest.mark.parametrize("script", ["build_vivado_hls.tcl", "build_vitis_hls.tcl"])
def test_hls_scripts_for_every_board(projects, tmp_path, board, script):
    work = _copy(projects[board], tmp_path, with_ip=False)
    fake = tmp_path / "fake_cosim.py"
    fake.write_text(FAKE_COSIM)
    rc, calls, out = run_tcl(work, script, tmp_path, VAQF_STEPS="csim csynth cosim export",
                             VAQF_FAKE_COSIM=f"{sys.executable} {fake}")
    assert rc == 0, out
    names = [c[0] for c in calls]
    assert ["set_part", BOARDS[board].part] in calls
    clock = vaqf.load(work).design.clock_mhz
    assert float(calls[_index(calls, "create_clock")][2]) == pytest.approx(1000.0 / clock, abs=1e-3)
    # 64-bit m_axi addresses pinned before synthesis, in each tool's syntax
    flag = "-m_axi_addr64" if "vivado" in script else "-m_axi_addr64=true"
    assert names.index("open_solution") < _index(calls, "config_interface", flag) < names.index("csynth_design")
    cflags = [c[-1] for c in calls if c[0] == "add_files" and "-cflags" in c]
    assert len(cflags) == 2 and all("-Isrc" in f for f in cflags)
    if "vivado" in script:  # vivado_hls's front end takes c++0x, not c++14
        assert all("c++14" not in f and "-std=c++0x" in f for f in cflags)
    assert [n for n in names if n.endswith("_design")] == ["csim_design", "csynth_design", "cosim_design",
                                                          "export_design"]
    assert calls[_index(calls, "export_design")][1:3] == ["-format", "ip_catalog"]
    # cosim: one vector, through the testbench's W IN OUT N arguments, its outputs compared
    argv = calls[_index(calls, "cosim_design")][2].split()
    assert argv[0] == str((work / "data" / "weights.bin").resolve()) and argv[3] == "1"
    in_bytes = 4 * sum(v.info.size for v in vaqf.load(work).graph.inputs)
    assert Path(argv[1]).read_bytes() == (work / "data" / "tb_inputs.bin").read_bytes()[:in_bytes]
    assert "co-simulation of one vector matches" in out


def test_cosim_reports_a_mismatch(projects, tmp_path):
    work = _copy(projects["zcu102"], tmp_path, with_ip=False)
    fake = tmp_path / "fake_cosim.py"
    fake.write_text(FAKE_COSIM)
    rc, _, out = run_tcl(work, "build_vitis_hls.tcl", tmp_path, VAQF_STEPS="cosim",
                         VAQF_FAKE_COSIM=f"{sys.executable} {fake}", FAKE_COSIM_WRONG="1")
    assert rc != 0 and "co-simulation outputs differ" in out


def test_version_statements_and_cfg(projects):
    p = projects["zcu102"]
    vivado = (p / "scripts" / "build_vivado_hls.tcl").read_text()
    assert "2018.3 - 2020.1" in vivado and "2020.2" not in vivado.split("last shipped")[0]
    assert "c++14" not in vivado
    vitis = (p / "scripts" / "build_vitis_hls.tcl").read_text()
    assert "vitis-run --mode hls --tcl scripts/build_vitis_hls.tcl" in vitis and "drop" not in vitis
    cfg = (p / "scripts" / "hls_config.cfg").read_text()
    assert "syn.interface.m_axi_addr64=1" in cfg.splitlines()
    readme = (p / "README.md").read_text()
    assert "2020.2" not in next(line for line in readme.splitlines() if "vivado_hls -f" in line)


# --- Makefile ----------------------------------------------------------------------------------------------

def _make(work: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    full = {k: v for k, v in os.environ.items() if k not in ("XILINX_HLS", "HLS", "AP_INCLUDE", "MAKEFLAGS")}
    full.update(env)
    return subprocess.run(["make", *args], cwd=work, env=full, capture_output=True, text=True)


@pytest.mark.parametrize(("hls", "command"), [
    (None, "vitis_hls -f scripts/build_vitis_hls.tcl"),
    ("vivado_hls", "vivado_hls -f scripts/build_vivado_hls.tcl"),
    ("vitis-run", "vitis-run --mode hls --tcl scripts/build_vitis_hls.tcl"),
])
def test_make_bitstream_runs_hls_export_then_vivado(projects, tmp_path, hls, command):
    work = _copy(projects["kv260"], tmp_path, with_ip=False)
    proc = _make(work, "-n", "bitstream", *([f"HLS={hls}"] if hls else []))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    i_hls = next(i for i, s in enumerate(lines) if command in s)
    assert 'VAQF_STEPS="csynth export"' in lines[i_hls]
    assert any("xvaqf_top_hw.h" in s and "driver/" in s for s in lines[i_hls:])
    i_viv = next(i for i, s in enumerate(lines) if "vivado -mode batch" in s)
    assert i_hls < i_viv and "-source scripts/build_bd.tcl" in lines[i_viv]
    assert "VAQF_IP_REPO=vaqf_prj/solution1/impl/ip" in lines[i_viv]


def test_make_bitstream_on_alveo_says_it_is_not_provided(projects, tmp_path):
    proc = _make(_copy(projects["u250"], tmp_path, with_ip=False), "bitstream")
    assert proc.returncode != 0 and "no block design for u250" in proc.stderr


def test_make_finds_ap_types_like_vaqf_csim(projects, tmp_path, monkeypatch):
    from vaqf.backend.csim import ap_include_dir
    from vaqf.errors import ToolchainError

    work = projects["zcu102"]
    monkeypatch.delenv("XILINX_HLS", raising=False)  # as _make runs it: hls4ml's headers, or none
    try:
        expected = str(ap_include_dir())
    except ToolchainError:
        expected = ""
    assert _make(work, "-s", "ap-include", f"PYTHON={sys.executable}").stdout.strip() == expected
    xil = tmp_path / "xil"
    (xil / "include").mkdir(parents=True)
    (xil / "include" / "ap_int.h").write_text("")
    monkeypatch.setenv("XILINX_HLS", str(xil))
    assert str(ap_include_dir()) == str(xil / "include")
    assert _make(work, "-s", "ap-include", XILINX_HLS=str(xil)).stdout.strip() == str(xil / "include")


@pytest.mark.cxx
def test_make_csim_builds_and_self_checks(projects, tmp_path):
    work = _copy(projects["zcu102"], tmp_path, with_ip=False)
    proc = _make(work, "csim", f"PYTHON={sys.executable}")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 mismatching values" in proc.stdout


@pytest.mark.parametrize("board", sorted(BOARDS))
def test_every_project_folder_is_in_the_readme(projects, board):
    p = projects[board]
    readme = (p / "README.md").read_text()
    for folder in ("src/", "tb/", "data/", "scripts/", "driver/", "report/", "deploy/", "build/", "vaqf_prj/"):
        assert f"`{folder}" in readme, (board, folder)
    for f in ("Makefile", "design.json", "graph.json", "report.md", "data/io.json", "scripts/build_bd.tcl"):
        assert f"`{f}`" in readme or f"`{f}" in readme, (board, f)
    if board in SHELLS:
        assert "make bitstream" in readme and "Accelerator()" in readme and "acc.run(x)" in readme
    assert all((p / f).is_file() for f in ("Makefile", "scripts/build_bd.tcl", "driver/vaqf_driver.py"))
