"""The generated PYNQ driver against a stand-in board (tests/backend/fake_pynq.py).

The stand-in IP takes its buffer addresses from the registers the driver wrote, at the offsets of the
register layout the hardware has (given by each test, and handed to the driver only through the .hwh
register map or the HLS-generated x<top>_hw.h), reads DDR and the inputs there, runs the compiled design
(vaqf's simulator, or the C-simulation binary) and writes the outputs. The driver's results must equal
``vaqf.simulate`` bit for bit.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

import vaqf
from tests.backend import fake_pynq
from vaqf.backend.emit import read_io_file, write_io_file
from vaqf.examples import example_inputs, example_model
from vaqf.ir.qarith import Rounding, round_real
from vaqf.sim.simulator import Simulator

#: how Vitis HLS lays out the control registers with 64-bit addresses, as the .hwh lists them for PYNQ,
#: shifted by 0x40 so that a driver with built-in offsets could not pass
HWH_REGISTERS = {
    "CTRL": {"address_offset": 0x00, "size": 32},
    "GIER": {"address_offset": 0x04, "size": 32},
    "ddr_1": {"address_offset": 0x50, "size": 32}, "ddr_2": {"address_offset": 0x54, "size": 32},
    "in0_1": {"address_offset": 0x5C, "size": 32}, "in0_2": {"address_offset": 0x60, "size": 32},
    "out0_1": {"address_offset": 0x68, "size": 32}, "out0_2": {"address_offset": 0x6C, "size": 32},
}
HWH_LAYOUT = {"ddr": [(0x50, 32), (0x54, 32)], "in0": [(0x5C, 32), (0x60, 32)], "out0": [(0x68, 32), (0x6C, 32)]}
#: an x<top>_hw.h as HLS writes it (64-bit data registers), at other offsets again
HW_HEADER = """// ==============================================================
// Vitis HLS - High-Level Synthesis from C, C++ and OpenCL
// ==============================================================
// control
// 0x00 : Control signals
#define XVAQF_TOP_CONTROL_ADDR_AP_CTRL   0x00
#define XVAQF_TOP_CONTROL_ADDR_GIE       0x04
#define XVAQF_TOP_CONTROL_ADDR_DDR_DATA  0x18
#define XVAQF_TOP_CONTROL_BITS_DDR_DATA  64
#define XVAQF_TOP_CONTROL_ADDR_IN0_DATA  0x24
#define XVAQF_TOP_CONTROL_BITS_IN0_DATA  64
#define XVAQF_TOP_CONTROL_ADDR_OUT0_DATA 0x30
#define XVAQF_TOP_CONTROL_BITS_OUT0_DATA 64
"""
HEADER_LAYOUT = {"ddr": [(0x18, 64)], "in0": [(0x24, 64)], "out0": [(0x30, 64)]}
#: 32-bit addresses, as Vivado HLS lays them out when m_axi_addr64 is not set
LAYOUT_32 = {"ddr": [(0x10, 32)], "in0": [(0x18, 32)], "out0": [(0x20, 32)]}
REGISTERS_32 = {"CTRL": {"address_offset": 0, "size": 32}, "ddr_V": {"address_offset": 0x10, "size": 32},
                "in0_V": {"address_offset": 0x18, "size": 32}, "out0_V": {"address_offset": 0x20, "size": 32}}


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("board") / "mlp"
    vaqf.compile_model(example_model("mlp"), out)
    (out / "deploy").mkdir()
    (out / "deploy" / "vaqf.bit").write_bytes(b"bit")
    (out / "deploy" / "vaqf.hwh").write_text("<hwh/>")
    return out


def _driver(project: Path, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.setitem(sys.modules, "pynq", fake_pynq)
    spec = importlib.util.spec_from_file_location(f"vaqf_driver_{id(project)}", project / "driver" / "vaqf_driver.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def simulator_design(project: Path) -> Callable:
    """The IP's computation: the simulator, after checking that DDR holds exactly data/weights.bin."""
    graph = vaqf.load(project).graph
    sim = Simulator(graph)
    weights = (project / "data" / "weights.bin").read_bytes()

    def compute(ddr: bytes, ins: list[np.ndarray]) -> list[np.ndarray]:
        assert ddr == weights, "the DDR buffer does not hold data/weights.bin"
        arrays = [a.astype(np.int64).reshape((1,) + v.info.sample_shape)
                  for a, v in zip(ins, graph.inputs, strict=True)]
        return [o.reshape(-1) for o in sim.run_int(arrays).outputs]

    return compute


def csim_design(project: Path) -> Callable:
    """The IP's computation: the C-simulation binary of the generated C++ on the DDR bytes it was given."""
    from vaqf.backend.csim import build

    exe = build(project)
    graph = vaqf.load(project).graph

    def compute(ddr: bytes, ins: list[np.ndarray]) -> list[np.ndarray]:
        with tempfile.TemporaryDirectory() as td:
            d = Path(td)
            (d / "w.bin").write_bytes(ddr)
            write_io_file(d / "in.bin", [a.reshape(1, -1) for a in ins], np.int32)
            subprocess.run([str(exe), str(d / "w.bin"), str(d / "in.bin"), str(d / "out.bin"), "1"], check=True)
            return [o.reshape(-1) for o in read_io_file(d / "out.bin", graph.outputs, 1, np.int64)]

    return compute


