"""Values for the Vivado block-design script (templates/project/build_bd.tcl.j2) of a board.

The board facts are data in :mod:`vaqf.hw.board` (``SHELLS``); this module only lays them out per m_axi
bundle of the top function, whose interface is fixed: bundle gmem0 carries ``ddr``, gmem1 the inputs and
outputs (templates/project/vaqf_top.cpp.j2).
"""

from __future__ import annotations

from typing import Any

from vaqf.hw.board import Board, shell_of

#: the top's m_axi bundles, in the order they take the PS's HP ports
BUNDLES = ("gmem0", "gmem1")


def block_design_values(board: Board, clock_mhz: float) -> dict[str, Any] | None:
    """The template's ``bd`` value, or None when vaqf has no block design for the board."""
    shell = shell_of(board)
    if shell is None:
        return None
    ports = []
    for i, bundle in enumerate(BUNDLES):
        port, enable, clock = shell.hp_ports[i]
        index = i + 2 if shell.family == "zynqmp" else i  # S_AXI_HP<i>_FPD is S_AXI_GP<i+2> on the MPSoC
        ports.append({"bundle": bundle, "port": port, "enable": enable, "clock": clock,
                      "width_property": shell.hp_width_property.format(gp=index, hp=index)})
    return {
        "family": shell.family,
        "ps_ip": shell.ps_ip,
        "ps_rule": shell.ps_rule,
        "board_part": shell.board_part,
        "board_files": shell.board_files,
        "clock_mhz": f"{clock_mhz:g}",
        "clock_pin": shell.pl_clock_pin,
        "reset_pin": shell.pl_reset_pin,
        "clock_property": shell.pl_clock_property,
        "clock_enable": shell.pl_clock_enable,
        "control_port": shell.control_port,
        "control_enable": shell.control_enable,
        "control_clock": shell.control_clock_pin,
        "hp": ports,
        "hp_bits": board.axi_bits,
        "disable": list(shell.disable),
    }
