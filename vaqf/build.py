"""``vaqf build``: VAQF's loop in one command, from a frame-rate target to a trained, compiled, checked design.

1. **Precision.** The model is quantized at each candidate activation precision (``bits``, default 8, 6, 4)
   and exported to QONNX before training (the design space is set by the layer shapes and the precisions; the
   trained values move it only slightly, through the widths their ranges give); the search gives each
   precision's best design on the board. VAQF's rule picks the highest precision whose best design meets the
   target (``vaqf.dse.search.select``).
2. **Training.** ``vaqf train`` at that precision (float training once, shared by every precision, when
   there is no float checkpoint).
3. **Compilation.** ``vaqf compile`` of the trained QONNX at the target: the cheapest design that meets it.
   Should the trained model's designs fall short of the target after all, the next lower precision is tried.
4. **Check.** The project's g++ C-simulation of ``csim_images`` validation images against the simulator
   (bit-exact or an error), and the simulator's accuracy on the validation images.

With ``accuracy_floor`` the precisions that meet the target are trained from the highest down, stopping at
the first whose simulated accuracy reaches the floor; the report shows accuracy and FPS against bits.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from vaqf import progress
from vaqf.errors import InfeasibleDesign, VaqfError

log = logging.getLogger(__name__)

#: training images the untrained models of the precision search are calibrated on
SEARCH_CALIB_IMAGES = 16


@dataclass
class PrecisionRow:
    """One activation precision: its best design and, when trained, what the trained model gives."""

    act_bits: int
    best_fps: float | None             # the fastest design within the cap (None: nothing fits)
    meets: bool                        # some design within the cap meets the target
    binding: str | None = None         # what stops the best design from going faster
    trained: bool = False
    float_accuracy: float | None = None
    qat_accuracy: float | None = None
    sim_accuracy: float | None = None
    compiled_fps: float | None = None
    resources: dict | None = None
    csim: dict | None = None
    model: str | None = None
    project: str | None = None


@dataclass
class BuildResult:
    board: str
    target_fps: float
    cap: float
    accuracy_floor: float | None
    rows: list[PrecisionRow]
    chosen_bits: int | None
    reached_floor: bool | None
    output: Path
    seconds: float = 0.0
    float_checkpoint: str | None = None
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        d = asdict(self)
        d["output"] = str(self.output)
        d["fps_by_bits"] = {r.act_bits: r.best_fps for r in self.rows}
        d["accuracy_by_bits"] = {r.act_bits: r.sim_accuracy for r in self.rows if r.trained}
        return d

    def table(self) -> str:
        def f(v: float | None, fmt: str) -> str:
            width = int(fmt.split(".")[0] or 0)
            return "-".rjust(width) if v is None else format(v, fmt)

        lines = [f"target    {self.target_fps:g} FPS on {self.board}, designs within {self.cap * 100:.0f}% of each "
                 "resource" + (f", accuracy floor {self.accuracy_floor:g}" if self.accuracy_floor is not None else ""),
                 f"{'bits':>4} {'best FPS':>10} {'meets':>5}  {'float':>7} {'QAT':>7} {'sim':>7} {'compiled FPS':>12}  "
                 "C-simulation"]
        for r in self.rows:
            cs = "-" if r.csim is None else f"{r.csim['bit_exact']}/{r.csim['inputs']} bit-exact"
            mark = "  <- chosen" if r.act_bits == self.chosen_bits else ""
            lines.append(f"{r.act_bits:4d} {f(r.best_fps, '10.1f')} {'yes' if r.meets else 'no':>5}  "
                         f"{f(r.float_accuracy, '7.4f')} {f(r.qat_accuracy, '7.4f')} {f(r.sim_accuracy, '7.4f')} "
                         f"{f(r.compiled_fps, '12.1f')}  {cs}{mark}")
        chosen = next((r for r in self.rows if r.act_bits == self.chosen_bits), None)
        if chosen is not None:
            lines.append(f"chosen    {chosen.act_bits}-bit activations: simulated accuracy "
                         f"{f(chosen.sim_accuracy, '.4f')} at {f(chosen.compiled_fps, '.1f')} FPS")
            lines.append(f"project   {chosen.project}")
            lines.append(f"model     {chosen.model}")
        lines.extend(f"note      {n}" for n in self.notes)
        lines.append(f"report    {self.output / 'build.json'}")
        return "\n".join(lines)


def precision_candidates(opts: object, board: object, bits: list[int], cap: float) -> list:
    """The design space of the model at each activation precision (untrained, calibrated on a few images)."""
    import torch

    import vaqf
    from vaqf.dse.search import Candidate
    from vaqf.frontend.torch.driver import _build, read_data
    from vaqf.frontend.torch.export import export_qonnx
    from vaqf.frontend.torch.qat import calibrate, quantize_vit

    probe = opts.num_classes if opts.num_classes is not None else 2
    _, shape = _build(opts, probe)
    train, val = read_data(opts, shape, opts.num_classes)
    num_classes = opts.num_classes or int(max(train.y.max(), val.y.max())) + 1
    x = torch.from_numpy(train.x[:SEARCH_CALIB_IMAGES])
    cands = []
    with tempfile.TemporaryDirectory(prefix="vaqf-build-") as td:
        for k in sorted(set(bits), reverse=True):
            if not 2 <= k <= 16:
                raise VaqfError(f"--search-bits: activation bits must be within 2..16, got {k}")
            torch.manual_seed(opts.seed)
            model, _ = _build(opts, num_classes)
            q = quantize_vit(model, act_bits=k, weights=opts.weights)
            calibrate(q, [x])
            path = export_qonnx(q, Path(td) / f"a{k}.onnx", torch.zeros(shape))
            graph = vaqf.load_model(path)
            cands.append(Candidate.build(graph, board, cap, k))
    return cands


def _row(cand: object, board: object, fps: float, cap: float) -> PrecisionRow:
    from vaqf.dse.search import select

    try:
        best: float | None = float(select([cand], board, None, cap)[0].estimate["fps"])
    except InfeasibleDesign:
        best = None
    try:
        select([cand], board, fps, cap)
        meets, binding = True, None
    except InfeasibleDesign as e:
        meets = False
        binding = e.best[0].get("binding") if isinstance(e.best, list) and e.best else None
    return PrecisionRow(cand.act_bits, best, meets, binding)


def run_build(opts: object, out_dir: Path, *, board: str, fps: float, cap: float = 0.8,
              bits: list[int] | None = None, accuracy_floor: float | None = None, csim_images: int = 8,
              force: bool = False) -> BuildResult:
    """VAQF's loop (module docstring). ``opts`` are :class:`~vaqf.frontend.torch.driver.TrainOptions` (their
    ``output`` and ``act_bits`` are set here per precision)."""
    from vaqf.api import _board, compile_model
    from vaqf.backend.csim import run_csim
    from vaqf.dse.search import select
    from vaqf.frontend.torch.distributed import under_launcher
    from vaqf.frontend.torch.driver import _build, _is_deit, read_data, run_train
    from vaqf.sim.simulator import Simulator

    started = time.perf_counter()
    if under_launcher():
        raise VaqfError("vaqf build runs in one process (it compiles and C-simulates); under torchrun run "
                        "`vaqf train`, then `vaqf compile` the result")
    if not _is_deit(opts.model):
        raise VaqfError(f"vaqf build trains activation precisions with QAT, which the DeiT models have; {opts.model} "
                        "trains in float: use `vaqf train`, then `vaqf compile --calib` at the precision you want")
    if not fps > 0:
        raise VaqfError(f"--fps must be positive, got {fps}")
    if accuracy_floor is not None and not 0 <= accuracy_floor <= 1:
        raise VaqfError(f"--accuracy-floor is an accuracy in [0, 1], got {accuracy_floor}")
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()) and not force:
        raise VaqfError(f"{out_dir} exists and is not empty; pass --force to replace what vaqf build writes there")
    out_dir.mkdir(parents=True, exist_ok=True)
    b = _board(board)
    bits = sorted(set(bits or [8, 6, 4]), reverse=True)
    with progress.stage(f"searching the designs of {opts.model} at {', '.join(map(str, bits))}-bit activations"):
        cands = precision_candidates(opts, b, bits, cap)
    rows = [_row(c, b, fps, cap) for c in cands]
    result = BuildResult(b.name, fps, cap, accuracy_floor, rows, None, None, out_dir)
    meeting = [r for r in rows if r.meets]
    if not meeting:
        (out_dir / "build.json").write_text(json.dumps(result.to_json(), indent=2, default=str) + "\n")
        select(cands, b, fps, cap)  # raises InfeasibleDesign naming each precision's best and what binds
        raise AssertionError("unreachable: no precision meets the target but the search found a design")
    progress.note("best design per precision: " + ", ".join(
        f"{r.act_bits} bits {r.best_fps:.1f} FPS" if r.best_fps is not None else f"{r.act_bits} bits none fits"
        for r in rows) + f"; {meeting[0].act_bits} bits is the highest that meets {fps:g} FPS")

    # float training once, shared by the precisions
    base = opts
    float_epochs = opts.float_epochs if opts.float_epochs is not None else (0.0 if opts.checkpoint else 30.0)
    if float_epochs > 0:
        fopts = replace(opts, output=out_dir / "float" / "float.onnx", epochs=0.0, act_epochs=0.0,
                        float_epochs=float_epochs, sim_images=0, force=True)
        with progress.stage(f"float training ({float_epochs:g} epochs)"):
            fres = run_train(fopts)
        base = replace(opts, checkpoint=str(fres.state_dict), float_epochs=0.0)
        result.float_checkpoint = str(fres.state_dict)
    _, shape = _build(opts, opts.num_classes if opts.num_classes is not None else 2)
    _, val = read_data(opts, shape, opts.num_classes)

    for row in meeting:
        k = row.act_bits
        folder = out_dir / f"a{k}"
        topts = replace(base, act_bits=k, output=folder / "model.onnx", force=True, resume=None)
        with progress.stage(f"training at {k}-bit activations"):
            tres = run_train(topts)
        row.trained = True
        row.float_accuracy, row.qat_accuracy, row.sim_accuracy = tres.float_accuracy, tres.qat_accuracy, \
            tres.sim_accuracy
        row.model = str(tres.model)
        try:
            cres = compile_model(tres.model, folder / "hls", board=b, fps=fps, cap=cap, force=True)
        except InfeasibleDesign as e:
            row.meets = False
            why = (str(e).splitlines() + [""])[1].strip()
            result.notes.append(f"{k} bits: the trained model's designs do not reach {fps:g} FPS (before training the "
                                f"best was {row.best_fps:.1f}): {why}; trying fewer bits")
            continue
        est = cres.design.estimate
        row.compiled_fps, row.resources, row.project = float(est["fps"]), est.get("resources"), str(cres.project)
        if row.best_fps is not None and row.compiled_fps > row.best_fps * (1 + 1e-9):
            result.notes.append(f"{k} bits: the trained model's design ({row.compiled_fps:.1f} FPS) is faster than "
                                f"the search's best ({row.best_fps:.1f}); the design space differs with the trained "
                                "values")
        if csim_images > 0:
            n = min(csim_images, len(val))
            images = Simulator(cres.graph).quantize_inputs([val.x[:n]])
            with progress.stage(f"C-simulating {n} validation images"):
                cs = run_csim(cres.project, images, graph=cres.graph)
            row.csim = cs.to_json()
            if cs.bit_exact != cs.inputs:
                (out_dir / "build.json").write_text(json.dumps(result.to_json(), indent=2, default=str) + "\n")
                raise VaqfError(f"{k} bits: the C-simulation of {cres.project} differs from the simulator on "
                                f"{cs.inputs - cs.bit_exact} of {cs.inputs} validation images")
        result.chosen_bits = k
        if accuracy_floor is None:
            break
        if row.sim_accuracy is not None and row.sim_accuracy >= accuracy_floor:
            result.reached_floor = True
            break
        result.reached_floor = False
    result.seconds = time.perf_counter() - started
    (out_dir / "build.json").write_text(json.dumps(result.to_json(), indent=2, default=str) + "\n")
    if result.chosen_bits is None:
        raise VaqfError(f"no trained precision meets {fps:g} FPS on {b.name}: " + "; ".join(result.notes)
                        + f"; report {out_dir / 'build.json'}")
    if accuracy_floor is not None and not result.reached_floor:
        tried = ", ".join(f"{r.act_bits} bits {r.sim_accuracy:.4f}" for r in rows if r.trained and r.sim_accuracy
                          is not None)
        raise VaqfError(f"no precision that meets {fps:g} FPS reaches the accuracy floor {accuracy_floor:g} (simulated "
                        f"validation accuracy: {tried}); lower --accuracy-floor or --fps, or train longer (--epochs); "
                        f"report {out_dir / 'build.json'}")
    return result
