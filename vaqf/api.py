"""The public Python API: import, compile, explore, simulate, load."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from vaqf import progress
from vaqf.backend.emit import check_output_dir, write_project
from vaqf.dse.design import Design
from vaqf.dse.search import (
    DEFAULT_ACT_BITS,
    Candidate,
    build_candidates,
    design_for_knobs,
    pareto_designs,
    select,
)
from vaqf.errors import InfeasibleDesign, VaqfError
from vaqf.frontend.calibrate import load_calibration
from vaqf.frontend.onnx_import import ImportOptions, import_onnx
from vaqf.hw.board import Board, get_board, register_board
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
    return register_board(board) if isinstance(board, Board) else get_board(board)


def load_model(model: ModelLike, weights: str = "keep", act_bits: int | None = None,
               calib: np.ndarray | str | Path | None = None, optimize: bool = True) -> Graph:
    """Import a model (ONNX/QONNX/QDQ path or ModelProto) and run the default passes."""
    if isinstance(model, Graph):
        return model
    if isinstance(calib, (str, Path)):
        calib = load_calibration(calib)
    what = Path(model).name if isinstance(model, (str, Path)) else "model"
    bits = f", {act_bits}-bit activations" if act_bits else ""
    with progress.stage(f"importing {what}{bits}"):
        graph = import_onnx(model, ImportOptions(weights=weights, act_bits=act_bits, calib=calib))
        if optimize:
            graph = PassManager(default_pipeline(), max_iterations=4)(graph).graph
    return graph


def _candidates(model: ModelLike, board: Board, weights: str, act_bits: int | None,
                calib: np.ndarray | str | Path | None, bits: Sequence[int] | None, cap: float) -> list[Candidate]:
    """The activation precisions to search: the model's own when it fixes them (QONNX/QDQ quantizers, a
    Graph) or when ``act_bits`` is given; else each of ``bits`` (default 8, 6, 4), importing the float
    model once per precision."""
    if isinstance(calib, (str, Path)):
        calib = load_calibration(calib)
    if isinstance(model, Graph):
        return [Candidate.build(model, board, cap)]
    wanted = sorted({int(k) for k in (bits or DEFAULT_ACT_BITS)}, reverse=True)
    first_bits = act_bits if act_bits is not None else wanted[0]
    first = load_model(model, weights, first_bits, calib)
    if first.metadata.get("format", "onnx") != "onnx":  # the model's quantizers set its precision
        if act_bits is not None:
            log.info("the model quantizes its own activations; --act-bits %d does not apply", act_bits)
        return [Candidate.build(first, board, cap)]
    if act_bits is not None:
        return [Candidate.build(first, board, cap, act_bits)]
    graphs = {first_bits: first}

    def graph_for_bits(k: int) -> Graph:
        if k not in graphs:
            log.info("importing the model with %d-bit activations", k)
            graphs[k] = load_model(model, weights, k, calib)
        return graphs[k]

    return build_candidates(graph_for_bits, board, wanted, cap)


def compile_model(model: ModelLike, out_dir: str | Path, board: str | Board = "zcu102",
                  fps: float | None = None, act_bits: int | None = None, weights: str = "keep",
                  calib: np.ndarray | str | Path | None = None, force: bool = False,
                  design: Design | str | Path | None = None, cap: float = 0.8,
                  bits: Sequence[int] | None = None) -> CompileResult:
    """Compile a model to an HLS project in ``out_dir``.

    Without ``fps`` the fastest design that fits the board (within ``cap`` of each resource) is chosen;
    with ``fps`` the cheapest one (fewest LUTs) that meets it. A float model without ``act_bits`` is
    searched over activation precisions ``bits`` (default 8, 6, 4): the highest one whose best design
    meets the target wins. ``design`` pins the knobs (and, for a float model, the activation bits)
    instead.
    """
    out = Path(out_dir)
    check_output_dir(out, force)  # fail before doing any work
    b = _board(board)
    if design is not None:
        pinned = design if isinstance(design, Design) else Design.load(design)
        if pinned.board.name != b.name:
            log.warning("design was made for %s; re-estimating for %s", pinned.board.name, b.name)
        graph = load_model(model, weights, act_bits if act_bits is not None else pinned.act_bits, calib)
        own = isinstance(model, Graph) or graph.metadata.get("format", "onnx") != "onnx"
        chosen = design_for_knobs(graph, b, pinned.knobs, fps, None if own else pinned.act_bits)
        cands = [Candidate.build(graph, b, cap)]
    else:
        cands = _candidates(model, b, weights, act_bits, calib, bits, cap)
        with progress.stage(f"searching the design space on {b.name}"):
            chosen, cand = select(cands, b, fps, cap)
        graph = cand.graph

    def add_report(folder: Path) -> None:
        _write_report(folder, graph, chosen, b, cands, cap, model, calib)

    with progress.stage(f"writing the project to {out}"):
        project = write_project(graph, chosen, out, force=force, before_install=add_report)
    return CompileResult(project, chosen, graph)


def _write_report(folder: Path, graph: Graph, design: Design, board: Board, cands: list[Candidate], cap: float,
                  model: ModelLike, calib: np.ndarray | str | Path | None) -> None:
    """report.html / report.md in the project: the Pareto front of the searched precisions and, when
    calibration data was given, the per-tensor error of the simulator against the float model."""
    from vaqf.report import write_report

    pareto = [{"fps": d.estimate["fps"], "lut_util": d.estimate["utilization"]["lut"], "act_bits": d.act_bits}
              for d in pareto_designs(cands, board, cap, limit=60)]
    errors = None
    if calib is not None and not isinstance(model, Graph):
        try:
            from vaqf.frontend.onnx_import import load_model as load_onnx
            from vaqf.sim.compare import layer_errors

            data = load_calibration(calib) if isinstance(calib, (str, Path)) else np.asarray(calib)
            proto = model if isinstance(model, onnx.ModelProto) else load_onnx(model)
            errors = [e.to_json() for e in layer_errors(graph, proto, data[:16].astype(np.float32))]
        except Exception as e:  # the report is extra information: never fail a compile for it
            log.warning("per-tensor quantization error not reported: %s", str(e).splitlines()[0] if str(e) else e)
    write_report(folder, graph, design, board, pareto, errors)


@dataclass
class Exploration:
    """What ``vaqf explore`` reports: the Pareto front, the design compile would choose, and why none."""

    front: list[Design]
    chosen: Design | None
    infeasible: InfeasibleDesign | None
    candidates: list[Candidate]


def exploration(model: ModelLike, board: str | Board = "zcu102", fps: float | None = None, weights: str = "keep",
                act_bits: int | None = None, calib: np.ndarray | str | Path | None = None, cap: float = 0.8,
                bits: Sequence[int] | None = None, limit: int | None = 40) -> Exploration:
    """The Pareto front over activation precisions (see ``vaqf.dse.search.pareto_designs``) and the choice."""
    b = _board(board)
    cands = _candidates(model, b, weights, act_bits, calib, bits, cap)
    front = pareto_designs(cands, b, cap, limit)
    try:
        chosen, infeasible = select(cands, b, fps, cap)[0], None
    except InfeasibleDesign as e:
        chosen, infeasible = None, e
    return Exploration(front, chosen, infeasible, cands)


def explore(model: ModelLike, board: str | Board = "zcu102", fps: float | None = None, weights: str = "keep",
            act_bits: int | None = None, calib: np.ndarray | str | Path | None = None,
            cap: float = 0.8, bits: Sequence[int] | None = None) -> tuple[list[Design], Design | None]:
    """The Pareto front (activation bits, FPS, LUT) of feasible designs, and the design compile would choose
    (None when the target cannot be met; ``exploration`` says why)."""
    ex = exploration(model, board, fps, weights, act_bits, calib, cap, bits)
    return ex.front, ex.chosen


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


__all__ = ["CompileResult", "Exploration", "Project", "compile_model", "estimate_design", "exploration", "explore",
           "load", "load_model",
           "simulate", "units_of"]
