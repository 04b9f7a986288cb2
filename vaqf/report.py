"""The project report: report.html and its Markdown twin, with a Pareto plot and a roofline plot.

The data is gathered once (``report_data``) and rendered by two Jinja2 templates, so both files say the
same thing. Plots are PNGs under report/ drawn with matplotlib (the ``plot`` extra); without it the
report is written without them and says so.
"""

from __future__ import annotations

import json
import logging
import math
from collections import Counter
from pathlib import Path
from typing import Any

import jinja2

from vaqf import __version__
from vaqf.backend.escape import environment, terminal
from vaqf.backend.package_files import templates_dir
from vaqf.dse.design import Design
from vaqf.hw.board import Board
from vaqf.hw.cost import RESOURCE_KEYS
from vaqf.ir import BinaryType, Graph
from vaqf.ops import get_spec

log = logging.getLogger(__name__)


def model_summary(graph: Graph) -> dict[str, Any]:
    ops = Counter(n.op for n in graph.nodes)
    binary = sum(int(n.attrs["weight"].size) for n in graph.nodes
                 if "weight" in n.attrs and isinstance(n.attrs.get("w_type"), BinaryType))
    weights = sum(int(n.attrs["weight"].size) for n in graph.nodes if "weight" in n.attrs)
    macs = sum(get_spec(n.op).macs(n) for n in graph.nodes)
    return {
        "name": graph.name, "format": graph.metadata.get("format", "?"), "nodes": len(graph.nodes),
        "ops": dict(sorted(ops.items())), "weights": weights, "binary_weights": binary, "macs": macs,
        "inputs": [{"name": v.name, "type": str(v.info.qtype), "shape": list(v.info.shape),
                    "scale": float(v.info.scale[0]), "zero_point": v.info.zero_point} for v in graph.inputs],
        "outputs": [{"name": v.name, "type": str(v.info.qtype), "shape": list(v.info.shape),
                     "per_channel": v.info.per_channel} for v in graph.outputs],
    }


def layer_rows(graph: Graph, design: Design) -> list[dict[str, Any]]:
    layers = design.estimate.get("layers", [])
    total = max(sum(layer["cycles"] for layer in layers), 1)
    nodes = {n.name: n for n in graph.nodes}
    rows = []
    for layer in layers:
        # a dataflow stage names its graph node in "layer"; its MVAU does the node's work
        n = nodes.get(layer["node"]) or (nodes.get(layer.get("layer") or "") if layer.get("op") == "mvau" else None)
        rows.append({**layer, "share": 100.0 * layer["cycles"] / total,
                     "macs": get_spec(n.op).macs(n) if n is not None else 0,
                     "shape": list(n.outputs[0].info.shape) if n is not None else []})
    return rows


def _figure():
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        return None
    fig = Figure(figsize=(7.0, 4.4))
    FigureCanvasAgg(fig)
    return fig


def plot_roofline(rows: list[dict[str, Any]], design: Design, board: Board, path: Path) -> bool:
    """Per layer: arithmetic intensity (ops per DDR byte) against achieved ops per cycle, under the
    memory roof (DDR bytes per cycle x intensity) and each GEMM unit's compute roof (2 x PE x SIMD)."""
    fig = _figure()
    if fig is None:
        return False
    ax = fig.add_subplot()
    pts = [(2 * r["macs"] / max(r["ddr_bytes"], 1), 2 * r["macs"] / max(r["cycles"], 1), r) for r in rows if r["macs"]]
    if not pts:
        return False
    xs = [p[0] for p in pts]
    lo, hi = max(min(xs) / 4, 1e-2), max(xs) * 4
    bw = board.ddr_bytes_per_cycle
    roofs = {u: 2 * k.get("pe", 1) * k.get("simd", 1) for u, k in design.knobs.items() if "pe" in k}
    grid = [lo * (hi / lo) ** (i / 99) for i in range(100)]
    ax.plot(grid, [bw * x for x in grid], color="grey", linestyle="--", label=f"DDR roof ({bw:.1f} B/cycle)")
    colours = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple"]
    for i, (u, peak) in enumerate(sorted(roofs.items())):
        c = colours[i % len(colours)]
        ax.axhline(peak, color=c, linewidth=1, alpha=0.6, label=f"{u} peak ({peak} ops/cycle)")
        sel = [p for p in pts if p[2]["unit"] == u]
        if sel:
            ax.scatter([p[0] for p in sel], [p[1] for p in sel], color=c, s=22, zorder=3)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("arithmetic intensity (ops per DDR byte)")
    ax.set_ylabel("ops per cycle (estimated)")
    ax.set_title(f"roofline on {board.name}, {design.act_bits}-bit activations")
    ax.grid(True, which="both", alpha=0.25)
    ax.legend(fontsize="x-small")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return True


