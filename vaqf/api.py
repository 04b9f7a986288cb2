"""The public Python API: import, compile, explore, simulate, load."""

from __future__ import annotations

import logging
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from vaqf import progress
from vaqf.backend.emit import check_compiled_together, check_output_dir, project_lock, write_project
from vaqf.dse.design import Design, check_knobs
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
from vaqf.passes import optimize as run_passes
from vaqf.sim.simulator import SimResult, Simulator

log = logging.getLogger(__name__)

#: a model file path, a loaded ONNX model, an imported Graph; ``compile_model`` also takes a torch.nn.Module
ModelLike = str | Path | onnx.ModelProto | Graph

#: relative L2 error of the outputs against the float model above which a compile warns: healthy 8-bit
#: post-training quantization stays well below it, a binarization that destroys the output lands near 1
OUTPUT_ERROR_WARN = 0.25
#: calibration inputs the output error is measured on (the simulator and onnxruntime each run them)
OUTPUT_ERROR_INPUTS = 16


@dataclass
class OutputError:
    """The compiled model's outputs against the float model on calibration inputs.

    ``rel_l2`` is ``||vaqf - float|| / ||float||`` over all outputs; ``top1`` the fraction of inputs whose
    largest output (the predicted class, for a classifier) is the same, None when the output is one value."""

    rel_l2: float
    max_abs: float
    top1: float | None
    inputs: int

    def to_json(self) -> dict:
        return {"rel_l2": self.rel_l2, "max_abs": self.max_abs, "top1_agreement": self.top1, "inputs": self.inputs}


@dataclass
class CompileResult:
    """What ``compile_model`` returns.

    ``project``: the project folder written; ``design``: the chosen :class:`~vaqf.dse.design.Design` (its
    ``estimate`` holds the figures, see :func:`estimate_design` for the keys); ``graph``: the compiled
    integer graph; ``output_error``: the outputs against the float model when calibration data was given
    (else None); ``warnings``: what the compile warned about, one line each.
    """

    project: Path
    design: Design
    graph: Graph
    output_error: OutputError | None = None
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        d = self.design.to_json()
        est = d.pop("estimate")
        out = {"project": str(self.project), "design": d,
               "estimate": {k: est[k] for k in ("fps", "cycles", "latency_cycles", "resources", "utilization")
                            if k in est}}
        if self.output_error is not None:
            out["output_error"] = self.output_error.to_json()
        if self.warnings:
            out["warnings"] = list(self.warnings)
        return out


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
            graph = run_passes(graph).graph
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