def _inputs() -> np.ndarray:
    x, _ = example_inputs("mlp")
    return np.concatenate([x[:6], x[:3] * 1.7 - 0.3])  # outside the input range and on rounding ties too


def _check_against_simulate(project: Path, acc: object, x: np.ndarray) -> None:
    want = vaqf.simulate(project, x)
    got = acc.run(x)
    np.testing.assert_array_equal(got, want.dequantized[0])  # bit for bit, floats included
    q = Simulator(vaqf.load(project).graph).quantize_inputs([x])[0]
    for s in range(2):
        np.testing.assert_array_equal(acc.run_int(q[s])[0], want.outputs[0][s])


@pytest.mark.parametrize("ip_key", ["vaqf_top_0", "accel/vaqf_top_0"])
def test_driver_on_the_hwh_register_map_equals_simulate(project, monkeypatch, ip_key):
    fake_pynq.HW = fake_pynq.Hardware(HWH_LAYOUT, simulator_design(project), HWH_REGISTERS, ip_key=ip_key)
    drv = _driver(project, monkeypatch)
    acc = drv.Accelerator()
    assert acc.registers == HWH_LAYOUT
    x = _inputs()
    _check_against_simulate(project, acc, x)
    assert fake_pynq.HW.started == len(x) + 2


def test_driver_on_the_hls_header_equals_simulate(project, tmp_path, monkeypatch):
    work = tmp_path / "p"
    shutil.copytree(project, work)
    (work / "driver" / "xvaqf_top_hw.h").write_text(HW_HEADER)  # what `make ip` copies
    fake_pynq.HW = fake_pynq.Hardware(HEADER_LAYOUT, simulator_design(work), None, ip_key="hier/sub/vaqf_top_1")
    acc = _driver(work, monkeypatch).Accelerator()
    assert acc.registers == HEADER_LAYOUT
    _check_against_simulate(work, acc, _inputs())


@pytest.mark.cxx
def test_driver_on_the_c_simulation_equals_simulate(project, monkeypatch):
    fake_pynq.HW = fake_pynq.Hardware(HWH_LAYOUT, csim_design(project), HWH_REGISTERS)
    acc = _driver(project, monkeypatch).Accelerator()
    _check_against_simulate(project, acc, _inputs()[:4])


def test_32_bit_addresses_work_below_4gib_and_fail_clearly_above(project, monkeypatch):
    fake_pynq.HW = fake_pynq.Hardware(LAYOUT_32, simulator_design(project), REGISTERS_32, base_address=0x3000_0000)
    drv = _driver(project, monkeypatch)
    acc = drv.Accelerator()
    assert acc.registers == LAYOUT_32
    _check_against_simulate(project, acc, _inputs()[:3])
    fake_pynq.HW = fake_pynq.Hardware(LAYOUT_32, simulator_design(project), REGISTERS_32)
    with pytest.raises(drv.AcceleratorError, match="beyond the IP's 32-bit addresses"):
        drv.Accelerator()


def test_no_register_map_is_a_clear_error(project, monkeypatch):
    fake_pynq.HW = fake_pynq.Hardware(HWH_LAYOUT, simulator_design(project), None)
    drv = _driver(project, monkeypatch)
    with pytest.raises(drv.AcceleratorError, match=r"no xvaqf_top_hw\.h.*make ip"):
        drv.Accelerator()


def test_ap_done_timeout_is_a_clear_error(project, monkeypatch):
    fake_pynq.HW = fake_pynq.Hardware(HWH_LAYOUT, simulator_design(project), HWH_REGISTERS, finishes=False)
    drv = _driver(project, monkeypatch)
    acc = drv.Accelerator(timeout_s=0.01)
    with pytest.raises(drv.AcceleratorTimeout, match="did not raise ap_done within 0.01 s"):
        acc.run(_inputs()[:1])
    assert isinstance(drv.AcceleratorTimeout("x"), TimeoutError)


def test_missing_bitstream_and_ambiguous_ip_are_clear_errors(project, tmp_path, monkeypatch):
    fake_pynq.HW = fake_pynq.Hardware(HWH_LAYOUT, simulator_design(project), HWH_REGISTERS)
    drv = _driver(project, monkeypatch)
    with pytest.raises(drv.AcceleratorError, match="make bitstream"):
        drv.Accelerator(bitfile=tmp_path / "none.bit")
    hls_ip = {"type": "xilinx.com:hls:vaqf_top:1.0"}
    two = {"a/vaqf_top_0": hls_ip, "b/vaqf_top_0": hls_ip}
    with pytest.raises(drv.AcceleratorError, match="pass ip_name"):
        drv.find_ip(two)
    assert drv.find_ip(two, "b/vaqf_top_0") == "b/vaqf_top_0"


@pytest.mark.parametrize("mode", [m.value for m in Rounding])
@pytest.mark.filterwarnings("ignore:invalid value encountered in cast:RuntimeWarning")
def test_driver_rounding_equals_the_simulator(project, monkeypatch, mode):
    drv = _driver(project, monkeypatch)
    a = np.array([-2.5, -1.5, -0.5, -0.49999999999999994, -0.0, 0.0, 0.49999999999999994, 0.5, 1.5, 2.5, 3.7, -3.7,
                  1e300, -1e300, 7.0, -7.25])
    np.testing.assert_array_equal(drv.round_real(a, mode), round_real(a, Rounding(mode)))