def plot_pareto(points: list[dict[str, Any]], design: Design, board: Board, path: Path) -> bool:
    """Frame rate against LUT utilization of the explored designs, by activation bits; the chosen one ringed."""
    fig = _figure()
    if fig is None or not points:
        return False
    ax = fig.add_subplot()
    for i, bits in enumerate(sorted({p["act_bits"] for p in points}, reverse=True)):
        sel = sorted((p for p in points if p["act_bits"] == bits), key=lambda p: p["lut_util"])
        ax.plot([100 * p["lut_util"] for p in sel], [p["fps"] for p in sel], marker="o", markersize=3,
                linewidth=1, label=f"{bits}-bit activations", color=f"C{i}")
    est = design.estimate
    ax.scatter([100 * est["utilization"]["lut"]], [est["fps"]], s=150, facecolors="none", edgecolors="black",
               label="chosen", zorder=4)
    if design.target_fps:
        ax.axhline(design.target_fps, color="grey", linestyle="--", linewidth=1, label=f"target {design.target_fps:g}")
    ax.set_yscale("log")
    ax.set_xlabel(f"LUT utilization of {board.name} (%)")
    ax.set_ylabel("estimated FPS")
    ax.set_title("Pareto front of the design space")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return True


def report_data(graph: Graph, design: Design, board: Board, pareto: list[dict[str, Any]] | None = None,
                errors: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    est = design.estimate
    util = est.get("utilization", {})
    resources = [{"name": k, "used": est["resources"].get(k, 0), "available": board.resources()[k],
                  "percent": 100.0 * util.get(k, 0.0)} for k in RESOURCE_KEYS]
    rows = layer_rows(graph, design)
    by_op: dict[str, int] = {}
    for r in rows:
        by_op[r["op"]] = by_op.get(r["op"], 0) + r["cycles"]
    total = max(sum(by_op.values()), 1)
    return {
        "version": __version__,
        "model": model_summary(graph),
        "board": board.to_json(),
        "design": {"act_bits": design.act_bits, "knobs": design.knobs, "objective": design.objective,
                   "target_fps": design.target_fps, "clock_mhz": design.clock_mhz, "word_bits": design.word_bits,
                   "arch": design.arch},
        # FPS is frames per second in steady state for both architectures; the engine runs one frame at a
        # time (interval = latency), a dataflow pipeline overlaps frames (interval = its slowest stage)
        "estimate": {"fps": est["fps"], "cycles": est["cycles"],
                     "interval_cycles": est.get("interval_cycles", est["cycles"]),
                     "latency_cycles": est.get("latency_cycles", est["cycles"]),
                     "latency_ms": 1e3 * est.get("latency_cycles", est["cycles"]) / (design.clock_mhz * 1e6),
                     "bottleneck": est.get("bottleneck")},
        "architecture": architecture_text(design),
        "resources": resources,
        "units": est.get("units", {}),
        "layers": rows,
        "by_op": [{"op": op, "cycles": c, "share": 100.0 * c / total} for op, c in sorted(by_op.items(),
                                                                                          key=lambda t: -t[1])],
        "pareto": pareto or [],
        "errors": errors or [],
        "why": _why(design, board, resources),
        "sparsity": sparsity_savings(graph, design, board),
    }


def sparsity_savings(graph: Graph, design: Design, board: Board) -> dict[str, Any] | None:
    """Latency and resources against the same model with its structured sparsity ignored (every row of
    every GEMM computed over every column: ``passes.sparsity.densified``), at the same knobs; None for a
    model without structured sparsity. What it does not count: a dense model's own search could pick
    other knobs."""
    from vaqf.hw.model import estimate
    from vaqf.passes.sparsity import densified, has_sparsity

    if not has_sparsity(graph) or design.arch != "engine":
        return None
    try:
        base = estimate(densified(graph), board, design.knobs)
    except Exception as e:  # the report is extra information: never fail a compile for it
        log.warning("no comparison against the dense model: %s", str(e).splitlines()[0] if str(e) else e)
        return None
    est = design.estimate
    cycles = int(est["cycles"])
    layers = {layer.node: layer.cycles for layer in base.layers}
    changed = [{"node": r["node"], "op": r["op"], "dense_cycles": layers[r["node"]], "cycles": r["cycles"]}
               for r in est.get("layers", []) if r["node"] in layers and layers[r["node"]] != r["cycles"]]
    return {
        "dense_cycles": base.cycles, "cycles": cycles, "speedup": base.cycles / max(cycles, 1),
        "latency_saving": 1.0 - cycles / max(base.cycles, 1),
        "dense_latency_ms": 1e3 * base.cycles / (design.clock_mhz * 1e6),
        "resources": [{"name": k, "dense": int(base.resources.get(k, 0)), "used": int(est["resources"].get(k, 0))}
                      for k in RESOURCE_KEYS],
        "layers": changed,
    }


def architecture_text(design: Design) -> str:
    """Which architecture the design is and why it was chosen (the search's sentence, when it made one)."""
    what = {"engine": "layer-sequential engine (one instance of each unit, every layer in turn; weights from DDR)",
            "dataflow": "streaming dataflow pipeline (one stage per layer, FIFOs between, weights on chip, frames "
                        "overlapping)"}[design.arch]
    reason = next((part.strip() for part in design.objective.split(";") if "chosen" in part), "")
    return what + (f". {reason[0].upper()}{reason[1:]}." if reason else ".")


def _why(design: Design, board: Board, resources: list[dict[str, Any]]) -> str:
    top = max(resources, key=lambda r: r["percent"])
    if design.objective == "pinned":
        head = "The knobs were pinned by a design file (--design)."
    elif design.target_fps:
        head = (f"The cheapest design (fewest LUTs) meeting {design.target_fps:g} FPS at the highest activation "
                f"precision that reaches it.")
    else:
        head = "The fastest design that fits within the resource cap."
    return (f"{head} Its most used resource is {top['name'].upper()} at {top['percent']:.1f}% of the "
            f"{board.name}.")


def render(data: dict[str, Any], plots: dict[str, str]) -> dict[str, str]:
    # autoescape by vaqf.backend.escape.is_html: select_autoescape(["html"]) keys on the last suffix, and
    # report.html.j2 ends in .j2, so it was off
    env = environment(jinja2.FileSystemLoader(str(templates_dir())))
    env.filters["si"] = _si
    return {"report.html": env.get_template("project/report.html.j2").render(**data, plots=plots),
            "report.md": env.get_template("project/report.md.j2").render(**data, plots=plots)}


def _si(x: float) -> str:
    if not x:
        return "0"
    exp = min(max(int(math.floor(math.log10(abs(x)) / 3)), 0), 4)
    return f"{x / 1000 ** exp:.3g}{['', 'k', 'M', 'G', 'T'][exp]}"


def write_report(folder: Path, graph: Graph, design: Design, board: Board, pareto: list[dict[str, Any]] | None = None,
                 errors: list[dict[str, Any]] | None = None) -> list[Path]:
    """Write report.html, report.md, report/*.png and report/report.json into ``folder``."""
    data = report_data(graph, design, board, pareto, errors)
    (folder / "report").mkdir(exist_ok=True)
    plots = {}
    if plot_pareto(data["pareto"], design, board, folder / "report" / "pareto.png"):
        plots["pareto"] = "report/pareto.png"
    if plot_roofline(data["layers"], design, board, folder / "report" / "roofline.png"):
        plots["roofline"] = "report/roofline.png"
    if not plots:
        log.warning("report written without plots (install matplotlib: pip install 'vaqf[plot]')")
    from vaqf.backend.emit import write_inside

    out = []
    for name, text in render(data, plots).items():  # never through a link planted in the project
        out.append(write_inside(folder, name, text))
    write_inside(folder, "report/report.json", json.dumps(data, indent=1, sort_keys=True, default=float))
    return out


def summary_text(data: dict[str, Any]) -> str:
    """What ``vaqf report DIR`` prints."""
    m, e, d = data["model"], data["estimate"], data["design"]
    lines = [
        f"model     {m['name']} ({m['format']}): {m['nodes']} nodes, {_si(m['weights'])} weights "
        f"({_si(m['binary_weights'])} binary), {_si(m['macs'])} MACs",
        f"board     {data['board']['name']} ({data['board']['part']}) at {d['clock_mhz']:g} MHz",
        f"design    {d['act_bits']}-bit activations; {json.dumps(d['knobs'])}",
        f"estimate  {e['fps']:.2f} FPS ({d['arch']}, steady state), {e['cycles']} cycles a frame, "
        f"latency {e['latency_ms']:.3f} ms",
        "resources " + ", ".join(f"{r['name'].upper()} {r['used']} ({r['percent']:.1f}%)" for r in data["resources"]),
        "time by op " + ", ".join(f"{o['op']} {o['share']:.1f}%" for o in data["by_op"][:6]),
        f"why       {data['why']}",
    ]
    sp = data.get("sparsity")
    if sp:
        lines.append(f"sparsity  {sp['cycles']} cycles against {sp['dense_cycles']} with the sparsity ignored "
                     f"({100 * sp['latency_saving']:.1f}% less latency, {sp['speedup']:.2f}x)")
    if data["errors"]:
        worst = max(data["errors"], key=lambda r: r["rel_l2"])
        lines.append(f"quant err worst tensor {worst['value']} ({worst['op']}): rel. L2 {worst['rel_l2']:.4f}")
    # names come from the model and the board file (report.json can be edited too): a terminal must never
    # receive their escape sequences or bidi overrides raw
    return "\n".join(terminal(line) for line in lines)
