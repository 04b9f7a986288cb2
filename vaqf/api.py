"""The public Python API: import, compile, explore, simulate, load."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from vaqf.backend.emit import check_output_dir, write_project
from vaqf.dse.design import Design
from vaqf.dse.search import design_for_knobs, pareto_front, search
from vaqf.errors import VaqfError
from vaqf.frontend.calibrate import load_calibration
from vaqf.frontend.onnx_import import ImportOptions, import_onnx
from vaqf.hw.board import Board, get_board
from vaqf.hw.model import estimate, units_of
from vaqf.ir import Graph
from vaqf.ir.serialize import load_graph
from vaqf.passes import PassManager, default_pipeline
from vaqf.sim.simulator import SimResult, Simulator

log = logging.getLogger(__name__)

ModelLike = str | Path | onnx.ModelProto | Graph


@dataclass
class CompileResult:
    project: Path
    design: Design
    graph: Graph

    def to_json(self) -> dict:
        d = self.design.to_json()
        est = d.pop("estimate")
        return {"project": str(self.project), "design": d,
                "estimate": {k: est[k] for k in ("fps", "cycles", "resources", "utilization") if k in est}}


def _board(board: str | Board) -> Board:
    return board if isinstance(board, Board) else get_board(board)


def load_model(model: ModelLike, weights: str = "keep", act_bits: int | None = None,
               calib: np.ndarray | str | Path | None = None, optimize: bool = True) -> Graph:
    """Import a model (ONNX/QONNX/QDQ path or ModelProto) and run the default passes."""
    if isinstance(model, Graph):
        return model
    if isinstance(calib, (str, Path)):
        calib = load_calibration(calib)
    graph = import_onnx(model, ImportOptions(weights=weights, act_bits=act_bits, calib=calib))
    if optimize:
        graph = PassManager(default_pipeline(), max_iterations=4)(graph).graph
    return graph


def compile_model(model: ModelLike, out_dir: str | Path, board: str | Board = "zcu102",
                  fps: float | None = None, act_bits: int | None = None, weights: str = "keep",
                  calib: np.ndarray | str | Path | None = None, force: bool = False,
                  design: Design | str | Path | None = None, cap: float = 0.8) -> CompileResult:
    """Compile a model to an HLS project in ``out_dir``.

    Without ``fps`` the fastest design that fits the board (within ``cap`` of each resource) is chosen;
    with ``fps`` the cheapest one (fewest LUTs) that meets it. ``design`` pins the knobs instead.
    """
    out = Path(out_dir)
    check_output_dir(out, force)  # fail before doing any work
    b = _board(board)
    graph = load_model(model, weights, act_bits, calib)
    if design is not None:
        pinned = design if isinstance(design, Design) else Design.load(design)
        if pinned.board != b.name:
            log.warning("design was made for %s; re-estimating for %s", pinned.board, b.name)
        chosen = design_for_knobs(graph, b, pinned.knobs, fps)
    else:
        chosen = search(graph, b, fps, cap)
    project = write_project(graph, chosen, out, force=force)
    return CompileResult(project, chosen, graph)


def explore(model: ModelLike, board: str | Board = "zcu102", fps: float | None = None, weights: str = "keep",
            act_bits: int | None = None, calib: np.ndarray | str | Path | None = None,
            cap: float = 0.8) -> tuple[list[Design], Design | None]:
    """The Pareto front (FPS vs LUT) of feasible designs, and the design compile would choose."""
    b = _board(board)
    graph = load_model(model, weights, act_bits, calib)
    front = pareto_front(graph, b, cap)
    try:
        chosen = search(graph, b, fps, cap)
    except VaqfError:
        chosen = None
    return front, chosen


@dataclass
class Project:
    path: Path
    graph: Graph
    design: Design


def load(project: str | Path) -> Project:
    """Open a compiled project folder."""
    p = Path(project)
    if not p.is_dir():
        raise VaqfError(f"{p} is not a folder")
    graph = load_graph(p)
    design = Design.load(p / "design.json")
    return Project(p, graph, design)


def simulate(model_or_project: ModelLike, x: np.ndarray | list[np.ndarray], weights: str = "keep",
             act_bits: int | None = None, calib: np.ndarray | str | Path | None = None,
             trace: bool = False) -> SimResult:
    """Bit-accurate simulation on float inputs; a project folder runs its compiled graph."""
    if isinstance(model_or_project, (str, Path)) and Path(model_or_project).is_dir():
        graph = load_graph(Path(model_or_project))
    else:
        graph = load_model(model_or_project, weights, act_bits, calib)
    arrays = [x] if isinstance(x, np.ndarray) else list(x)
    return Simulator(graph).run(arrays, trace=trace)


def estimate_design(graph: Graph, board: str | Board, knobs: dict[str, dict[str, int]]) -> dict:
    return estimate(graph, _board(board), knobs).to_json()


__all__ = ["CompileResult", "Project", "compile_model", "estimate_design", "explore", "load", "load_model",
           "simulate", "units_of"]
