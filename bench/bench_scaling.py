"""How compile time and simulator time grow with the model: DeiT-tiny -> -small -> -base.

    .venv/bin/python bench/bench_scaling.py [--threads 1] [--models tiny,small,base] [--work DIR]

For each model (random init, 224x224, exported once and cached under --work, as in bench_compile.py), in a
fresh interpreter: the compile stages of ``vaqf.compile_model(onnx, out, weights="binary", act_bits=8,
calib=<4 random images>)`` (import, passes, search, emission; no g++ build), then the simulator on a batch of
images (tiny 8, small 4, base 2: fewer for the larger models to stay within minutes) and onnxruntime on the
float model with the same images. Alongside: MACs per image and weights, and the cost per unit of work
(compile seconds per million weights, simulator and onnxruntime milliseconds per GMAC).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import set_threads  # noqa: E402

THREADS = set_threads(sys.argv)

import argparse  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
from benchlib import DEFAULT_WORK, deit_onnx, deit_workload, fmt_s, machine, ort_session, run_child, table  # noqa: E402

IMAGES = {"tiny": 8, "small": 4, "base": 2}


def measure(name: str, work: Path) -> dict:
    """In this process: compile stages (via bench_compile), then simulator and onnxruntime throughput."""
    import onnx
    from bench_compile import compile_one

    from vaqf.ir.serialize import load_graph
    from vaqf.sim.simulator import Simulator

    comp = compile_one(name, work, build=False)
    graph = load_graph(work / f"project_deit_{name}")
    n = IMAGES.get(name, 2)
    x = np.random.default_rng(2).normal(size=(n, 3, 224, 224)).astype(np.float32)
    sim = Simulator(graph)
    sim.run([x[:1]])  # warm-up
    c0, t0 = time.process_time(), time.perf_counter()
    sim.run([x])
    sim_wall, sim_cpu = time.perf_counter() - t0, time.process_time() - c0
    sess = ort_session(onnx.load(str(deit_onnx(name, work))), THREADS)
    sess.run(None, {"x": x[:1]})
    c0, t0 = time.process_time(), time.perf_counter()
    sess.run(None, {"x": x})
    ort_wall, ort_cpu = time.perf_counter() - t0, time.process_time() - c0
    return {**comp, "images": n, "sim_wall_s": sim_wall / n, "sim_cpu_s": sim_cpu / n, "ort_wall_s": ort_wall / n,
            "ort_cpu_s": ort_cpu / n}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=1, help="BLAS and onnxruntime threads (default 1)")
    ap.add_argument("--models", default="tiny,small,base")
    ap.add_argument("--work", type=Path, default=DEFAULT_WORK)
    ap.add_argument("--one", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(measure(args.one, args.work)))
        return

    print(f"# machine: {machine()}")
    print(f"# command: .venv/bin/python bench/bench_scaling.py {' '.join(sys.argv[1:])}".rstrip())
    print(f"# threads: {THREADS} (OpenBLAS and onnxruntime intra-op)")
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    for m in models:
        deit_onnx(m, args.work)
    res = [run_child(Path(__file__), ["--one", m, "--work", str(args.work), "--threads", str(THREADS)])
           for m in models]

    print("\n## Work, compile time and simulator time per model\n")
    rows = []
    for r in res:
        w = deit_workload(r["model"])
        st = {s["name"]: s["wall_s"] for s in r["stages"]}
        total = sum(st.values())
        peak = max(s["peak_rss_mib"] for s in r["stages"])
        rows.append([f"DeiT-{r['model']}", f"{w['macs'] / 1e9:.2f}", f"{w['weights'] / 1e6:.1f}",
                     fmt_s(st["import"]), fmt_s(st["passes"]), fmt_s(st["search"]), fmt_s(st["emission"]),
                     fmt_s(total), f"{peak:.0f}", r["images"], f"{r['sim_wall_s']:.2f}", f"{r['sim_cpu_s']:.2f}",
                     f"{r['ort_wall_s']:.3f}"])
    print(table(["model", "GMAC/image", "M weights", "import s", "passes s", "search s", "emission s",
                 "compile s", "peak RSS MiB", "images", "simulator s/image", "simulator CPU s/image",
                 "onnxruntime s/image"], rows))

    print("\n## Cost per unit of work, and growth relative to DeiT-tiny\n")
    base = res[0]
    w0 = deit_workload(base["model"])
    t0 = sum(s["wall_s"] for s in base["stages"])
    rows = []
    for r in res:
        w = deit_workload(r["model"])
        total = sum(s["wall_s"] for s in r["stages"])
        rows.append([f"DeiT-{r['model']}", f"{w['macs'] / w0['macs']:.1f}x", f"{w['weights'] / w0['weights']:.1f}x",
                     f"{total / t0:.1f}x", f"{r['sim_wall_s'] / base['sim_wall_s']:.1f}x",
                     f"{total / (w['weights'] / 1e6):.2f}", f"{1e3 * r['sim_wall_s'] / (w['macs'] / 1e9):.0f}",
                     f"{1e3 * r['ort_wall_s'] / (w['macs'] / 1e9):.0f}"])
    print(table(["model", "MACs", "weights", "compile time", "simulator time", "compile s per M weights",
                 "simulator ms per GMAC", "onnxruntime ms per GMAC"], rows))


if __name__ == "__main__":
    main()
