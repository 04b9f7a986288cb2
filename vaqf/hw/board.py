"""FPGA boards: part resources (vendor data sheets, see docs), default clock and DDR bandwidth."""

from __future__ import annotations

import json
import re
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
    board_from_dict(board.to_json(), f"board {board.name!r}")  # a Board built in Python is checked as a file is
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


#: a Xilinx part name (xc/xa/xq, device, then package, speed grade, temperature... joined by hyphens), e.g.
#: xczu9eg-ffvb1156-2-e, xc7z020clg400-1, xck26-sfvc784-2LV-c, xcvc1902-vsva2197-2MP-e-S
PART_PATTERN = re.compile(r"x[caq][a-z0-9]{2,24}(-[A-Za-z0-9]{1,12}){1,5}")
#: a board name: a short identifier (it names the board in designs, file comments and the report)
NAME_PATTERN = re.compile(r"[A-Za-z][A-Za-z0-9_\-]{0,31}")
MAX_DESCRIPTION = 200
#: bounds far above any device, so a typo or a hostile file cannot overflow the cost model or a C++ constant
MAX_COUNT = 10**9
MAX_CLOCK_MHZ = 1000.0
MAX_DDR_GBPS = 10_000.0
#: counts a board may lack (a part without URAM, DSP or BRAM); LUTs and flip-flops it must have
_MAY_BE_ZERO = ("uram", "dsp", "bram18")


def board_from_dict(data: object, where: str = "board") -> Board:
    """A Board from a mapping of its fields, checked as data: the name a short identifier, the part a Xilinx
    part name, the description plain text, every count an integer (LUT and FF positive), clock and DDR
    bandwidth finite and positive, all below bounds no device reaches, the AXI width a power of two of at least
    32 bits (the DDR image is 32-bit lanes)."""
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
    # the name, part and description go into generated C++, Tcl, cfg, Makefile and HTML: data, never code
    if not NAME_PATTERN.fullmatch(values["name"]):
        raise VaqfError(f"{where}: name must be a short identifier (a letter, then up to 31 letters, digits, _ or "
                        f"-), got {values['name']!r}")
    if not PART_PATTERN.fullmatch(values["part"]):
        raise VaqfError(f"{where}: part must be a Xilinx part name such as xczu9eg-ffvb1156-2-e, got "
                        f"{values['part']!r}")
    desc = values.get("description", "")
    if len(desc) > MAX_DESCRIPTION or not desc.isprintable():
        raise VaqfError(f"{where}: description must be plain text of at most {MAX_DESCRIPTION} characters without "
                        f"control, format (bidi) or line-break characters, got {desc[:60]!r}")
    for f in _INT_FIELDS:
        if f in values:
            v = values[f]
            low = 0 if f in _MAY_BE_ZERO else 1
            if isinstance(v, bool) or not isinstance(v, int) or not low <= v <= MAX_COUNT:
                kind = "a non-negative" if low == 0 else "a positive"
                raise VaqfError(f"{where}: {f} must be {kind} integer of at most {MAX_COUNT}, got {v!r}")
    for f, top in (("clock_mhz", MAX_CLOCK_MHZ), ("ddr_gbps", MAX_DDR_GBPS)):
        v = values[f]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v <= top:  # NaN and inf fail too
            raise VaqfError(f"{where}: {f} must be a positive number of at most {top:g}, got {v!r}")
        values[f] = float(v)
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


@dataclass(frozen=True)
class Shell:
    """What the Vivado block design around the accelerator IP needs to know about a board (data only; the
    Tcl lives in templates/project/build_bd.tcl.j2).

    ``board_part`` is a pattern for Vivado's ``get_board_parts`` (the newest installed board-file revision
    is taken). ``hp_ports`` are the PS slave ports that take the IP's m_axi bundles, in bundle order, each
    with the PS property that enables it and the PS clock pin of that port. ``control`` is the PS master
    port for the IP's s_axi_control. ``pl_clock_property`` sets the PL clock in MHz; ``disable`` lists PS
    ports that a board preset may enable and the design leaves unused (an enabled port with an unconnected
    clock fails validation).
    """

    family: str                                   # "zynqmp" or "zynq7"
    ps_ip: str                                    # VLNV of the PS, without a version
    ps_rule: str                                  # apply_bd_automation rule that applies the board preset
    board_part: str
    board_files: str                              # where the board files come from, for the error message
    pl_clock_pin: str
    pl_reset_pin: str
    pl_clock_property: str
    pl_clock_enable: str
    control_port: str
    control_enable: str
    control_clock_pin: str
    hp_ports: tuple[tuple[str, str, str], ...]    # (port, enabling property, clock pin)
    hp_width_property: str                        # per HP port, "{i}" is replaced by its index
    disable: tuple[str, ...] = ()


