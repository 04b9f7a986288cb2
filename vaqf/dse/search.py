"""Design-space search: unit parallelism against a frame-rate target under a resource cap.

Objective (documented in docs/design-space.md):
- a design is feasible when every resource is at most ``cap`` x the board's amount;
- with a target: among feasible designs whose frame rate meets it, the one with the fewest LUTs
  (ties: fewer DSPs, fewer BRAM18, then higher frame rate);
- without a target: the feasible design with the highest frame rate (ties: fewer LUTs).

Units are independent (sum of cycles, sum of resources), so each unit's options are first reduced to
its Pareto set (cycles vs resources). Up to MAX_COMBINATIONS the cross product of those sets is
evaluated exactly; beyond, candidates come from a Lagrangian sweep plus single-unit moves (see
``Space._candidates``), compared with exhaustive search in bench/bench_search.py.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass

import numpy as np

from vaqf.errors import InfeasibleDesign, VaqfError
from vaqf.hw.board import Board
from vaqf.hw.cost import RESOURCE_KEYS, Cost
from vaqf.hw.memory import plan_buffers, signed_bits
from vaqf.hw.model import SHELL, io_cycles, unit_cost, unit_knob_space, units_of
from vaqf.ir import Graph
from vaqf.dse.design import Design

log = logging.getLogger(__name__)

MAX_COMBINATIONS = 1_000_000


@dataclass
class _Option:
    knobs: dict[str, int]
    cycles: int
    hw: Cost


def act_bits_of(graph: Graph) -> int:
    plan = plan_buffers(graph)
    bits = [graph.value(v).info.qtype.bits for v, k in plan.kind_of.items() if k == "act"]
    return max(bits) if bits else 0


def _pareto(options: list[_Option]) -> list[_Option]:
    keys = np.array([[o.cycles] + [getattr(o.hw, r) for r in RESOURCE_KEYS] for o in options], dtype=np.float64)
    keep = []
    for i in range(len(options)):
        dominated = np.all(keys <= keys[i], axis=1) & np.any(keys < keys[i], axis=1)
        if not dominated.any():
            keep.append(i)
    # identical rows: keep the first
    seen = set()
    out = []
    for i in keep:
        t = tuple(keys[i])
        if t not in seen:
            seen.add(t)
            out.append(options[i])
    return out


class Space:
    """All candidate designs of a graph on a board, evaluated in bulk."""

    def __init__(self, graph: Graph, board: Board, fixed: dict[str, dict[str, int]] | None = None) -> None:
        self.graph = graph
        self.board = board
        self.units = units_of(graph)
        self.options: dict[str, list[_Option]] = {}
        for u, nodes in self.units.items():
            space = unit_knob_space(nodes)
            names = sorted(space)
            opts = []
            for combo in itertools.product(*(space[k] for k in names)):
                knobs = dict(zip(names, combo, strict=True))
                if fixed and u in fixed:
                    knobs = {k: int(v) for k, v in fixed[u].items()}
                cycles, hw, _ = unit_cost(nodes, knobs, board)
                opts.append(_Option(knobs, cycles, hw))
                if fixed and u in fixed:
                    break
            self.options[u] = _pareto(opts)
        self.unit_names = list(self.units)
        sizes = [len(self.options[u]) for u in self.unit_names]
        self.total = int(np.prod(sizes, dtype=np.float64)) if sizes else 1
        self.exact = self.total <= MAX_COMBINATIONS
        self.plan = plan_buffers(graph)
        self.fixed_cycles = io_cycles(graph)
        log.info("design space: %d units, %s options after per-unit Pareto pruning, %d combinations%s",
                 len(sizes), sizes, self.total, "" if self.exact else " (searched by Lagrangian sweep + single-unit moves)")
        self._evaluate()

    def _candidates(self) -> np.ndarray:
        """Rows of option indices (one column per unit) to evaluate.

        Small spaces: the full cross product (exact). Large spaces: for a sweep of trade-offs lambda and of
        resource weightings, every unit independently takes the option minimizing
        cycles + lambda * weighted resource use (the separable Lagrangian, which reaches every design on
        the convex hull of the Pareto front), and then every single-unit move away from each of those
        designs is added to cover the points between hull vertices.
        """
        sizes = [len(self.options[u]) for u in self.unit_names]
        if self.exact:
            return np.array(list(itertools.product(*(range(n) for n in sizes))),
                            dtype=np.int64).reshape(-1, len(sizes))
        caps = np.array([max(self.board.resources()[r], 1) for r in RESOURCE_KEYS], dtype=np.float64)
        cyc = [np.array([o.cycles for o in self.options[u]], dtype=np.float64) for u in self.unit_names]
        res = [np.array([[getattr(o.hw, r) for r in RESOURCE_KEYS] for o in self.options[u]],
                        dtype=np.float64) / caps for u in self.unit_names]
        total_cycles = sum(c.min() for c in cyc)
        weights = [np.ones(len(RESOURCE_KEYS))] + [np.eye(len(RESOURCE_KEYS))[k] + 0.05
                                                   for k in range(len(RESOURCE_KEYS))]
        rows = set()
        for w in weights:
            for lam in np.geomspace(total_cycles * 1e-4, total_cycles * 1e4, 161):
                rows.add(tuple(int(np.argmin(c + lam * (r @ w))) for c, r in zip(cyc, res, strict=True)))
        base = list(rows)
        for row in base:
            for j, n in enumerate(sizes):
                for o in range(n):
                    rows.add(row[:j] + (o,) + row[j + 1 :])
        return np.array(sorted(rows), dtype=np.int64)

    def _evaluate(self) -> None:
        idx = self._candidates()
        n = idx.shape[0]
        cycles = np.full(n, self.fixed_cycles, dtype=np.int64)
        res = np.tile(np.array([getattr(SHELL, r) for r in RESOURCE_KEYS], dtype=np.int64), (n, 1))
        simd = np.ones(n, dtype=np.int64)
        for j, u in enumerate(self.unit_names):
            opts = self.options[u]
            cyc_u = np.array([o.cycles for o in opts], dtype=np.int64)
            res_u = np.array([[getattr(o.hw, r) for r in RESOURCE_KEYS] for o in opts], dtype=np.int64)
            simd_u = np.array([o.knobs.get("simd", 1) for o in opts], dtype=np.int64)
            cycles += cyc_u[idx[:, j]]
            res += res_u[idx[:, j]]
            simd = np.maximum(simd, simd_u[idx[:, j]])
        bram_col = RESOURCE_KEYS.index("bram18")
        for s in np.unique(simd):
            res[simd == s, bram_col] += self.plan.bram18(int(s))
        self.idx, self.cycles, self.res = idx, cycles, res
        self.fps = self.board.clock_hz / np.maximum(cycles, 1)
        caps = np.array([self.board.resources()[r] for r in RESOURCE_KEYS], dtype=np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            util = np.where(caps > 0, res / np.where(caps > 0, caps, 1), np.where(res > 0, np.inf, 0.0))
        self.util = util

    def knobs(self, i: int) -> dict[str, dict[str, int]]:
        return {u: dict(self.options[u][self.idx[i, j]].knobs) for j, u in enumerate(self.unit_names)}

    def feasible(self, cap: float) -> np.ndarray:
        return np.all(self.util <= cap + 1e-12, axis=1)

    def binding(self, cap: float, faster_than: float) -> str:
        """The resource that stops a design faster than ``faster_than`` FPS from fitting."""
        faster = self.fps > faster_than * (1 + 1e-9)
        if not faster.any():
            return "parallelism (every unit is at its largest setting; latency is bounded by DDR and pipeline fill)"
        over = self.util[faster].max(axis=1)
        i = int(np.argmin(over))
        row = self.util[faster][i]
        r = int(np.argmax(row))
        return f"{RESOURCE_KEYS[r]} (the next faster design needs {row[r] * 100:.0f}% of it, cap {cap * 100:.0f}%)"


def _design(space: Space, i: int, graph: Graph, board: Board, target: float | None, cap: float,
            objective: str) -> Design:
    from vaqf.hw.model import estimate

    knobs = space.knobs(i)
    est = estimate(graph, board, knobs)
    return Design(board.name, act_bits_of(graph), knobs, board.clock_mhz, board.axi_bits, target,
                  objective, est.to_json())


def search(graph: Graph, board: Board, target_fps: float | None = None, cap: float = 0.8) -> Design:
    """The design vaqf picks (see module docstring for the objective)."""
    if target_fps is not None and not target_fps > 0:
        raise VaqfError(f"--fps must be positive, got {target_fps}")
    if not 0 < cap <= 1:
        raise VaqfError(f"resource cap must be in (0, 1], got {cap}")
    space = Space(graph, board)
    ok = space.feasible(cap)
    bits = act_bits_of(graph)
    if not ok.any():
        worst = space.util.min(axis=0)
        r = int(np.argmax(worst))
        raise InfeasibleDesign(
            f"no design fits {board.name} within {cap * 100:.0f}% of its resources at {bits}-bit activations: "
            f"the smallest needs {worst[r] * 100:.0f}% of its {RESOURCE_KEYS[r]}",
            [{"act_bits": bits, "fps": 0.0, "binding": RESOURCE_KEYS[r]}])
    best_fps = float(space.fps[ok].max())
    if target_fps is None:
        cand = np.flatnonzero(ok & (space.fps >= best_fps * (1 - 1e-12)))
        i = cand[np.lexsort((space.res[cand, 0],))][0]
        return _design(space, int(i), graph, board, None, cap, "max fps, then min LUT")
    meet = np.flatnonzero(ok & (space.fps >= target_fps))
    if meet.size == 0:
        binding = space.binding(cap, best_fps)
        raise InfeasibleDesign(
            f"{target_fps:g} FPS is not reachable on {board.name} (cap {cap * 100:.0f}% of each resource): "
            f"at {bits}-bit activations the best is {best_fps:.2f} FPS, bound by {binding}",
            [{"act_bits": bits, "fps": best_fps, "binding": binding}])
    r = space.res[meet]
    order = np.lexsort((-space.fps[meet], r[:, RESOURCE_KEYS.index("bram18")], r[:, RESOURCE_KEYS.index("dsp")],
                        r[:, RESOURCE_KEYS.index("lut")]))
    return _design(space, int(meet[order[0]]), graph, board, target_fps, cap,
                   f"meet {target_fps:g} FPS with min LUT (ties: DSP, BRAM18, then max FPS)")


def pareto_front(graph: Graph, board: Board, cap: float = 0.8, limit: int = 40) -> list[Design]:
    """Feasible designs not dominated in (FPS up, LUT down), fastest first."""
    space = Space(graph, board)
    ok = np.flatnonzero(space.feasible(cap))
    order = ok[np.lexsort((space.res[ok, 0], -space.fps[ok]))]
    front = []
    best_lut = np.inf
    for i in order:
        if space.res[i, 0] < best_lut:
            front.append(int(i))
            best_lut = space.res[i, 0]
    if len(front) > limit:
        pick = np.linspace(0, len(front) - 1, limit).round().astype(int)
        front = [front[j] for j in sorted(set(pick))]
    return [_design(space, i, graph, board, None, cap, "pareto") for i in front]


def design_for_knobs(graph: Graph, board: Board, knobs: dict[str, dict[str, int]],
                     target_fps: float | None = None) -> Design:
    """A design with pinned knobs (e.g. from ``--design FILE``), re-estimated for this graph."""
    from vaqf.hw.model import estimate

    est = estimate(graph, board, knobs)
    return Design(board.name, act_bits_of(graph), knobs, board.clock_mhz, board.axi_bits, target_fps,
                  "pinned", est.to_json())


__all__ = ["act_bits_of", "design_for_knobs", "pareto_front", "search", "signed_bits"]