def compile_model(model: ModelLike | Any, out_dir: str | Path, board: str | Board = "zcu102",
                  fps: float | None = None, act_bits: int | None = None, weights: str = "keep",
                  calib: np.ndarray | str | Path | None = None, force: bool = False,
                  design: Design | str | Path | None = None, cap: float = 0.8,
                  bits: Sequence[int] | None = None, refit: bool = False,
                  example_input: Any = None, arch: str = "engine") -> CompileResult:
    """Compile a model to an HLS project in ``out_dir``.

    ``model`` is an ONNX/QONNX/QDQ file, a ``onnx.ModelProto``, a :class:`~vaqf.ir.Graph`, or a
    ``torch.nn.Module`` with ``example_input`` (one input tensor, batch 1): a module with the frontend's
    quantization-aware layers is exported to QONNX, any other to float ONNX (then give ``weights``,
    ``act_bits`` and ``calib`` as for a float file).

    Without ``fps`` the fastest design that fits the board (within ``cap`` of each resource) is chosen;
    with ``fps`` the cheapest one (fewest LUTs) that meets it. A float model without ``act_bits`` is
    searched over activation precisions ``bits`` (default 8, 6, 4): the highest one whose best design
    meets the target wins. ``design`` pins the knobs (and, for a float model, the activation bits)
    instead; a pinned design made for another model is refused, and one that does not fit ``board`` is
    an error unless ``refit`` asks to search for one instead.

    With ``calib``, the outputs are compared with the float model's on the first calibration inputs
    (``CompileResult.output_error``), and a warning says what helps when they differ by more than
    ``OUTPUT_ERROR_WARN`` (relative L2).

    ``arch`` picks the architecture: "engine" (the layer-sequential engine, the default), "dataflow" (a
    streaming pipeline, docs/dataflow.md), or "auto" (the search's objective decides between them where the
    model streams).
    """
    out = Path(out_dir)
    check_output_dir(out, force)  # fail before doing any work
    # held from here: a second compile to the same folder is refused at once, not after its search
    with project_lock(out):
        b = _board(board)
        with tempfile.TemporaryDirectory(prefix="vaqf-module-") as td:
            if _is_torch_module(model):
                model = _export_module(model, example_input, Path(td))
            elif example_input is not None:
                raise VaqfError("example_input is for a torch.nn.Module; an ONNX model or Graph has its input shape")
            if design is not None:
                pinned = design if isinstance(design, Design) else Design.load(design)
                where = f"the design {design}" if not isinstance(design, Design) else "the given design"
                graph = load_model(model, weights, act_bits if act_bits is not None else pinned.act_bits, calib)
                _check_same_model(pinned, graph, where)
                check_knobs(pinned.knobs, graph, where)  # this graph's units, their knobs, legal values only
                if pinned.board.name != b.name:
                    log.warning("%s was made for %s; re-estimating for %s", where, pinned.board.name, b.name)
                own = isinstance(model, Graph) or graph.metadata.get("format", "onnx") != "onnx"
                bits_pinned = None if own else pinned.act_bits
                chosen = design_for_knobs(graph, b, pinned.knobs, fps, bits_pinned, pinned.arch)
                cands = [Candidate.build(graph, b, cap, bits_pinned)]
                over = _over_budget(chosen)
                if over and not refit:
                    raise VaqfError(f"{where} does not fit {b.name}: it needs {over} of the board; compile without "
                                    "--design to search for a design, or add --refit to search when it does not fit")
                if over:
                    log.warning("%s needs %s of %s: searching for a design that fits instead", where, over, b.name)
                    with progress.stage(f"searching the design space on {b.name}"):
                        chosen, _ = select(cands, b, fps, cap, arch)
            else:
                cands = _candidates(model, b, weights, act_bits, calib, bits, cap)
                with progress.stage(f"searching the design space on {b.name}"):
                    chosen, cand = select(cands, b, fps, cap, arch)
                graph = cand.graph

            def add_report(folder: Path) -> None:
                _write_report(folder, graph, chosen, b, cands, cap, model, calib)

            with progress.stage(f"writing the project to {out}"):
                project = write_project(graph, chosen, out, force=force, before_install=add_report)
            result = CompileResult(project, chosen, graph)
            if calib is not None and not isinstance(model, Graph):
                result.output_error = _measure_output_error(graph, model, calib)
                if result.output_error is not None and result.output_error.rel_l2 > OUTPUT_ERROR_WARN:
                    msg = _output_error_advice(result.output_error, graph, weights, chosen.act_bits)
                    log.warning("%s", msg)
                    result.warnings.append(msg)
    return result


def _over_budget(design: Design) -> str:
    """The resources a design needs more of than the board has, as "LUT 394%, DSP 840%" ("" when it fits)."""
    util = design.estimate.get("utilization", {})
    return ", ".join(f"{k.upper()} {v * 100:.0f}%" for k, v in util.items() if v > 1.0)


def _check_same_model(pinned: Design, graph: Graph, where: str) -> None:
    """Refuse a pinned design whose recorded layers are not this model's (a design.json of another project).

    Only the layer names the design's estimate recorded are compared; a hand-written design without them
    is taken as it is."""
    recorded = [e["node"] for e in pinned.estimate.get("layers", []) if isinstance(e, dict) and "node" in e]
    if not recorded or pinned.arch == "dataflow":  # a dataflow design's knobs name its layers: check_knobs holds them
        return
    layers = [n.name for nodes in units_of(graph).values() for n in nodes]
    missing = [n for n in recorded if n not in set(layers)]
    extra = [n for n in layers if n not in set(recorded)]
    if missing or extra:
        def few(names: list[str]) -> str:
            return ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")

        detail = "; ".join(x for x in (f"its layers {few(missing)} are not in this model" if missing else "",
                                       f"this model's layers {few(extra)} are not in it" if extra else "") if x)
        raise VaqfError(f"{where} was made for another model ({detail}): compile without --design, or pass the "
                        "design.json of a project compiled from this model")


def _is_torch_module(model: object) -> bool:
    torch = sys.modules.get("torch")  # a module can only exist if torch is loaded: never import it here
    return torch is not None and isinstance(model, torch.nn.Module)


def _export_module(model: Any, example_input: Any, folder: Path) -> Path:
    """Export a torch.nn.Module to ONNX (QONNX when it has the frontend's quantization-aware layers)."""
    from vaqf.frontend.torch.module import export_module

    if example_input is None and getattr(model, "cfg", None) is None:
        raise VaqfError(f"compile_model got a torch.nn.Module ({type(model).__name__}) without example_input: pass "
                        "example_input=torch.zeros(1, ...) shaped like one input, or export the model to ONNX first")
    with progress.stage(f"exporting {type(model).__name__} to ONNX"):
        return export_module(model, folder / "model.onnx", example_input)