_ZYNQMP_HP = (("S_AXI_HP0_FPD", "CONFIG.PSU__USE__S_AXI_GP2", "saxihp0_fpd_aclk"),
              ("S_AXI_HP1_FPD", "CONFIG.PSU__USE__S_AXI_GP3", "saxihp1_fpd_aclk"),
              ("S_AXI_HP2_FPD", "CONFIG.PSU__USE__S_AXI_GP4", "saxihp2_fpd_aclk"),
              ("S_AXI_HP3_FPD", "CONFIG.PSU__USE__S_AXI_GP5", "saxihp3_fpd_aclk"))


def _zynqmp(board_part: str, board_files: str) -> Shell:
    # PSU__USE__M_AXI_GP0/1/2 are M_AXI_HPM0_FPD, M_AXI_HPM1_FPD and M_AXI_HPM0_LPD; S_AXI_GP2..5 are
    # S_AXI_HP0..3_FPD; PSU__SAXIGP<n>__DATA_WIDTH is the width of S_AXI_GP<n>
    return Shell("zynqmp", "xilinx.com:ip:zynq_ultra_ps_e", "xilinx.com:bd_rule:zynq_ultra_ps_e", board_part,
                 board_files, "pl_clk0", "pl_resetn0", "CONFIG.PSU__CRL_APB__PL0_REF_CTRL__FREQMHZ",
                 "CONFIG.PSU__FPGA_PL0_ENABLE", "M_AXI_HPM0_FPD", "CONFIG.PSU__USE__M_AXI_GP0",
                 "maxihpm0_fpd_aclk", _ZYNQMP_HP, "CONFIG.PSU__SAXIGP{gp}__DATA_WIDTH",
                 ("CONFIG.PSU__USE__M_AXI_GP1", "CONFIG.PSU__USE__M_AXI_GP2"))


_ZYNQ7_HP = (("S_AXI_HP0", "CONFIG.PCW_USE_S_AXI_HP0", "S_AXI_HP0_ACLK"),
             ("S_AXI_HP1", "CONFIG.PCW_USE_S_AXI_HP1", "S_AXI_HP1_ACLK"),
             ("S_AXI_HP2", "CONFIG.PCW_USE_S_AXI_HP2", "S_AXI_HP2_ACLK"),
             ("S_AXI_HP3", "CONFIG.PCW_USE_S_AXI_HP3", "S_AXI_HP3_ACLK"))

#: the block design per built-in board; boards without one (Alveo, user boards) get no bitstream flow
SHELLS: dict[str, Shell] = {
    "zcu102": _zynqmp("*:zcu102:part0:*", "shipped with Vivado"),
    "zcu104": _zynqmp("*:zcu104:part0:*", "shipped with Vivado"),
    "ultra96v2": _zynqmp("*:ultra96v2:part0:*", "Avnet's bdf repository (github.com/Avnet/bdf)"),
    "kv260": _zynqmp("*:kv260_som:part0:*", "shipped with Vivado 2021.1 and later"),
    "pynqz2": Shell("zynq7", "xilinx.com:ip:processing_system7", "xilinx.com:bd_rule:processing_system7",
                    "*:pynq-z2:part0:*", "TUL's PYNQ-Z2 board files (from the PYNQ-Z2 resources page)",
                    "FCLK_CLK0", "FCLK_RESET0_N", "CONFIG.PCW_FPGA0_PERIPHERAL_FREQMHZ", "CONFIG.PCW_EN_CLK0_PORT",
                    "M_AXI_GP0", "CONFIG.PCW_USE_M_AXI_GP0", "M_AXI_GP0_ACLK", _ZYNQ7_HP,
                    "CONFIG.PCW_S_AXI_HP{hp}_DATA_WIDTH", ("CONFIG.PCW_USE_M_AXI_GP1",)),
}


def shell_of(board: Board) -> Shell | None:
    """The block design data of a built-in board, or None (Alveo U250, user boards)."""
    builtin = BOARDS.get(board.name)
    return SHELLS.get(board.name) if builtin == board else None
