"""vaqf beside FINN on FINN's own networks: BNN-PYNQ TFC and CNV at w1a1, w1a2, w2a2, several FPS targets,
200 MHz, the ZCU102 part (xczu9eg-ffvb1156-2-e).

    .venv/bin/python bench/bench_finn.py [--models DIR] [--finn build/finn/finn_results.json] [--json OUT.json]

FINN's side (a benchmark-only dependency in its own venv, ../shared/peers/finn/, README there):

    bash ../shared/peers/finn/install_finn.sh build/finn-venv
    build/finn-venv/bin/python ../shared/peers/finn/export_models.py build/models     # canonical files + twins
    FINN_BUILD_DIR=$PWD/build/finn_tmp build/finn-venv/bin/python ../shared/peers/finn/run_finn.py build/models \\
        build/finn --clocks 200 --fps-tfc 1000,10000,100000,1000000 --fps-cnv 100,1000,3000,10000,100000

gives FINN's own estimates (folding by SetFolding at each target, cycles per layer, LUT/BRAM18/DSP per layer)
in finn_results.json, which this script reads. FINN's LUT figure counts its layers only (no FIFOs, no DMA, no
width converters); vaqf's figure is shown three ways: its layers (MVAUs, window generators, pools, width
converters, stream packers), + its FIFOs, + its AXI shell.

vaqf's side: each network's QONNX file (the canonical one when vaqf reads it, else the "twin" of
export_models.py, which FINN folds and costs identically), searched over both architectures with vaqf's one
objective (at a target: the fewest LUTs that meet it; without: the fastest design within 80% of every
resource). Both sides estimate; nothing is synthesized.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import machine, table  # noqa: E402

NETS = ("tfc_w1a1", "tfc_w1a2", "tfc_w2a2", "cnv_w1a1", "cnv_w1a2", "cnv_w2a2")
CLOCK = 200


def finn_entries(path: Path) -> dict[str, dict]:
    """model -> target FPS -> FINN's figures, from run_finn.py's results (canonical files)."""
    data = json.loads(path.read_text())
    out: dict[str, dict] = {}
    for e in data.values():
        if e.get("clock_mhz") != CLOCK or "performance" not in e:
            continue
        total = e["layer_resources"]["total"]
        out.setdefault(e["model"], {})[int(e["target_fps"])] = {
            "fps": float(e["performance"]["estimated_throughput_fps"]), "lut": int(total["LUT"]),
            "bram18": int(total["BRAM_18K"]), "dsp": int(total["DSP"]),
            "bottleneck": e["performance"].get("max_cycles_node_name", "")}
    return out


def vaqf_graph(models: Path, net: str):
    """The graph vaqf compiles for a network, and which file it read (canonical, else the twin)."""
    from vaqf.api import load_model
    from vaqf.errors import VaqfError

    try:
        return load_model(models / f"{net}.onnx"), f"{net}.onnx", ""
    except VaqfError as e:
        why = str(e).splitlines()[0]
        twin = models / f"vaqf_{net}.onnx"
        if not twin.exists():
            return None, "", why
        return load_model(twin), twin.name, why


def run(models: Path, finn: dict[str, dict], board_name: str) -> list[dict]:
    from vaqf.dse.search import Candidate, select
    from vaqf.errors import InfeasibleDesign
    from vaqf.hw.board import get_board

    board = get_board(board_name)
    rows = []
    for net in NETS:
        targets = sorted(finn.get(net, {}))
        g, used, why = vaqf_graph(models, net)
        if g is None:
            rows.append({"net": net, "file": "-", "skipped": why})
            continue
        t0 = time.perf_counter()
        cand = Candidate.build(g, board)
        for target in [*targets, None]:
            f = finn[net].get(target) if target is not None else max(finn[net].values(), key=lambda v: v["fps"])
            try:
                d, _ = select([cand], board, target, 0.8, arch="auto")
            except InfeasibleDesign as e:
                rows.append({"net": net, "file": used, "target": target, "finn": f, "vaqf": None,
                             "infeasible": str(e).splitlines()[1].strip()})
                continue
            est = d.estimate
            res = est["resources"]
            fifo = est.get("fifo_resources", {"lut": 0, "bram18": 0})
            shell = est.get("shell_resources", {"lut": 0})
            layers_lut = res["lut"] - fifo.get("lut", 0) - shell.get("lut", 0)
            rows.append({"net": net, "file": used, "target": target, "finn": f, "arch": d.arch,
                         "vaqf": {"fps": est["fps"], "lut": res["lut"], "layers_lut": layers_lut,
                                  "fifo_lut": fifo.get("lut", 0), "shell_lut": shell.get("lut", 0),
                                  "bram18": res["bram18"], "fifo_bram18": fifo.get("bram18", 0), "dsp": res["dsp"],
                                  "latency_cycles": est.get("latency_cycles"), "bottleneck": est.get("bottleneck")}})
        rows[-1]["search_s"] = round(time.perf_counter() - t0, 2)
    return rows


def render(rows: list[dict]) -> str:
    body = []
    for r in rows:
        if "skipped" in r:
            body.append([r["net"], "-", "-", "-", "-", "-", "-", "-", "-", "-", "-", "-",
                         "vaqf cannot read it: " + r["skipped"]])
            continue
        f, v = r["finn"], r.get("vaqf")
        tgt = f"{r['target']:,}" if r["target"] is not None else "fastest"
        finn_cells = [f"{f['fps']:,.0f}", f"{f['lut']:,}", f"{f['bram18']}"]
        if v is None:
            body.append([r["net"], r["file"], tgt, *finn_cells, "-", "infeasible", "-", "-", "-", "-", r["infeasible"]])
            continue
        meets = "" if r["target"] is None else (" yes" if v["fps"] >= r["target"] else " no")
        finn_meets = r["target"] is None or f["fps"] >= r["target"]
        lut_ok = "yes" if v["layers_lut"] + v["fifo_lut"] + v["shell_lut"] <= f["lut"] else \
            ("layers yes" if v["layers_lut"] <= f["lut"] else "no")
        if r["target"] is None:
            lut_ok = "-"  # the fastest designs of each side: frame rates compared, not LUTs
        body.append([r["net"], r["file"], tgt, *finn_cells, r["arch"], f"{v['fps']:,.0f}{meets}",
                     f"{v['layers_lut']:,} / {v['fifo_lut']:,} / {v['shell_lut']:,}", f"{v['lut']:,}",
                     f"{v['bram18']} ({v['fifo_bram18']})", lut_ok if finn_meets else "(FINN misses)",
                     v["bottleneck"] or ""])
    return table(["network", "vaqf read", "target FPS", "FINN FPS", "FINN LUT", "FINN BRAM18", "vaqf arch", "vaqf FPS",
                  "vaqf LUT layers / FIFOs / shell", "vaqf LUT total", "vaqf BRAM18 (FIFOs)", "LUT <= FINN",
                  "vaqf bottleneck"], body)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="build/models", help="export_models.py's output folder")
    ap.add_argument("--finn", default="build/finn/finn_results.json", help="run_finn.py's results")
    ap.add_argument("--board", default="zcu102")
    ap.add_argument("--json", help="write the rows as JSON here")
    args = ap.parse_args()
    finn = finn_entries(Path(args.finn))
    missing = [n for n in NETS if n not in finn]
    if missing:
        sys.exit(f"no FINN results for {', '.join(missing)} in {args.finn}: run run_finn.py first (see the docstring)")
    t0 = time.perf_counter()
    rows = run(Path(args.models), finn, args.board)
    print(f"# vaqf beside FINN (finn-plus 1.6.1 estimates), {args.board}, {CLOCK} MHz; {machine()}; "
          f"{time.strftime('%Y-%m-%d')}; vaqf search {time.perf_counter() - t0:.1f} s in all")
    print(render(rows))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
