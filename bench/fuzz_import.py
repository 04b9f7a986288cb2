"""Fuzz the importer with mutated and truncated models; count outcomes (recorded in docs/robustness.md).

    .venv/bin/python bench/fuzz_import.py --cases 2000

Every case must end in success or a VaqfError with a one-line message; anything else is printed and
makes the script exit 1.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import vaqf  # noqa: E402
from vaqf.examples import example_model  # noqa: E402
from vaqf.frontend.onnx_import import ImportOptions, import_onnx  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    seed = example_model("mlp").SerializeToString()
    outcomes: Counter[str] = Counter()
    worst = 0.0
    bad = 0
    with tempfile.TemporaryDirectory() as td:
        path = Path(td) / "m.onnx"
        for i in range(args.cases):
            data = bytearray(seed)
            if i % 4 == 3:
                data = data[: int(rng.integers(0, len(data)))]
                kind = "truncated"
            else:
                for _ in range(int(rng.integers(1, 9))):
                    data[int(rng.integers(0, len(data)))] = int(rng.integers(0, 256))
                kind = "mutated"
            path.write_bytes(bytes(data))
            start = time.perf_counter()
            try:
                import_onnx(path, ImportOptions())
                outcomes[f"{kind}: imported"] += 1
            except vaqf.VaqfError as e:
                if "\n" in str(e).strip():
                    bad += 1
                    print(f"case {i}: multi-line message {str(e)!r}")
                outcomes[f"{kind}: {type(e).__name__}"] += 1
            except Exception as e:  # noqa: BLE001 - the point is to catch anything
                bad += 1
                outcomes[f"{kind}: CRASH {type(e).__name__}"] += 1
                print(f"case {i}: {type(e).__name__}: {e}")
            worst = max(worst, time.perf_counter() - start)
    print(f"{'outcome':<40} {'cases':>7}")
    for k, v in sorted(outcomes.items()):
        print(f"{k:<40} {v:7d}")
    print(f"{args.cases} cases, {bad} not handled, slowest case {worst:.3f} s")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
