"""vaqf: compile quantized neural networks (binary-weight ViTs, structurally sparse CNNs) to FPGA HLS.

The public names load on first use: ``import vaqf`` (and so ``vaqf --help``) must not pull in onnx, numba
or PyTorch, which take seconds to import.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

#: public name -> the module that defines it
_LAZY = {
    "CompileResult": "vaqf.api",
    "Exploration": "vaqf.api",
    "Project": "vaqf.api",
    "compile_model": "vaqf.api",
    "estimate_design": "vaqf.api",
    "exploration": "vaqf.api",
    "explore": "vaqf.api",
    "load": "vaqf.api",
    "load_model": "vaqf.api",
    "simulate": "vaqf.api",
    "Design": "vaqf.dse.design",
    "SimResult": "vaqf.sim.simulator",
    "Simulator": "vaqf.sim.simulator",
    "VaqfError": "vaqf.errors",
    "BOARDS": "vaqf.hw.board",
    "Board": "vaqf.hw.board",
    "get_board": "vaqf.hw.board",
}

if TYPE_CHECKING:  # for type checkers and IDEs; at run time __getattr__ loads these
    from vaqf.api import (
        CompileResult,
        Exploration,
        Project,
        compile_model,
        estimate_design,
        exploration,
        explore,
        load,
        load_model,
        simulate,
    )
    from vaqf.dse.design import Design
    from vaqf.errors import VaqfError
    from vaqf.hw.board import BOARDS, Board, get_board
    from vaqf.sim.simulator import SimResult, Simulator


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'vaqf' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = ["BOARDS", "Board", "CompileResult", "Design", "Exploration", "Project", "SimResult", "Simulator",
           "VaqfError", "__version__", "compile_model", "estimate_design", "exploration", "explore", "get_board",
           "load", "load_model", "simulate"]
