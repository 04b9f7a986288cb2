"""Import time against the node count: a chain of Relu nodes after one Quant, from 1,000 to 100,000 nodes.

    .venv/bin/python bench/bench_import.py [--sizes 1000,10000,100000] [--passes]

Times ``import_onnx`` (ONNX checker, pattern lifting, lowering, ``Graph.verify``) on models built in memory,
and with ``--passes`` also the default pass pipeline (``vaqf.api.load_model``). Linear work shows as a
constant time per node down the last column. The import used to scan every node for each node added
(10,000 nodes: 17 s; 100,000: 768 s); tests/robustness/test_bounded_work.py holds it to linear work by
counting calls.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchlib import machine, table  # noqa: E402

from tests.helpers import relu_chain  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="1000,10000,100000")
    ap.add_argument("--passes", action="store_true", help="also run the default pass pipeline")
    args = ap.parse_args()
    from vaqf.api import load_model
    from vaqf.frontend.onnx_import import import_onnx

    rows = []
    for n in (int(s) for s in args.sizes.split(",")):
        model = relu_chain(n)
        start = time.perf_counter()
        if args.passes:
            load_model(model)
        else:
            import_onnx(model)
        took = time.perf_counter() - start
        rows.append([f"{n:,}", f"{took:.2f} s", f"{took / n * 1e6:.1f} us"])
    print(machine())
    print(table(["nodes", "import" + (" + passes" if args.passes else ""), "per node"], rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
