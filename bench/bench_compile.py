"""Compile speed: DeiT-tiny, -small and -base from ONNX to a complete HLS project, stage by stage, plus the g++
build of the project's C-simulation; and the design-space search of DeiT-base against 24, 30 and 60 FPS.

    .venv/bin/python bench/bench_compile.py [--models tiny,small,base] [--work DIR] [--no-build] [--no-search]
    .venv/bin/python bench/bench_compile.py --search-only     # the DeiT-base search alone

Models are the timm-shaped DeiTs of ``vaqf.frontend.torch.deit`` with random weights (compile cost does not
depend on the weight values), exported to ONNX once and cached under ``--work`` (default: a vaqf-bench folder
in the system temp dir). Each model is compiled in a fresh interpreter (no torch imported, so peak memory is
the compiler's) with the options of

    vaqf.compile_model(onnx, out, board="zcu102", weights="binary", act_bits=8, calib=<4 random images>)

split into the stages that function runs: import (ONNX -> graph, binarize the encoder's weights, calibrate
8-bit activations on 4 images through onnxruntime), passes (the default pipeline), search (the design space
of the graph and the fastest design within 80% of every ZCU102 resource), emission (render sources, DDR
weight image, graph.npz, self-check vectors computed by the simulator, and the project report: Pareto and
roofline plots and the per-tensor error of the simulator against the float model on the calibration images).
The stages mirror ``vaqf.api.compile_model`` (which passes ``vaqf.api._write_report`` to ``write_project``).
Then ``vaqf.backend.csim.build`` compiles the generated testbench and accelerator with g++ (-O2).

Peak memory: the process's peak resident set size during each stage (the kernel's VmHWM, reset at the start
of the stage through /proc/self/clear_refs; see bench/benchlib.py).

The search part imports DeiT-base at 8-, 6- and 4-bit activations (binary encoder weights; import time
reported separately), builds the three design spaces, and times ``vaqf.dse.search.select`` over all three
precisions for each target, as ``vaqf compile --fps F`` on a float model does.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import set_threads  # noqa: E402

THREADS = set_threads(sys.argv)

import numpy as np  # noqa: E402
from benchlib import DEFAULT_WORK, Stage, deit_onnx, deit_workload, fmt_s, machine, run_child, stage, table  # noqa: E402

BOARD = "zcu102"
CAP = 0.8
TARGETS = (None, 24.0, 30.0, 60.0)


def calibration(n: int = 4, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, 3, 224, 224)).astype(np.float32)


def compile_one(name: str, work: Path, build: bool) -> dict:
    """Compile DeiT-``name`` stage by stage (in this process); returns stage timings and the design."""
    from vaqf import api
    from vaqf.backend.csim import build as build_csim
    from vaqf.backend.emit import write_project
    from vaqf.dse.search import Candidate, select
    from vaqf.errors import InfeasibleDesign
    from vaqf.frontend.onnx_import import ImportOptions, import_onnx
    from vaqf.hw.board import get_board
    from vaqf.passes import optimize
    from vaqf.sim import simulator

    path = deit_onnx(name, work)
    calib = calibration()
    board = get_board(BOARD)
    stages: list[Stage] = []
    with stage("import", stages):
        graph = import_onnx(path, ImportOptions(weights="binary", act_bits=8, calib=calib))
    with stage("passes", stages):
        graph = optimize(graph).graph
    note = ""
    with stage("search", stages):
        cap = CAP
        cands = [Candidate.build(graph, board, cap, 8)]
        try:
            design, _ = select(cands, board, None, cap)
        except InfeasibleDesign as e:
            # still produce (and time) a complete project: the whole board, as --cap 1.0 would
            note = f"no 8-bit design within {CAP:.0%} ({str(e).splitlines()[1].strip()}); searched again with cap 1.0"
            cap = 1.0
            cands = [Candidate.build(graph, board, cap, 8)]
            design, _ = select(cands, board, None, cap)

    # inside the emission: the simulator computing the testbench's expected outputs, and the report
    # (vaqf.api.compile_model passes it as ``before_install``: Pareto plot, roofline, per-tensor errors of the
    # simulator against the float model on the calibration images)
    timing = {"tb_sim_s": 0.0, "tb_vectors": 0, "report_s": 0.0, "in_report": False}
    run_int = simulator.Simulator.run_int

    def timed_run_int(self, arrays, trace=False):  # noqa: ANN001, ANN202
        t0 = time.perf_counter()
        try:
            return run_int(self, arrays, trace)
        finally:
            if not timing["in_report"]:
                timing["tb_sim_s"] += time.perf_counter() - t0
                timing["tb_vectors"] += int(np.asarray(arrays[0]).shape[0])

    def add_report(folder: Path) -> None:
        t0 = time.perf_counter()
        timing["in_report"] = True
        try:
            api._write_report(folder, graph, design, board, cands, cap, path, calib)
        finally:
            timing["in_report"] = False
            timing["report_s"] += time.perf_counter() - t0

    simulator.Simulator.run_int = timed_run_int
    out = work / f"project_deit_{name}"
    try:
        with stage("emission", stages):
            write_project(graph, design, out, force=True, before_install=add_report)
    finally:
        simulator.Simulator.run_int = run_int
    if build:
        with stage("g++ build", stages):
            build_csim(out)
    est = design.estimate
    return {
        "model": name, "nodes": len(graph.nodes), "stages": [s.to_json() for s in stages], "note": note,
        "tb_sim_s": timing["tb_sim_s"], "tb_vectors": timing["tb_vectors"], "report_s": timing["report_s"],
        "project_mib": sum(f.stat().st_size for f in out.rglob("*") if f.is_file() and "build" not in f.parts)
        / 2**20,
        "weights_bin_mib": (out / "data" / "weights.bin").stat().st_size / 2**20,
        "fps": est["fps"], "utilization": est["utilization"], "knobs": design.knobs,
    }


def search_base(work: Path) -> dict:
    """DeiT-base over activation bits 8/6/4 and every knob: space construction and selection per target."""
    from vaqf.api import load_model
    from vaqf.dse.search import build_candidates, select
    from vaqf.errors import InfeasibleDesign
    from vaqf.hw.board import get_board

    path = deit_onnx("base", work)
    calib = calibration()
    board = get_board(BOARD)
    graphs: dict[int, object] = {}
    import_s = {}
    for bits in (8, 6, 4):
        t0 = time.perf_counter()
        graphs[bits] = load_model(path, "binary", bits, calib)
        import_s[bits] = time.perf_counter() - t0
    space_s = []
    for _ in range(3):  # the first run in a process also loads the compiled search kernels
        t0 = time.perf_counter()
        cands = build_candidates(lambda b: graphs[b], board, (8, 6, 4), CAP)
        space_s.append(time.perf_counter() - t0)
    sizes = {c.act_bits: _space_size(c.space) for c in cands}
    rows = []
    for target in TARGETS:
        t0 = time.perf_counter()
        try:
            design, _ = select(cands, board, target, CAP)
            dt = time.perf_counter() - t0
            est = design.estimate
            rows.append({"target": target, "search_s": dt, "act_bits": design.act_bits, "fps": est["fps"],
                         "utilization": est["utilization"], "knobs": design.knobs})
        except InfeasibleDesign as e:
            rows.append({"target": target, "search_s": time.perf_counter() - t0,
                         "infeasible": "; ".join(f"{d['act_bits']}-bit best {d['fps']:.1f} FPS, bound by {d['binding']}"
                                                 for d in e.best)})
    return {"import_s": import_s, "space_s": space_s, "space_sizes": sizes, "rows": rows}


def _space_size(space: object) -> dict[str, int]:
    """Units, knob combinations of the whole space, and designs left to evaluate after Pareto pruning."""
    return {"units": len(space.units), "designs": int(space.raw_combinations), "evaluated": len(space)}


def _knobs_short(knobs: dict[str, dict[str, int]]) -> str:
    parts = []
    for unit, ks in sorted(knobs.items()):
        if ks:
            parts.append(unit + "(" + ",".join(f"{k}={v}" for k, v in sorted(ks.items())) + ")")
    return " ".join(parts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="tiny,small,base")
    ap.add_argument("--work", type=Path, default=DEFAULT_WORK)
    ap.add_argument("--threads", type=int, default=1, help="BLAS (and onnxruntime) threads (default 1)")
    ap.add_argument("--no-build", action="store_true", help="skip the g++ build of the projects")
    ap.add_argument("--no-search", action="store_true", help="skip the DeiT-base search over targets")
    ap.add_argument("--search-only", action="store_true", help="only the DeiT-base search over targets")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    ap.add_argument("--search-child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(compile_one(args.one, args.work, not args.no_build)))
        return
    if args.search_child:
        print(json.dumps(search_base(args.work)))
        return

    print(f"# machine: {machine()}")
    print(f"# command: .venv/bin/python bench/bench_compile.py {' '.join(sys.argv[1:])}".rstrip())
    models = [] if args.search_only else [m.strip() for m in args.models.split(",") if m.strip()]
    if models:
        compile_tables(models, args)
    if not args.no_search:
        search_table(args)


def compile_tables(models: list[str], args: argparse.Namespace) -> None:
    for m in models:
        deit_onnx(m, args.work)
    results = []
    for m in models:
        child = ["--one", m, "--work", str(args.work)] + (["--no-build"] if args.no_build else [])
        results.append(run_child(Path(__file__), child))

    print("\n## Compile: ONNX -> HLS project (weights binary, act_bits 8, 4 calibration images, zcu102)\n")
    names = [s["name"] for s in results[0]["stages"]]
    headers = ["model", "MACs", "weights", "nodes"] + [f"{n} s" for n in names] + \
        ["total s (excl. g++)", "peak RSS MiB", "project MiB"]
    rows = []
    for r in results:
        w = deit_workload(r["model"])
        st = {s["name"]: s for s in r["stages"]}
        total = sum(s["wall_s"] for s in r["stages"] if s["name"] != "g++ build")
        peak = max(s["peak_rss_mib"] for s in r["stages"] if s["name"] != "g++ build")
        rows.append([f"DeiT-{r['model']}", f"{w['macs'] / 1e9:.2f} G", f"{w['weights'] / 1e6:.1f} M", r["nodes"]]
                    + [fmt_s(st[n]["wall_s"]) for n in names] + [fmt_s(total), f"{peak:.0f}",
                                                                 f"{r['project_mib']:.1f}"])
    print(table(headers, rows))
    print("\n## Peak RSS per stage (MiB; RSS at the stage's start in brackets)\n")
    print(table(["model"] + names,
                [[f"DeiT-{r['model']}"] + [f"{s['peak_rss_mib']:.0f} ({s['rss_before_mib']:.0f})"
                                           for s in r["stages"]] for r in results]))
    print(f"\npeak memory method: {results[0]['stages'][0]['peak_method']}")
    for r in results:
        if r["note"]:
            print(f"DeiT-{r['model']}: {r['note']}")
    print("\n## Inside emission, and the chosen design\n")
    print(table(["model", "emission s", "report s", "self-check vectors", "their simulation s", "weights.bin MiB",
                 "est. FPS", "LUT", "DSP", "BRAM18", "knobs"],
                [[f"DeiT-{r['model']}", fmt_s(next(s["wall_s"] for s in r["stages"] if s["name"] == "emission")),
                  fmt_s(r["report_s"]), r["tb_vectors"], fmt_s(r["tb_sim_s"]), f"{r['weights_bin_mib']:.2f}",
                  f"{r['fps']:.1f}", f"{r['utilization']['lut']:.0%}", f"{r['utilization']['dsp']:.0%}",
                  f"{r['utilization']['bram18']:.0%}", _knobs_short(r["knobs"])] for r in results]))



def search_table(args: argparse.Namespace) -> None:
    s = run_child(Path(__file__), ["--search-child", "--work", str(args.work)])
    print("\n## DeiT-base design-space search, zcu102, activation bits {8, 6, 4}, cap 80%\n")
    print("import (not search): " + ", ".join(f"{b}-bit {fmt_s(t)} s" for b, t in s["import_s"].items()))
    print("design spaces of the 3 precisions (built once, then queried per target): "
          + ", ".join(f"{fmt_s(t)} s" for t in s["space_s"]) + " (3 runs in one process; the first loads the "
          "compiled kernels)")
    for b, z in s["space_sizes"].items():
        print(f"  {b}-bit: {z['units']} units, {z['designs']:.3g} knob combinations, {z['evaluated']} evaluated "
              "after Pareto pruning")
    rows = []
    for r in s["rows"]:
        tgt = "max FPS" if r["target"] is None else f"{r['target']:g} FPS"
        if "infeasible" in r:
            rows.append([tgt, f"{r['search_s'] * 1e3:.1f}", "none", "", "", "", "",
                         "InfeasibleDesign: " + r["infeasible"]])
            continue
        u = r["utilization"]
        rows.append([tgt, f"{r['search_s'] * 1e3:.1f}", r["act_bits"], f"{r['fps']:.1f}", f"{u['lut']:.0%}",
                     f"{u['dsp']:.0%}", f"{u['bram18']:.0%}", _knobs_short(r["knobs"])])
    print("select: the query for one target over the three spaces (for an unreachable target, including the "
          "diagnosis of the binding resource)\n")
    print(table(["target", "select ms", "act bits", "est. FPS", "LUT", "DSP", "BRAM18", "knobs / why none"], rows))


if __name__ == "__main__":
    main()
