"""Simulator throughput against onnxruntime running the float model, on the same inputs, side by side.

    .venv/bin/python bench/bench_simulator.py [--threads 1] [--images 16] [--repeat 3] [--work DIR]

Models:
- DeiT-tiny (random init, 224x224) imported with int8 weights and 8-bit activations (calibrated on 4 other
  random images), and again with binary encoder weights; onnxruntime runs the float DeiT-tiny ONNX.
- The built-in example MLP (``vaqf.examples.example_model("mlp")``: QONNX 64-64-32-10, int8/binary/int4
  weights, 8-bit activations); onnxruntime runs its float counterpart (the same float weights and biases,
  every quantizer replaced by an identity). Inputs: scikit-learn's digits (tiled to the input count).

Throughput is inputs per second of wall time, the median of --repeat timed runs (more for fast cases: as
many as fit in about 0.6 s, up to 200) after two warm-ups, the simulator and onnxruntime alternating so both
see the same machine load. The simulator's time includes
quantizing the float inputs (``Simulator.run``). ``--threads`` caps both: OpenBLAS (numpy, before import) and
onnxruntime's intra-op pool. The simulator is bit-exact with the generated C++ (tests/integration and
tests/ops check that, and bench_hls4ml.py counts it); here its outputs are compared with the float model's
(argmax agreement and relative L2), for information. The last table splits the simulator's CPU time on
DeiT-tiny (int8) by op kind.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import set_threads  # noqa: E402

THREADS = set_threads(sys.argv)

import argparse  # noqa: E402
import collections  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
from benchlib import DEFAULT_WORK, deit_onnx, float_counterpart, machine, ort_session, table  # noqa: E402


def _digits(n: int) -> tuple[np.ndarray, np.ndarray]:
    try:
        from sklearn.datasets import load_digits

        x, y = load_digits(return_X_y=True)
        x = (x / 16.0).astype(np.float32)
    except ImportError:  # the example ships 360 held-out digits
        from vaqf.examples import example_inputs

        x, y = example_inputs("mlp")
    reps = -(-n // len(x))
    return np.tile(x, (reps, 1))[:n], np.tile(y, reps)[:n]


def compare(name: str, graph, sess, x: np.ndarray, batch: int, repeat: int) -> dict:
    """Throughput of the simulator on ``graph`` and of onnxruntime on ``sess`` over the same inputs ``x``."""
    from vaqf.sim.simulator import Simulator

    sim = Simulator(graph)
    in_name = sess.get_inputs()[0].name

    def run_sim():
        return np.concatenate([sim.run([x[i:i + batch]]).dequantized[0] for i in range(0, len(x), batch)])

    def run_ort():
        return np.concatenate([sess.run(None, {in_name: x[i:i + batch]})[0] for i in range(0, len(x), batch)])

    run_sim(), run_ort()  # warm-up (plans, sessions, compiled kernels)
    # a second warm-up (first touches of recycled memory) that also sizes the repetitions: fast cases run
    # as many times as fit in about 0.6 s (up to 200), so that a median is not at the mercy of one
    # preempted run on a shared machine; then alternate, so that both see the same load
    spent = _once(run_sim)[0] + _once(run_ort)[0]
    sw, sc, ow, oc = [], [], [], []
    for _ in range(max(repeat, min(200, int(0.6 / max(spent, 1e-9))))):
        w, c, got = _once(run_sim)
        sw.append(w), sc.append(c)
        w, c, ref = _once(run_ort)
        ow.append(w), oc.append(c)
    got, ref = np.asarray(got).reshape(len(x), -1), np.asarray(ref).reshape(len(x), -1)
    n = len(x)
    return {"model": name, "inputs": n, "batch": batch,
            "ort_ips": n / statistics.median(ow), "sim_ips": n / statistics.median(sw),
            "ort_cpu_ms": 1e3 * statistics.median(oc) / n, "sim_cpu_ms": 1e3 * statistics.median(sc) / n,
            "agree": float((got.argmax(1) == ref.argmax(1)).mean()),
            "rel_l2": float(np.linalg.norm(got - ref) / np.linalg.norm(ref))}


def _once(fn) -> tuple[float, float, object]:
    c0, t0 = time.process_time(), time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, time.process_time() - c0, out


def op_breakdown(graph, x: np.ndarray) -> list[tuple[str, int, float]]:
    """CPU seconds of one simulator run on ``x``, by op kind."""
    from vaqf.sim.simulator import Simulator

    sim = Simulator(graph)
    spent: dict[str, float] = collections.defaultdict(float)
    count: collections.Counter = collections.Counter()
    run_node = sim.run_node

    def timed(node, args):  # noqa: ANN001, ANN202
        c0 = time.process_time()
        try:
            return run_node(node, args)
        finally:
            spent[node.op] += time.process_time() - c0
            count[node.op] += 1

    sim.run_node = timed
    c0 = time.process_time()
    ints = sim.quantize_inputs([x])
    spent["(quantize inputs)"] += time.process_time() - c0
    count["(quantize inputs)"] += 1
    sim.run_int(ints)
    return sorted(((k, count[k], v) for k, v in spent.items()), key=lambda r: -r[2])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=1, help="BLAS and onnxruntime threads (default 1)")
    ap.add_argument("--images", type=int, default=16, help="DeiT-tiny images per timed run")
    ap.add_argument("--mlp-inputs", type=int, default=10_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--work", type=Path, default=DEFAULT_WORK)
    args = ap.parse_args()

    import onnx

    import vaqf
    from vaqf.examples import example_model

    print(f"# machine: {machine()}")
    print(f"# command: .venv/bin/python bench/bench_simulator.py {' '.join(sys.argv[1:])}".rstrip())
    print(f"# threads: {THREADS} (OpenBLAS and onnxruntime intra-op)")
    rows = []

    mlp = example_model("mlp")
    mlp_graph = vaqf.load_model(mlp)
    mlp_sess = ort_session(float_counterpart(mlp), THREADS)
    xm, _ = _digits(args.mlp_inputs)
    rows.append(compare("MLP 64-64-32-10 (QONNX)", mlp_graph, mlp_sess, xm, len(xm), args.repeat))
    rows.append(compare("MLP 64-64-32-10 (QONNX)", mlp_graph, mlp_sess, xm[:1000], 1, args.repeat))

    path = deit_onnx("tiny", args.work)
    calib = np.random.default_rng(1).normal(size=(4, 3, 224, 224)).astype(np.float32)
    x = np.random.default_rng(2).normal(size=(args.images, 3, 224, 224)).astype(np.float32)
    sess = ort_session(onnx.load(str(path)), THREADS)
    graphs = {}
    for weights in ("int8", "binary"):
        graphs[weights] = vaqf.load_model(path, weights=weights, act_bits=8, calib=calib)
        label = f"DeiT-tiny, {'int8' if weights == 'int8' else 'binary encoder'} weights, 8-bit act."
        rows.append(compare(label, graphs[weights], sess, x, len(x), args.repeat))
    rows.append(compare("DeiT-tiny, int8 weights, 8-bit act.", graphs["int8"], sess, x[:4], 1, 1))

    print("\n## Throughput, inputs per second (median wall time)\n")
    print(table(["model", "inputs", "batch", "onnxruntime float /s", "vaqf simulator /s", "sim / ort",
                 ">= 0.5?", "CPU ms/input ort", "CPU ms/input sim", "argmax agree", "rel. L2"],
                [[r["model"], r["inputs"], r["batch"], f"{r['ort_ips']:.4g}", f"{r['sim_ips']:.4g}",
                  f"{r['sim_ips'] / r['ort_ips']:.2f}", "yes" if r["sim_ips"] >= 0.5 * r["ort_ips"] else "no",
                  f"{r['ort_cpu_ms']:.3g}", f"{r['sim_cpu_ms']:.3g}", f"{r['agree']:.3f}", f"{r['rel_l2']:.3f}"]
                 for r in rows]))

    br = op_breakdown(graphs["int8"], x)
    total = sum(v for _, _, v in br)
    print(f"\n## Simulator CPU time by op kind, DeiT-tiny int8, {len(x)} images in one batch\n")
    print(table(["op", "nodes", "CPU ms per image", "share"],
                [[k, n, f"{1e3 * v / len(x):.1f}", f"{v / total:.0%}"] for k, n, v in br]
                + [["total", sum(n for _, n, _ in br), f"{1e3 * total / len(x):.1f}", "100%"]]))


if __name__ == "__main__":
    main()
