"""DeiT-tiny, -small and -base with binary encoder weights on a ZCU102: the fastest design that fits (cap 80%)
at 8- and 6-bit activations, with the cost model's honest accounting, and where its cycles go, per unit.

    .venv/bin/python bench/bench_deit_family.py [tiny small base]

Randomly initialized models (weights change neither cycles nor resources) exported to ONNX, quantized
post-training on 4 random images. The estimate is the sum the C-simulation's cycle counters give (tests hold
them to it: tests/integration/test_cycles.py runs DeiT-tiny).
"""

from __future__ import annotations

import sys
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import vaqf  # noqa: E402
from vaqf.dse.search import search  # noqa: E402
from vaqf.hw.board import get_board  # noqa: E402
from vaqf.hw.layout import design_lanes  # noqa: E402


def main(names: list[str]) -> None:
    import torch

    from vaqf.frontend.torch.deit import deit, export_onnx

    board = get_board("zcu102")
    calib = np.random.default_rng(0).normal(size=(4, 3, 224, 224)).astype(np.float32)
    print(f"{'model':<11} {'bits':>4} {'FPS':>7} {'cycles':>10} {'lanes':>5} {'LUT%':>5} {'FF%':>5} {'DSP%':>5} "
          f"{'BRAM%':>5}  cycles by unit")
    with tempfile.TemporaryDirectory() as td:
        for name in names:
            path = Path(td) / f"deit_{name}.onnx"
            torch.manual_seed(0)
            export_onnx(deit(name), str(path))
            for bits in (8, 6):
                graph = vaqf.load_model(path, weights="binary", act_bits=bits, calib=calib)
                d = search(graph, board, None, 0.8)
                e = d.estimate
                split: dict[str, int] = defaultdict(int)
                for layer in e["layers"]:
                    split[layer["unit"]] += layer["cycles"]
                top = ", ".join(f"{u} {c / e['cycles'] * 100:.0f}%" for u, c in
                                sorted(split.items(), key=lambda kv: -kv[1])[:5])
                u = e["utilization"]
                print(f"deit-{name:<6} {bits:>4} {e['fps']:>7.2f} {e['cycles']:>10} {design_lanes(d.knobs):>5} "
                      f"{u['lut'] * 100:>5.1f} {u['ff'] * 100:>5.1f} {u['dsp'] * 100:>5.1f} {u['bram18'] * 100:>5.1f}"
                      f"  {top}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:] or ["tiny", "small", "base"])
