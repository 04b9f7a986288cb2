"""vaqf: compile quantized neural networks (binary-weight ViTs, structurally sparse CNNs) to FPGA HLS."""

__version__ = "0.1.0"

from vaqf.api import CompileResult, Project, compile_model, explore, load, load_model, simulate  # noqa: E402
from vaqf.dse.design import Design  # noqa: E402
from vaqf.errors import VaqfError  # noqa: E402
from vaqf.hw.board import BOARDS, Board, get_board  # noqa: E402

__all__ = ["BOARDS", "Board", "CompileResult", "Design", "Project", "VaqfError", "compile_model", "explore",
           "get_board", "load", "load_model", "simulate", "__version__"]
