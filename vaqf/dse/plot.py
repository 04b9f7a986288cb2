"""Plots of a design-space exploration (matplotlib, the optional ``plot`` extra).

Drawn with matplotlib's object API and the Agg canvas, so no display and no pyplot global state are
involved: it works in a headless CI job and from inside another program that uses matplotlib.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from vaqf.dse.design import Design
from vaqf.dse.search import Candidate, front_indices
from vaqf.errors import VaqfError
from vaqf.hw.board import Board
from vaqf.hw.cost import RESOURCE_KEYS

_LUT = RESOURCE_KEYS.index("lut")


def _matplotlib():
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as e:
        raise VaqfError("--plot needs matplotlib, which is not installed: pip install 'vaqf[plot]' "
                        "(or pip install matplotlib)") from e
    return Figure, FigureCanvasAgg


def plot_exploration(cands: Sequence[Candidate], board: Board, path: str | Path, chosen: Design | None = None,
                     target_fps: float | None = None, cap: float = 0.8) -> Path:
    """Write a PNG of frame rate against LUT utilization: each activation precision's Pareto front in
    its own colour, the chosen design ringed, the target and the resource cap as dashed lines."""
    Figure, FigureCanvasAgg = _matplotlib()
    out = Path(path)
    if out.suffix.lower() != ".png":
        raise VaqfError(f"--plot writes a PNG; give a file name ending in .png, not {out.name!r}")
    if not out.parent.is_dir():
        raise VaqfError(f"cannot write the plot {out}: folder {out.parent} does not exist")
    fig = Figure(figsize=(7.5, 4.8))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    colours = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink"]
    fps_all = []
    for n, cand in enumerate(sorted(cands, key=lambda c: -c.act_bits)):
        idx = front_indices(cand.space, cap)
        if not idx:
            continue
        points = [cand.space.point(i) for i in idx]
        x = [100 * p.util[_LUT] for p in points]
        y = [p.fps for p in points]
        fps_all += y
        c = colours[n % len(colours)]
        ax.step(x, y, where="post", color=c, alpha=0.4, linewidth=1)
        ax.scatter(x, y, color=c, s=18, label=f"{cand.act_bits}-bit activations", zorder=3)
    if chosen is not None:
        util = 100 * chosen.estimate["utilization"]["lut"]
        ax.scatter([util], [chosen.estimate["fps"]], s=160, facecolors="none", edgecolors="black", linewidths=1.5,
                   label=f"chosen ({chosen.act_bits}-bit, {chosen.estimate['fps']:.4g} FPS)", zorder=4)
        fps_all.append(float(chosen.estimate["fps"]))
    if target_fps is not None:
        ax.axhline(target_fps, color="grey", linestyle="--", linewidth=1, label=f"target {target_fps:g} FPS")
    ax.axvline(100 * cap, color="grey", linestyle=":", linewidth=1, label=f"cap {cap * 100:.0f}%")
    if fps_all and max(fps_all) > 20 * min(fps_all):
        ax.set_yscale("log")
    ax.set_xlabel(f"LUT utilization of {board.name} (%)")
    ax.set_ylabel("estimated frame rate (FPS)")
    ax.set_title(f"design space on {board.name} ({board.clock_mhz:g} MHz): Pareto fronts")
    ax.grid(True, alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    return out


__all__ = ["plot_exploration"]
