"""Benchmark: how long the design-space search takes, and whether it finds what exhaustive search finds.

Cases:
- the built-in example MLP (QONNX, three GEMM units) on an Ultra96-V2;
- a synthetic DeiT-base encoder: 12 blocks x (768->2304, 768->768, 768->3072, 3072->768) dense layers
  with binary weights over 197 tokens, activations at 8, 6 and 4 bits, on a ZCU102 at 24, 30 and 60 FPS
  and without a target. (Dense layers only: the attention, softmax, LayerNorm and GELU units of the real
  model are not part of this graph.)

For every case the search (``vaqf.dse.search``) is timed (median of --repeat runs, graph import excluded)
and compared with exhaustive enumeration of every knob combination through ``vaqf.hw.model.estimate``,
applying the documented rule. Run:

    .venv/bin/python bench/bench_search.py [--repeat 5] [--quick]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.helpers import RES, bulk_designs  # noqa: E402
from vaqf.api import load_model  # noqa: E402
from vaqf.dse.search import build_candidates, select  # noqa: E402
from vaqf.errors import InfeasibleDesign  # noqa: E402
from vaqf.examples import example_model  # noqa: E402
from vaqf.hw.board import Board, get_board  # noqa: E402
from vaqf.ir import BinaryType, Graph, IntType, TensorInfo, Value  # noqa: E402
from vaqf.ops import get_spec  # noqa: E402
from vaqf.ops.common import requant_params  # noqa: E402
from vaqf.ops.dense import finalize_dense_attrs  # noqa: E402

# ---- the synthetic DeiT-base encoder ---------------------------------------------------------------

def _dense(g: Graph, x: Value, weight: np.ndarray, out_bits: int, name: str) -> Value:
    n_out = weight.shape[0]
    w_scale = np.full(n_out, 1.0 / np.sqrt(weight.shape[1]))
    attrs = {"weight": weight, "w_type": BinaryType(), "w_scale": w_scale, "bias": np.zeros(n_out, np.int64),
             "relu": True, "requant": None}
    out = g.new_value(name, TensorInfo(x.info.shape[:-1] + (n_out,), IntType(32)))
    node = g.add_node("dense", [x], [out], attrs, name=name)
    finalize_dense_attrs(node, x.info)
    in_scale = x.info.scale[0] * w_scale
    node.attrs["requant"] = requant_params(in_scale, 0.05, n_out, IntType(out_bits, signed=False), 0, "HALF_EVEN",
                                           name)
    out.info = get_spec("dense").infer(node, [x.info])[0]
    return out


def deit_base_dense(bits: int, weights: dict[str, np.ndarray], blocks: int = 12, dim: int = 768,
                    hidden: int = 3072, tokens: int = 197) -> Graph:
    """The encoder's dense layers, chained block by block (the qkv output feeds nothing here)."""
    g = Graph(f"deit_base_dense_a{bits}")
    cur = g.add_input("x", TensorInfo((tokens, dim), IntType(bits, signed=False), [0.05], 0))
    for i in range(blocks):
        for name, (n, k) in {"qkv": (3 * dim, dim), "proj": (dim, dim), "fc1": (hidden, dim),
                             "fc2": (dim, hidden)}.items():
            key = f"{name}{i}"
            if key not in weights:
                rng = np.random.default_rng(i * 4 + len(name))
                weights[key] = np.where(rng.random((n, k)) < 0.5, -1, 1).astype(np.int8)
            src = cur
            out = _dense(g, src, weights[key], bits, key)
            if name != "qkv":
                cur = out
    g.outputs.append(cur)
    return g


# ---- exhaustive enumeration ----------------------------------------------------------------------

def exhaustive(graph: Graph, board: Board) -> tuple[np.ndarray, np.ndarray]:
    """Cycles and resources (columns RES) of every knob combination (tests.helpers.bulk_designs: each
    unit's options through unit_cost, summed over every combination as estimate() does)."""
    cycles, res, _ = bulk_designs(graph, board)
    return cycles, res


def oracle(per_bits: dict[int, tuple[np.ndarray, np.ndarray]], board: Board, target: float | None,
           cap: float) -> tuple | None:
    """(bits, cycles, LUT) of the documented choice, or None when nothing qualifies."""
    caps = np.array([board.resources()[r] for r in RES], dtype=np.float64)
    lut, dsp, bram = (RES.index(r) for r in ("lut", "dsp", "bram18"))
    for bits in sorted(per_bits, reverse=True):
        cycles, res = per_bits[bits]
        mask = np.all(res <= (cap + 1e-12) * caps, axis=1)
        if target is not None:
            mask &= board.clock_hz / np.maximum(cycles, 1) >= target
        idx = np.flatnonzero(mask)
        if idx.size == 0:
            continue
        keys = (cycles[idx], res[idx, lut], res[idx, dsp], res[idx, bram]) if target is None else \
            (res[idx, lut], res[idx, dsp], res[idx, bram], cycles[idx])
        best = idx[np.lexsort(keys[::-1])[0]]
        return bits, int(cycles[best]), int(res[best, lut])
    return None


