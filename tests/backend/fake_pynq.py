"""A stand-in for the parts of PYNQ the generated driver uses: Overlay (ip_dict, hierarchies as attributes),
allocate (buffers with device_address/flush/invalidate) and the IP's AXI-Lite read/write.

Host and device memory are kept apart, as on a board without coherent caches: the device sees what the
host flushed, the host sees what the device wrote only after invalidate. The IP decodes the pointer
arguments from its registers with the layout the test gives it (the hardware's truth), reads DDR and the
inputs at those addresses, calls ``compute`` and writes the outputs, then raises ap_done.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


@dataclass
class Hardware:
    """What the fake board holds: set by a test before the driver opens the overlay."""

    #: per pointer argument (ddr, in0.., out0..), the (offset, bits) words of its address register, low first
    layout: dict[str, list[tuple[int, int]]]
    #: (ddr bytes, [int32 inputs]) -> [int64 outputs], one sample
    compute: Callable[[bytes, list[np.ndarray]], list[np.ndarray]]
    #: the register map the .hwh gives PYNQ (None: the .hwh lists no registers)
    hwh_registers: dict | None
    #: ip_dict key of the accelerator, e.g. "accel/vaqf_top_0"
    ip_key: str = "vaqf_top_0"
    #: where allocate() starts placing buffers (above 4 GiB exercises 64-bit addresses)
    base_address: int = 0x8_0000_0000
    finishes: bool = True
    started: int = 0
    device: dict[int, bytearray] = field(default_factory=dict)


HW: Hardware | None = None


class PynqBuffer(np.ndarray):
    device_address: int

    def flush(self) -> None:
        HW.device[self.device_address][:] = self.tobytes()

    def invalidate(self) -> None:
        self[...] = np.frombuffer(bytes(HW.device[self.device_address]), dtype=self.dtype).reshape(self.shape)


def allocate(shape: tuple[int, ...], dtype: type = np.uint32) -> PynqBuffer:
    buf = np.zeros(shape, dtype=dtype).view(PynqBuffer)
    end = max((a + len(m) for a, m in HW.device.items()), default=HW.base_address)
    buf.device_address = (end + 0xFFF) & ~0xFFF
    HW.device[buf.device_address] = bytearray(buf.nbytes)  # device memory: what the host never flushed is zero
    return buf


def _read_device(addr: int, nbytes: int) -> bytes:
    for base, mem in HW.device.items():
        if base <= addr and addr + nbytes <= base + len(mem):
            return bytes(mem[addr - base : addr - base + nbytes])
    raise AssertionError(f"the IP read {nbytes} bytes at {addr:#x}, outside every allocated buffer")


def _write_device(addr: int, data: bytes) -> None:
    for base, mem in HW.device.items():
        if base <= addr and addr + len(data) <= base + len(mem):
            mem[addr - base : addr - base + len(data)] = data
            return
    raise AssertionError(f"the IP wrote {len(data)} bytes at {addr:#x}, outside every allocated buffer")


class FakeIP:
    def __init__(self, sizes: dict[str, int], used: dict[str, int] | None = None) -> None:
        self.regs: dict[int, int] = {}
        self.sizes = sizes  # bytes per argument
        self.used = used or {}  # elements per input/output argument that carry data (the rest is padding)
        self.done = False

    def write(self, offset: int, value: int) -> None:
        assert offset % 4 == 0 and 0 <= value < 1 << 32, (offset, value)
        self.regs[offset] = value
        if offset == 0 and value & 1:
            HW.started += 1
            if HW.finishes:
                self._run()

    def read(self, offset: int) -> int:
        if offset == 0:
            done = self.done
            self.done = False  # ap_done clears on read
            return (0x2 if done else 0) | (0x4 if HW.finishes else 0)
        return self.regs.get(offset, 0)

    def _address(self, arg: str) -> int:
        addr, shift = 0, 0
        for off, bits in HW.layout[arg]:
            for k in range(0, bits, 32):
                addr |= self.regs.get(off + k // 8, 0) << shift
                shift += 32
        return addr

    def _run(self) -> None:
        ddr = _read_device(self._address("ddr"), self.sizes["ddr"])
        ins = [np.frombuffer(_read_device(self._address(a), self.sizes[a]), dtype="<i4")[:self.used.get(a)]
               for a in self.sizes if a.startswith("in")]
        outs = HW.compute(ddr, ins)
        for a, o in zip([a for a in self.sizes if a.startswith("out")], outs, strict=True):
            flat = np.asarray(o, dtype="<i8").reshape(-1)
            data = np.concatenate([flat, np.zeros(self.sizes[a] // 8 - flat.size, "<i8")]).tobytes()
            assert len(data) == self.sizes[a]
            _write_device(self._address(a), data)
        self.done = True


class _Hierarchy:
    pass


class Overlay:
    def __init__(self, bitfile: str) -> None:
        bit = Path(bitfile)
        if not bit.is_file() or not bit.with_suffix(".hwh").is_file():  # PYNQ needs both
            raise FileNotFoundError(f"{bit} or its .hwh is missing")
        import json

        io = json.loads((bit.parent.parent / "data" / "io.json").read_text())
        sizes = {"ddr": io["ddr_words"] * io["word_bits"] // 8}
        # the IP moves whole DDR words: the host buffers are padded to them ("elements" of "size" used)
        sizes.update({s["name"]: 4 * s["elements"] for s in io["inputs"]})
        sizes.update({s["name"]: 8 * s["elements"] for s in io["outputs"]})
        self.ip = FakeIP(sizes, {s["name"]: s["size"] for s in io["inputs"] + io["outputs"]})
        entry = {"type": "xilinx.com:hls:vaqf_top:1.0", "phys_addr": 0xA0000000, "addr_range": 0x10000}
        if HW.hwh_registers is not None:
            entry["registers"] = HW.hwh_registers
        self.ip_dict = {HW.ip_key: entry, "axi_gpio_0": {"type": "xilinx.com:ip:axi_gpio:2.0", "registers": {}}}
        obj = self
        parts = HW.ip_key.split("/")
        for p in parts[:-1]:
            child = _Hierarchy()
            setattr(obj, p, child)
            obj = child
        setattr(obj, parts[-1], self.ip)
