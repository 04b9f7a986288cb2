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


#: boards this process has read from files or been handed (by name), so a design naming one resolves
_USER_BOARDS: dict[str, Board] = {}


def register_board(board: Board) -> Board:
    """Make ``board`` known by its name to :func:`get_board` for the rest of this process.

    A design refers to its board by name; a user board must not reuse a built-in board's name for
    different hardware, which would make that name ambiguous.
    """
    key = board.name.lower()
    builtin = BOARDS.get(_ALIASES.get(key, key))
    if builtin is not None:
        if builtin != board:
            raise VaqfError(f"board {board.name!r} differs from the built-in board of that name; give it another "
                            "name (e.g. add a suffix) so designs that name it stay unambiguous")
        return builtin
    _USER_BOARDS[key] = board
    return board


def get_board(name_or_path: str | Path) -> Board:
    """A built-in board by name, a user board from a JSON/YAML file with Board's fields, or a user board
    read earlier in this process, by its name."""
    text = str(name_or_path)
    key = text.lower()
    key = _ALIASES.get(key, key)
    if key in BOARDS:
        return BOARDS[key]
    p = Path(text)
    if p.suffix.lower() in (".json", ".yaml", ".yml"):
        return register_board(load_board_file(p))
    if key in _USER_BOARDS:
        return _USER_BOARDS[key]
    raise VaqfError(f"unknown board {text!r}; built-in boards: {', '.join(BOARDS)} "
                    "(or give a .json/.yaml board file)")


#: fields a board file must give, and those it may leave out (with their defaults)
REQUIRED_FIELDS = ("name", "part", "lut", "ff", "bram18", "dsp", "clock_mhz", "ddr_gbps")
OPTIONAL_FIELDS = ("uram", "axi_bits", "description")
_INT_FIELDS = ("lut", "ff", "bram18", "uram", "dsp", "axi_bits")
_FLOAT_FIELDS = ("clock_mhz", "ddr_gbps")


def _read_mapping(path: Path) -> object:
    text = path.read_text()
    if path.suffix.lower() == ".json":
        try:
            return json.loads(text)
        except json.JSONDecodeError as e:
            raise VaqfError(f"board file {path} is not valid JSON: {e}") from e
    try:
        import yaml  # optional: only YAML board files need it
    except ImportError as e:
        raise VaqfError(f"board file {path} is YAML, and reading YAML needs PyYAML, which is not installed: "
                        "pip install pyyaml, or write the board as a .json file with the same fields") from e
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise VaqfError(f"board file {path} is not valid YAML: {e}") from e


def board_from_dict(data: object, where: str = "board") -> Board:
    """A Board from a mapping of its fields, checked: every count a non-negative integer, clock and DDR
    bandwidth positive, the AXI width a power of two of at least 32 bits (the DDR image is 32-bit lanes)."""
    if not isinstance(data, dict):
        raise VaqfError(f"{where} must hold a mapping of board fields ({', '.join(REQUIRED_FIELDS)})")
    missing = [f for f in REQUIRED_FIELDS if f not in data]
    unknown = sorted(set(data) - set(REQUIRED_FIELDS) - set(OPTIONAL_FIELDS))
    if missing or unknown:
        parts = []
        if missing:
            parts.append(f"missing fields {missing}")
        if unknown:
            parts.append(f"unknown fields {unknown}")
        raise VaqfError(f"{where}: {'; '.join(parts)} (fields: {', '.join(REQUIRED_FIELDS + OPTIONAL_FIELDS)})")
    values = dict(data)
    for f in ("name", "part", "description"):
        if f in values and not isinstance(values[f], str):
            raise VaqfError(f"{where}: {f} must be a string, got {values[f]!r}")
    if not values["name"]:
        raise VaqfError(f"{where}: name must not be empty")
    for f in _INT_FIELDS:
        if f in values:
            v = values[f]
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise VaqfError(f"{where}: {f} must be a non-negative integer, got {v!r}")
    for f in _FLOAT_FIELDS:
        v = values[f]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0:
            raise VaqfError(f"{where}: {f} must be a positive number, got {v!r}")
        values[f] = float(v)
    if values["lut"] == 0:
        raise VaqfError(f"{where}: a board without LUTs cannot hold an accelerator")
    axi = values.get("axi_bits", 128)
    if axi < 32 or axi & (axi - 1):
        raise VaqfError(f"{where}: axi_bits must be a power of two of at least 32, got {axi}")
    values.setdefault("uram", 0)
    return Board(**values)


def load_board_file(path: Path) -> Board:
    """A user board from a .json, .yaml or .yml file holding Board's fields (see docs/design-space.md)."""
    path = Path(path)
    if not path.is_file():
        raise VaqfError(f"board file {path} does not exist")
    return board_from_dict(_read_mapping(path), f"board file {path}")