# ---- the benchmark -------------------------------------------------------------------------------

def run_case(name: str, graph_for_bits: Callable[[int], Graph], bits: list[int], board: Board,
             targets: list[float | None], cap: float, repeat: int) -> list[dict]:
    graphs = {b: graph_for_bits(b) for b in bits}
    t0 = time.perf_counter()
    per_bits = {b: exhaustive(g, board) for b, g in graphs.items()}
    t_exh = time.perf_counter() - t0
    rows = []
    for target in targets:
        times = []
        result = None
        for _ in range(repeat):
            t0 = time.perf_counter()
            cands = build_candidates(lambda b: graphs[b], board, bits, cap)  # the spaces are part of the search
            try:
                design, cand = select(cands, board, target, cap)
                result = (design.act_bits, design.estimate["cycles"], design.estimate["resources"]["lut"], design)
            except InfeasibleDesign as e:
                result = ("infeasible", e.best)
            times.append(time.perf_counter() - t0)
        expected = oracle(per_bits, board, target, cap)
        if result[0] == "infeasible":
            same = expected is None
            chosen = "infeasible: " + "; ".join(f"{d['act_bits']}b {d['fps']:.3g} FPS ({d['binding']})"
                                                 for d in result[1])
        else:
            same = expected is not None and tuple(result[:3]) == expected
            d = result[3]
            chosen = f"{d.act_bits}-bit, {d.estimate['fps']:.4g} FPS, LUT {d.estimate['utilization']['lut']:.0%}, " \
                     f"knobs {d.knobs}"
        space = cands[0].space
        rows.append({"case": name, "target": "max" if target is None else f"{target:g}",
                     "units": len(space.units), "raw": sum(c.space.raw_combinations for c in cands),
                     "evaluated": sum(len(c.space) for c in cands), "search_s": statistics.median(times),
                     "exhaustive_s": t_exh, "same": same, "chosen": chosen})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5, help="runs per search, the median is reported")
    ap.add_argument("--quick", action="store_true", help="2 DeiT blocks instead of 12")
    args = ap.parse_args()

    rows = []
    mlp = load_model(example_model("mlp"))
    rows += run_case("example MLP", lambda b: mlp, [8], get_board("ultra96v2"), [None, 20_000, 60_000, 1e7],
                     0.8, args.repeat)
    weights: dict[str, np.ndarray] = {}
    blocks = 2 if args.quick else 12
    t0 = time.perf_counter()
    deit = {b: deit_base_dense(b, weights, blocks=blocks) for b in (8, 6, 4)}
    t_build = time.perf_counter() - t0
    rows += run_case(f"DeiT-base dense x{blocks}", lambda b: deit[b], [8, 6, 4], get_board("zcu102"),
                     [None, 24, 30, 60, 1_000], 0.8, args.repeat)

    print(f"search benchmark on {platform.node()} ({platform.processor() or platform.machine()}), "
          f"python {platform.python_version()}, numpy {np.__version__}; DeiT graphs built in {t_build:.1f} s")
    head = f"{'case':<22} {'target':>7} {'units':>5} {'combinations':>13} {'evaluated':>9} {'search ms':>9} " \
           f"{'exhaustive s':>12} {'same':>5}  chosen"
    print(head)
    print("-" * len(head))
    for r in rows:
        same = "yes" if r["same"] else "NO"
        print(f"{r['case']:<22} {r['target']:>7} {r['units']:>5} {r['raw']:>13} {r['evaluated']:>9} "
              f"{r['search_s'] * 1e3:>9.1f} {r['exhaustive_s']:>12.2f} {same:>5}  {r['chosen']}")
    print("search ms: median wall time of build_candidates + select (every precision's space, then the choice);\n"
          "exhaustive s: every knob combination of every precision (tests.helpers.bulk_designs), once per case; "
          "same: the search's (bits, cycles, LUT) equals exhaustive enumeration's under the documented rule")
    if not all(r["same"] for r in rows):
        raise SystemExit("the search disagrees with exhaustive enumeration")


if __name__ == "__main__":
    main()