def _measure_output_error(graph: Graph, model: ModelLike, calib: np.ndarray | str | Path) -> OutputError | None:
    """The compiled graph's outputs against onnxruntime's on the original model, on the first calibration
    inputs; None (with a warning) when onnxruntime cannot run the model: the figure is extra information."""
    from vaqf.frontend.calibrate import OWN_QUANTIZERS, float_session, ort_compatible
    from vaqf.frontend.onnx_import import load_model as load_onnx

    data = load_calibration(calib) if isinstance(calib, (str, Path)) else np.asarray(calib)
    x = data[:OUTPUT_ERROR_INPUTS].astype(np.float32)
    try:
        proto = model if isinstance(model, onnx.ModelProto) else load_onnx(model)
        sess = float_session(ort_compatible(proto, OWN_QUANTIZERS))
        name = sess.get_inputs()[0].name
        ref = np.concatenate([np.asarray(sess.run(None, {name: x[i:i + 1]})[0], np.float64)
                              for i in range(x.shape[0])])
    except Exception as e:  # never fail a compile for a figure
        log.warning("output error against the float model not measured: %s", str(e).splitlines()[0] if str(e) else e)
        return None
    with progress.stage(f"measuring the output error on {x.shape[0]} calibration inputs"):
        got = np.asarray(Simulator(graph).run([x]).dequantized[0], np.float64)
    if got.size != ref.size:
        log.warning("output error not measured: the compiled output has %d values, the float model's %d",
                    got.size, ref.size)
        return None
    got = got.reshape(ref.shape)
    denom = float(np.linalg.norm(ref))
    rel = float(np.linalg.norm(got - ref) / denom) if denom else 0.0
    top1 = None
    if ref.ndim == 2 and ref.shape[1] > 1:
        top1 = float(np.mean(np.argmax(got, axis=1) == np.argmax(ref, axis=1)))
    return OutputError(rel, float(np.max(np.abs(got - ref))), top1, int(x.shape[0]))


def _output_error_advice(err: OutputError, graph: Graph, weights: str, act_bits: int) -> str:
    """The warning for outputs far from the float model's, with only the remedies that apply."""
    agree = f", top-1 agreement {err.top1 * 100:.0f}%" if err.top1 is not None else ""
    helps = []
    if graph.metadata.get("format", "onnx") == "onnx":  # quantized here, after training
        helps.append("quantization-aware training with the PyTorch frontend (vaqf.frontend.torch.train_qat, then "
                     "vaqf export --qonnx --checkpoint; docs/frontend.md)")
    more = []
    if weights in ("binary", "int4"):
        more.append("--weights int8")
    if act_bits < 8:
        more.append("--act-bits 8")
    if more:
        helps.append("more bits (" + ", ".join(more) + ")")
    advice = "; what helps: " + " or ".join(helps) if helps else ""
    return (f"the outputs differ from the float model's by {err.rel_l2:.2f} relative L2 on {err.inputs} calibration "
            f"inputs{agree}: the quantized model may not be accurate{advice}")


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
            from vaqf.frontend.compare import layer_errors
            from vaqf.frontend.onnx_import import load_model as load_onnx

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
                bits: Sequence[int] | None = None, limit: int | None = 40, arch: str = "engine") -> Exploration:
    """The Pareto front over activation precisions (see ``vaqf.dse.search.pareto_designs``; engine designs) and
    the choice over both architectures (``arch`` as in :func:`compile_model`)."""
    b = _board(board)
    cands = _candidates(model, b, weights, act_bits, calib, bits, cap)
    front = pareto_designs(cands, b, cap, limit) if arch != "dataflow" else []
    try:
        chosen, infeasible = select(cands, b, fps, cap, arch)[0], None
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
    """A compiled project folder, opened by :func:`load`.

    ``path``: the folder; ``graph``: its compiled integer graph (``graph.json``/``graph.npz``); ``design``: its
    :class:`~vaqf.dse.design.Design` (``design.json``). :meth:`predict` runs the bit-accurate simulator
    (hls4ml's ``predict``), :meth:`csim` builds the generated C++ with g++ and compares it with the simulator
    (hls4ml's ``compile`` + ``predict`` on the C++), :meth:`simulator` gives the reusable simulator itself.
    """

    path: Path
    graph: Graph
    design: Design
    _sim: Simulator | None = field(default=None, init=False, repr=False, compare=False)

    def simulator(self, saturate: bool = False) -> Simulator:
        """The simulator of this project's graph, built once and reused (building it prepares every node);
        ``saturate``: NaN/inf inputs set to 0/saturated with a warning instead of refused."""
        if self._sim is None:
            self._sim = Simulator(self.graph)
        self._sim.saturate = saturate
        return self._sim

    def simulate(self, x: np.ndarray | list[np.ndarray], trace: bool = False, saturate: bool = False) -> SimResult:
        """Bit-accurate simulation on float inputs ``[N, ...]`` (quantized as the host would)."""
        arrays = [x] if isinstance(x, np.ndarray) else list(x)
        return self.simulator(saturate).run(arrays, trace=trace)

    def predict(self, x: np.ndarray | list[np.ndarray]) -> np.ndarray | list[np.ndarray]:
        """The real-valued outputs for float inputs ``[N, ...]``: one array, or a list for several outputs."""
        out = self.simulate(x).dequantized
        return out[0] if len(out) == 1 else out

    def csim(self, x: np.ndarray | list[np.ndarray] | None = None, count: int = 100, seed: int = 0,
             cycles: bool = False, saturate: bool = False) -> Any:
        """Build the project with g++, run the C-simulation on float inputs ``x`` (else ``count`` random
        integer inputs) and compare it with the simulator; returns a ``vaqf.backend.csim.CsimResult``
        (``bit_exact`` of ``inputs`` identical). Needs g++ and the ap_types headers (the ``csim`` extra)."""
        from vaqf.backend.csim import run_csim

        ints = None
        if x is not None:
            ints = self.simulator(saturate).quantize_inputs([x] if isinstance(x, np.ndarray) else list(x))
        return run_csim(self.path, ints, count=count, seed=seed, graph=self.graph, cycles=cycles)


