"""DeiT-base with binary encoder weights on a ZCU102: the design vaqf picks per target and activation bits,
the estimated frame rate per precision, where the cycles go, and the physical limits it is measured against.

    .venv/bin/python bench/bench_deit_zcu102.py

Uses a randomly initialized DeiT-base (weights do not change the cost model; only shapes and bit widths
do) exported to ONNX, quantized post-training on 4 random images.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import vaqf  # noqa: E402
from vaqf.dse.search import search  # noqa: E402
from vaqf.hw.board import get_board  # noqa: E402
from vaqf.report import report_data  # noqa: E402


def limits(graph, board, bits: int) -> dict[str, float]:
    """Upper bounds on FPS: every LUT (80% cap) spent on binary add/subtract, every DSP on 8-bit products
    (two per DSP48E2), and the DDR bandwidth spent on nothing but reading the weights once per frame."""
    binary = sum(n.attrs["rows"] * n.attrs["weight"].size for n in graph.nodes
                 if n.op == "dense" and n.attrs["w_type"].bits == 1)
    dsp_macs = sum(vaqf.ops.get_spec(n.op).macs(n) for n in graph.nodes) - binary
    weight_bytes = sum(n.attrs["weight"].size * (1 if n.attrs["w_type"].bits == 1 else 8) / 8
                       for n in graph.nodes if n.op == "dense")
    lut_per_add = 2 * bits + 4  # a conditional negation plus its share of the adder tree
    return {
        "LUT-bound binary MACs": board.clock_hz * 0.8 * board.lut / lut_per_add / binary,
        "DSP-bound integer MACs": board.clock_hz * 0.8 * board.dsp * 2 / max(dsp_macs, 1),
        "DDR-bound weight streaming": board.ddr_gbps * 1e9 / weight_bytes,
    }


def main() -> None:
    import torch

    from vaqf.frontend.torch.deit import deit, export_onnx

    board = get_board("zcu102")
    with tempfile.TemporaryDirectory() as td:
        path = Path(td) / "deit_base.onnx"
        torch.manual_seed(0)
        export_onnx(deit("base"), str(path))
        calib = np.random.default_rng(0).normal(size=(4, 3, 224, 224)).astype(np.float32)
        print(f"DeiT-base, binary encoder weights, on {board.name} at {board.clock_mhz:g} MHz (cap 80%)\n")
        print(f"{'act bits':>8} {'best FPS':>9} {'binding':<8} {'LUT%':>6} {'DSP%':>6} {'BRAM%':>6}  "
              f"{'target 24':>10} {'target 30':>10} {'target 60':>10}  search s")
        breakdown = None
        for bits in (8, 6, 4):
            graph = vaqf.load_model(path, weights="binary", act_bits=bits, calib=calib)
            t = time.perf_counter()
            best = search(graph, board, None)
            cells = []
            for fps in (24.0, 30.0, 60.0):
                try:
                    d = search(graph, board, fps)
                    cells.append(f"{d.estimate['fps']:.1f}")
                except vaqf.VaqfError:
                    cells.append("no")
            elapsed = time.perf_counter() - t
            u = best.estimate["utilization"]
            binding = max(u, key=u.get)
            print(f"{bits:>8} {best.estimate['fps']:9.2f} {binding:<8} {100 * u['lut']:6.1f} {100 * u['dsp']:6.1f} "
                  f"{100 * u['bram18']:6.1f}  {cells[0]:>10} {cells[1]:>10} {cells[2]:>10}  {elapsed:8.1f}")
            if bits == 8:
                breakdown = (report_data(graph, best, board), limits(graph, board, bits), best)
        data, lim, best = breakdown
        print(f"\n8-bit fastest design: {best.knobs}")
        print(f"\n{'op':<12} {'cycles':>10} {'share %':>8}")
        for o in data["by_op"]:
            print(f"{o['op']:<12} {o['cycles']:10d} {o['share']:8.1f}")
        print(f"\n{'physical limit (8-bit)':<28} {'FPS':>8}")
        for k, v in lim.items():
            print(f"{k:<28} {v:8.1f}")


if __name__ == "__main__":
    main()
