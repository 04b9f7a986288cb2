"""FPGA boards: part resources (vendor data sheets, see docs), default clock and DDR bandwidth."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from vaqf.errors import VaqfError


@dataclass(frozen=True)
class Board:
    name: str
    part: str
    lut: int
    ff: int
    bram18: int
    uram: int
    dsp: int
    clock_mhz: float
    ddr_gbps: float      # sustained DDR bandwidth reachable from the PL, GB/s
    axi_bits: int = 128  # width of one AXI master data bus
    description: str = ""

    @property
    def clock_hz(self) -> float:
        return self.clock_mhz * 1e6

    @property
    def ddr_bytes_per_cycle(self) -> float:
        """DDR bytes per accelerator clock cycle: the lesser of the DDR rate and one AXI bus."""
        return min(self.ddr_gbps * 1e9 / self.clock_hz, self.axi_bits / 8)

    def resources(self) -> dict[str, int]:
        return {"lut": self.lut, "ff": self.ff, "dsp": self.dsp, "bram18": self.bram18, "uram": self.uram}

    def to_json(self) -> dict:
        return asdict(self)


# Resources from the vendor data sheets (BRAM18 = 2 x BRAM36). Clocks are conservative defaults for an
# HLS design on each speed grade; DDR figures are ~70% of the theoretical peak of the memory interface
# (ZCU102/ZCU104/KV260: 64-bit DDR4-2400..2666; Ultra96-V2: 32-bit LPDDR4-2133; PYNQ-Z2: 32-bit
# DDR3-1050; U250: four 64-bit DDR4-2400 channels).
BOARDS: dict[str, Board] = {
    b.name: b
    for b in [
        Board("zcu102", "xczu9eg-ffvb1156-2-e", 274_080, 548_160, 1_824, 0, 2_520, 200.0, 13.4, 128,
              "Zynq UltraScale+ MPSoC ZCU102"),
        Board("zcu104", "xczu7ev-ffvc1156-2-e", 230_400, 460_800, 624, 96, 1_728, 200.0, 13.4, 128,
              "Zynq UltraScale+ MPSoC ZCU104"),
        Board("ultra96v2", "xczu3eg-sbva484-1-e", 70_560, 141_120, 432, 0, 360, 150.0, 6.0, 128,
              "Avnet Ultra96-V2"),
        Board("kv260", "xck26-sfvc784-2LV-c", 117_120, 234_240, 288, 64, 1_248, 200.0, 13.4, 128,
              "Kria KV260 Vision AI Starter Kit"),
        Board("pynqz2", "xc7z020clg400-1", 53_200, 106_400, 280, 0, 220, 100.0, 2.9, 64, "TUL PYNQ-Z2"),
        Board("u250", "xcu250-figd2104-2L-e", 1_728_000, 3_456_000, 5_376, 1_280, 12_288, 250.0, 54.0, 512,
              "Alveo U250"),
    ]
}

_ALIASES = {"ultra96": "ultra96v2", "ultra96-v2": "ultra96v2", "pynq-z2": "pynqz2", "alveo-u250": "u250",
            "kria-kv260": "kv260"}


def get_board(name_or_path: str) -> Board:
    """A built-in board by name, or a user board from a JSON/YAML file with Board's fields."""
    key = name_or_path.lower()
    key = _ALIASES.get(key, key)
    if key in BOARDS:
        return BOARDS[key]
    p = Path(name_or_path)
    if p.suffix.lower() in (".json", ".yaml", ".yml"):
        return load_board_file(p)
    raise VaqfError(f"unknown board {name_or_path!r}; built-in boards: {', '.join(BOARDS)} "
                    "(or give a .json/.yaml board file)")


def load_board_file(path: Path) -> Board:
    if not path.is_file():
        raise VaqfError(f"board file {path} does not exist")
    text = path.read_text()
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            import yaml  # optional: only needed for YAML board files

            data = yaml.safe_load(text)
    except ImportError as e:
        raise VaqfError("reading a YAML board file needs PyYAML (pip install pyyaml)") from e
    except Exception as e:  # malformed file
        raise VaqfError(f"board file {path} is not valid: {e}") from e
    if not isinstance(data, dict):
        raise VaqfError(f"board file {path} must hold a mapping of board fields")
    fields = {f for f in Board.__dataclass_fields__}
    missing = {"name", "part", "lut", "ff", "bram18", "dsp", "clock_mhz", "ddr_gbps"} - set(data)
    unknown = set(data) - fields
    if missing or unknown:
        raise VaqfError(f"board file {path}: missing fields {sorted(missing)}, unknown fields {sorted(unknown)}")
    data.setdefault("uram", 0)
    try:
        return Board(**data)
    except TypeError as e:
        raise VaqfError(f"board file {path}: {e}") from e