def load(project: str | Path) -> Project:
    """Open a compiled project folder."""
    p = Path(project)
    if not p.is_dir():
        raise VaqfError(f"{p} is not a folder")
    check_compiled_together(p)
    graph = load_graph(p)
    design = Design.load(p / "design.json")
    return Project(p, graph, design)


#: (resolved folder, mtime of its graph files) -> its simulator, so repeated ``simulate(folder, x)`` calls
#: load and prepare the graph once; a recompiled folder has new mtimes and gets a new entry
_PROJECT_SIMS: dict[tuple[str, tuple[int, ...]], Simulator] = {}


def _project_simulator(folder: Path, saturate: bool = False) -> Simulator:
    stamp = tuple(f.stat().st_mtime_ns if f.exists() else 0 for f in (folder / "graph.json", folder / "graph.npz"))
    key = (str(folder.resolve()), stamp)
    sim = _PROJECT_SIMS.get(key)
    if sim is None:
        for old in [k for k in _PROJECT_SIMS if k[0] == key[0]]:
            del _PROJECT_SIMS[old]  # keep one simulator per folder
        check_compiled_together(folder)
        sim = _PROJECT_SIMS[key] = Simulator(load_graph(folder))
    sim.saturate = saturate
    return sim


def simulate(model_or_project: ModelLike | Project, x: np.ndarray | list[np.ndarray], weights: str = "keep",
             act_bits: int | None = None, calib: np.ndarray | str | Path | None = None,
             trace: bool = False, saturate: bool = False) -> SimResult:
    """Bit-accurate simulation on float inputs; a project folder (or :class:`Project`) runs its compiled graph,
    with a simulator cached per folder (by path and the graph files' modification times). NaN/inf inputs are an
    error, or with ``saturate`` set to 0 / saturated to the input type's range with a warning that counts them."""
    arrays = [x] if isinstance(x, np.ndarray) else list(x)
    if isinstance(model_or_project, Project):
        return model_or_project.simulate(arrays, trace=trace, saturate=saturate)
    if isinstance(model_or_project, (str, Path)) and Path(model_or_project).is_dir():
        return _project_simulator(Path(model_or_project), saturate).run(arrays, trace=trace)
    graph = load_model(model_or_project, weights, act_bits, calib)
    return Simulator(graph, saturate=saturate).run(arrays, trace=trace)


def estimate_design(graph: Graph, board: str | Board, knobs: dict[str, dict[str, int]]) -> dict:
    """The cost model's estimate of ``graph`` on ``board`` with ``knobs`` (unit instance -> knob -> value),
    as ``Design.estimate`` records it:

    - ``fps``: steady-state frames per second at the board's clock; ``cycles``: cycles per frame;
    - ``resources``: ``lut``, ``ff``, ``dsp``, ``bram18``, ``uram`` the design uses; ``utilization``: each as a
      fraction of the board's (1.0 = all of it);
    - ``layers``: per layer, ``node``, ``op``, ``unit`` (the instance running it), ``cycles``, ``ddr_bytes``
      (weight bytes read from DDR) and ``mode`` (the unit's per-layer form, when it has one);
    - ``units``: per unit instance, its resources.
    """
    return estimate(graph, _board(board), knobs).to_json()


__all__ = ["OUTPUT_ERROR_WARN", "CompileResult", "Exploration", "OutputError", "Project", "compile_model",
           "estimate_design", "exploration", "explore", "load", "load_model", "simulate", "units_of"]
