"""Models users already have, compiled from the files their tools write: FINN's eleven BNN-PYNQ networks
(``brevitas_examples.bnn_pynq``, ``export_qonnx``) and Brevitas's quantized MobileNetV1 (4 bits, widths 0.25
and 1.0), random weights (statistics drawn as the tests draw them). For each, the fastest design vaqf finds on
the board (the default objective) on the engine and, where the model streams, on the dataflow pipeline; with
``--csim``, one C-simulated frame with cycle counters against the estimate.

    PYTHONPATH=$PWD .venv/bin/python bench/bench_zoo.py [--board zcu102] [--csim] [--only NAME ...] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchlib import machine, table  # noqa: E402

BNN = ("tfc_1w1a", "tfc_1w2a", "tfc_2w2a", "sfc_1w1a", "sfc_1w2a", "sfc_2w2a", "lfc_1w1a", "lfc_1w2a",
       "cnv_1w1a", "cnv_1w2a", "cnv_2w2a")
MOBILENET = {"mobilenet_v1_w025": 0.25, "mobilenet_v1_w100": 1.0}


def export(name: str, folder: Path) -> tuple[Path, object]:
    """The model's QONNX file and the calibration data it needs (MobileNet's float input), or None."""
    if name in MOBILENET:
        from tests.frontend.test_mobilenet import _inputs, export_mobilenet

        return export_mobilenet(folder / f"{name}.onnx", MOBILENET[name]), _inputs(2)
    from tests.frontend.test_bnn_pynq import export_bnn_pynq

    return export_bnn_pynq(name, folder), None


def run(name: str, folder: Path, board: str, csim: bool) -> list[dict]:
    from vaqf.api import compile_model
    from vaqf.backend.csim import run_csim
    from vaqf.errors import VaqfError

    t = time.time()
    path, calib = export(name, folder)
    print(f"{name}: exported in {time.time() - t:.0f} s", flush=True)
    rows = []
    for arch in ("engine", "dataflow"):
        t = time.time()
        try:
            res = compile_model(path, folder / f"{name}_{arch}", board=board, arch=arch, calib=calib)
        except VaqfError as e:
            rows.append({"model": name, "arch": arch, "declined": str(e).split(": ", 1)[-1][:90]})
            continue
        e = res.design.estimate
        row = {"model": name, "arch": arch, "fps": e["fps"], "cycles": e["cycles"], **e["resources"],
               "compile_s": round(time.time() - t, 1)}
        if csim:
            t = time.time()
            out = run_csim(res.project, count=1, cycles=True)
            measured, estimated = out.total_cycles()
            row.update({"csim_bit_exact": f"{out.bit_exact}/{out.inputs}", "counted": measured,
                        "counted/estimated": round(measured / estimated, 4), "csim_s": round(time.time() - t, 1)})
        print(f"{name} {arch}: {row}", flush=True)
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--board", default="zcu102")
    ap.add_argument("--csim", action="store_true", help="C-simulate one frame of each design with cycle counters")
    ap.add_argument("--only", nargs="*", help="models to run (default: all)")
    ap.add_argument("--json", type=Path, help="write the rows here")
    ap.add_argument("--work", type=Path, help="folder for the exports and projects (default: a temporary one)")
    args = ap.parse_args(argv)
    names = args.only or list(BNN) + list(MOBILENET)
    unknown = sorted(set(names) - set(BNN) - set(MOBILENET))
    if unknown:
        ap.error(f"unknown model(s) {', '.join(unknown)}; choose from {', '.join(BNN + tuple(MOBILENET))}")
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.work or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        rows = [r for n in names for r in run(n, folder, args.board, args.csim)]
    print(machine())
    cols = ["model", "arch", "fps", "cycles", "lut", "dsp", "bram18"]
    if args.csim:
        cols += ["csim_bit_exact", "counted/estimated"]
    print(table(cols + ["declined"], [[r.get(c, "") for c in cols + ["declined"]] for r in rows]))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
