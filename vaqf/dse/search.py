"""Design-space search: activation precision and unit parallelism against a frame-rate target.

Objective (documented in docs/design-space.md):
- a design is feasible when every resource is at most ``cap`` x the board's amount;
- with a target: the highest activation precision (of the candidates) whose best design meets the
  target; at that precision, the design meeting the target with the fewest LUTs (ties: fewer DSPs, fewer
  BRAM18, then the higher frame rate, then the first in enumeration order);
- without a target: the highest precision that has a feasible design, and at it the feasible design
  with the highest frame rate (ties: fewer LUTs, DSPs, BRAM18);
- nothing qualifies: :class:`~vaqf.errors.InfeasibleDesign`, listing per precision the best reachable
  frame rate and the resource (or bandwidth) that stops a faster design.

Exactness. The design's cycles are the sum of the units' cycles and its resources the sum of the units'
resources plus the activation buffers, which depend only on the largest SIMD of any unit. All of these
are monotone in each unit's (cycles, LUT, FF, DSP, BRAM18, URAM, SIMD), so an option of a unit that is
no better in all of them than another option of that unit can be dropped: whatever design used it, the
same design with the other option is at least as good in every criterion above. Each unit's options are
reduced to that Pareto set; when the cross product of the sets is still large, units are merged pairwise
(the merged options again Pareto-reduced) until it is small; the cross product is then evaluated exactly,
in bulk. tests/dse/test_search.py checks the result against exhaustive enumeration with
:func:`vaqf.hw.model.estimate`.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from vaqf.dse.design import Design
from vaqf.errors import InfeasibleDesign, VaqfError
from vaqf.hw.board import Board
from vaqf.hw.cost import RESOURCE_KEYS, Cost
from vaqf.hw.memory import plan_buffers, signed_bits
from vaqf.hw.model import SHELL, estimate, io_cycles, unit_cost, unit_knob_space, units_of
from vaqf.ir import Graph

log = logging.getLogger(__name__)

#: candidate activation precisions, highest first (``vaqf compile``/``explore`` without --act-bits)
DEFAULT_ACT_BITS = (8, 6, 4)
#: designs evaluated in bulk at most; larger spaces are first reduced by merging units
MAX_COMBINATIONS = 1_000_000
#: a merge of two units' options that would exceed this is not attempted
MAX_MERGE = 50_000
_LUT, _FF, _DSP, _BRAM, _URAM = (RESOURCE_KEYS.index(k) for k in ("lut", "ff", "dsp", "bram18", "uram"))


@dataclass
class _Options:
    """Options of one unit (or of several merged units), as arrays, one row per option."""

    units: list[str]
    knobs: list[dict[str, dict[str, int]]]  # option -> unit -> knob -> value
    cycles: np.ndarray                      # int64 [n]
    res: np.ndarray                         # int64 [n, len(RESOURCE_KEYS)]
    simd: np.ndarray                        # int64 [n]: largest SIMD among the units
    ddr: np.ndarray                         # int64 [n]: DDR bytes per frame

    def __len__(self) -> int:
        return len(self.knobs)

    def keys(self) -> np.ndarray:
        return np.column_stack([self.cycles, self.res, self.simd]).astype(np.int64)

    def take(self, idx: np.ndarray) -> _Options:
        return _Options(self.units, [self.knobs[i] for i in idx], self.cycles[idx], self.res[idx],
                        self.simd[idx], self.ddr[idx])


def pareto_mask(keys: np.ndarray) -> np.ndarray:
    """Rows of ``keys`` (all to be minimized) that no other row dominates; of equal rows, the first.

    Rows are visited in lexicographic order, in which a dominating row always comes first, and each is
    compared with the rows kept so far only.
    """
    n = keys.shape[0]
    keep = np.zeros(n, dtype=bool)
    if n == 0:
        return keep
    order = np.lexsort(keys.T[::-1])
    front = np.empty((0, keys.shape[1]), dtype=keys.dtype)
    for i in order:
        row = keys[i]
        if front.shape[0] and np.any(np.all(front <= row, axis=1)):
            continue
        keep[i] = True
        front = np.vstack([front, row])
    return keep


def _pareto(opts: _Options) -> _Options:
    return opts.take(np.flatnonzero(pareto_mask(opts.keys())))


def _merge(a: _Options, b: _Options) -> _Options:
    ia, ib = np.meshgrid(np.arange(len(a)), np.arange(len(b)), indexing="ij")
    ia, ib = ia.ravel(), ib.ravel()
    merged = _Options(a.units + b.units, [{**a.knobs[i], **b.knobs[j]} for i, j in zip(ia, ib, strict=True)],
                      a.cycles[ia] + b.cycles[ib], a.res[ia] + b.res[ib], np.maximum(a.simd[ia], b.simd[ib]),
                      a.ddr[ia] + b.ddr[ib])
    return _pareto(merged)


def _cost_row(c: Cost) -> list[int]:
    return [getattr(c, r) for r in RESOURCE_KEYS]


class Space:
    """Every candidate design of a graph on a board (Pareto-reduced, see the module docstring), evaluated."""

    def __init__(self, graph: Graph, board: Board, fixed: dict[str, dict[str, int]] | None = None) -> None:
        self.graph = graph
        self.board = board
        self.units = units_of(graph)
        groups: list[_Options] = []
        raw = 1
        for u, nodes in self.units.items():
            if fixed and u in fixed:
                combos = [{k: int(v) for k, v in fixed[u].items()}]
            else:
                space = unit_knob_space(nodes)
                names = sorted(space)
                combos = [dict(zip(names, c, strict=True)) for c in itertools.product(*(space[k] for k in names))]
            raw *= len(combos)
            knobs, cycles, res, simd, ddr = [], [], [], [], []
            for kn in combos:
                cyc, hw, layers = unit_cost(nodes, kn, board)
                knobs.append({u: kn})
                cycles.append(cyc)
                res.append(_cost_row(hw))
                simd.append(int(kn.get("simd", 1)))
                ddr.append(sum(layer.ddr_bytes for layer in layers))
            groups.append(_pareto(_Options([u], knobs, np.array(cycles, dtype=np.int64),
                                           np.array(res, dtype=np.int64).reshape(-1, len(RESOURCE_KEYS)),
                                           np.array(simd, dtype=np.int64), np.array(ddr, dtype=np.int64))))
        self.raw_combinations = raw
        pruned = [len(g) for g in groups]
        while len(groups) > 1 and int(np.prod([len(g) for g in groups], dtype=np.float64)) > MAX_COMBINATIONS:
            groups.sort(key=len)
            if len(groups[0]) * len(groups[1]) > MAX_MERGE:
                break
            groups = [_merge(groups[0], groups[1])] + groups[2:]
        total = int(np.prod([len(g) for g in groups], dtype=np.float64)) if groups else 1
        if total > MAX_COMBINATIONS:
            raise VaqfError(f"the design space of {graph.name} is too large to search exactly ({total} "
                            f"combinations after pruning); pin some units' knobs with --design")
        self.groups = groups
        self.plan = plan_buffers(graph)
        self.fixed_cycles = io_cycles(graph)
        log.info("design space of %s on %s: %d units, %d knob combinations; %d evaluated after Pareto "
                 "pruning (per unit: %s)", graph.name, board.name, len(self.units), raw, total,
                 ", ".join(f"{u} {n}" for u, n in zip(self.units, pruned, strict=True)) or "none")
        self._evaluate()

    def _evaluate(self) -> None:
        sizes = [len(g) for g in self.groups]
        n = int(np.prod(sizes, dtype=np.int64)) if sizes else 1
        idx = np.indices(sizes, dtype=np.int64).reshape(len(sizes), -1).T if sizes else np.zeros((1, 0), np.int64)
        cycles = np.full(n, self.fixed_cycles, dtype=np.int64)
        res = np.tile(np.array(_cost_row(SHELL), dtype=np.int64), (n, 1))
        simd = np.ones(n, dtype=np.int64)
        ddr = np.zeros(n, dtype=np.int64)
        for j, g in enumerate(self.groups):
            cycles += g.cycles[idx[:, j]]
            res += g.res[idx[:, j]]
            simd = np.maximum(simd, g.simd[idx[:, j]])
            ddr += g.ddr[idx[:, j]]
        for s in np.unique(simd):
            buf = self.plan.cost(int(s))
            sel = simd == s
            res[sel, _LUT] += buf.lut
            res[sel, _BRAM] += buf.bram18
        self.idx, self.cycles, self.res, self.ddr = idx, cycles, res, ddr
        self.fps = self.board.clock_hz / np.maximum(cycles, 1)
        caps = np.array([self.board.resources()[r] for r in RESOURCE_KEYS], dtype=np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            self.util = np.where(caps > 0, res / np.where(caps > 0, caps, 1), np.where(res > 0, np.inf, 0.0))

    def __len__(self) -> int:
        return int(self.cycles.shape[0])

    def knobs(self, i: int) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for j, g in enumerate(self.groups):
            out.update({u: dict(k) for u, k in g.knobs[int(self.idx[i, j])].items()})
        return {u: out[u] for u in self.units}

    def feasible(self, cap: float) -> np.ndarray:
        return np.all(self.util <= cap + 1e-12, axis=1)

    def fastest(self, cap: float) -> int | None:
        """Index of the feasible design with the highest frame rate (ties: fewer LUT, DSP, BRAM18)."""
        ok = np.flatnonzero(self.feasible(cap))
        if ok.size == 0:
            return None
        r = self.res[ok]
        return int(ok[np.lexsort((r[:, _BRAM], r[:, _DSP], r[:, _LUT], self.cycles[ok]))[0]])

    def cheapest_meeting(self, target_fps: float, cap: float) -> int | None:
        """Index of the feasible design meeting ``target_fps`` with the fewest LUTs (ties: DSP, BRAM18, FPS)."""
        ok = np.flatnonzero(self.feasible(cap) & (self.fps >= target_fps))
        if ok.size == 0:
            return None
        r = self.res[ok]
        return int(ok[np.lexsort((self.cycles[ok], r[:, _BRAM], r[:, _DSP], r[:, _LUT]))[0]])

    def limit(self, cap: float) -> dict:
        """What stops this precision: the best feasible frame rate and the binding resource.

        The binding resource is the one a faster design runs out of first: among the designs faster
        than the best feasible one, the design that comes closest to fitting (smallest largest
        utilization / cap), and the resource it most exceeds. When no faster design exists at all, every
        unit is at its largest parallelism, and the frame rate is bound by DDR bandwidth if weight
        traffic takes most of the cycles, else by the parallelism the units offer.
        """
        best = self.fastest(cap)
        if best is None:
            worst = self.util.max(axis=1)
            i = int(np.argmin(worst))
            r = int(np.argmax(self.util[i]))
            return {"fps": 0.0, "binding": RESOURCE_KEYS[r],
                    "detail": f"even the smallest design needs {self.util[i, r] * 100:.0f}% of the "
                              f"{RESOURCE_KEYS[r].upper()} (cap {cap * 100:.0f}%)"}
        best_fps = float(self.fps[best])
        faster = np.flatnonzero(self.cycles < self.cycles[best])
        if faster.size:
            over = (self.util[faster] / cap).max(axis=1)
            i = int(faster[np.argmin(over)])
            r = int(np.argmax(self.util[i]))
            return {"fps": best_fps, "binding": RESOURCE_KEYS[r],
                    "detail": f"the next faster design ({self.fps[i]:.4g} FPS) needs {self.util[i, r] * 100:.0f}% "
                              f"of the {RESOURCE_KEYS[r].upper()} (cap {cap * 100:.0f}%)"}
        fastest = int(np.argmin(self.cycles))
        memory = self.ddr[fastest] / self.board.ddr_bytes_per_cycle
        if memory >= 0.5 * self.cycles[fastest]:
            return {"fps": best_fps, "binding": "ddr_bandwidth",
                    "detail": f"weight traffic from DDR takes {memory / self.cycles[fastest] * 100:.0f}% of the "
                              f"cycles at {self.board.ddr_bytes_per_cycle:.3g} bytes/cycle"}
        return {"fps": best_fps, "binding": "parallelism",
                "detail": "every unit is at its largest parallelism"}


@dataclass
class Candidate:
    """One activation precision: the graph imported at it and its design space."""

    act_bits: int
    graph: Graph
    space: Space = field(repr=False)


def act_bits_of(graph: Graph) -> int:
    plan = plan_buffers(graph)
    bits = [graph.value(v).info.qtype.bits for v, k in plan.kind_of.items() if k == "act"]
    return max(bits) if bits else 0


def _signature(graph: Graph) -> tuple:
    values = tuple((v.name, str(v.info.qtype), v.info.shape) for v in graph.values())
    return (tuple(n.op for n in graph.topo()), values)


def build_candidates(graph_for_bits: Callable[[int], Graph], board: Board,
                     bits: Iterable[int] = DEFAULT_ACT_BITS) -> list[Candidate]:
    """Import the model at each candidate precision (highest first) and build each design space.

    A model that fixes its own activation precision (QONNX/QDQ quantizers) gives the same graph for
    every request; it then yields a single candidate labelled with its own activation bits.
    """
    wanted = sorted({int(b) for b in bits}, reverse=True)
    if not wanted:
        raise VaqfError("no candidate activation bit widths given")
    for b in wanted:
        if not 2 <= b <= 16:
            raise VaqfError(f"candidate activation bits must be within 2..16, got {b}")
    graphs: list[tuple[int, Graph]] = []
    seen: set[tuple] = set()
    for pos, b in enumerate(wanted):
        g = graph_for_bits(b)
        sig = _signature(g)
        if sig in seen:
            if pos == 1:  # the second request gave the first graph back: the model fixes its precision
                own = act_bits_of(graphs[0][1])
                log.info("the model fixes its activation precision (%d bits): searching that precision only", own)
                graphs = [(own, graphs[0][1])]
                break
            log.info("%d-bit activations give the same graph as a higher precision; skipped", b)
            continue
        seen.add(sig)
        graphs.append((b, g))
    return [Candidate(b, g, Space(g, board)) for b, g in graphs]


def _design(cand: Candidate, i: int, board: Board, target: float | None, objective: str) -> Design:
    knobs = cand.space.knobs(i)
    est = estimate(cand.graph, board, knobs)
    return Design(board.name, cand.act_bits, knobs, board.clock_mhz, board.axi_bits, target, objective,
                  est.to_json())


def _check_request(target_fps: float | None, cap: float) -> None:
    if target_fps is not None and not target_fps > 0:
        raise VaqfError(f"--fps must be positive, got {target_fps}")
    if not 0 < cap <= 1:
        raise VaqfError(f"resource cap must be in (0, 1], got {cap}")


def select(cands: Sequence[Candidate], board: Board, target_fps: float | None = None,
           cap: float = 0.8) -> tuple[Design, Candidate]:
    """The design vaqf picks among the candidate precisions (see the module docstring), and its candidate."""
    _check_request(target_fps, cap)
    limits = []
    for cand in sorted(cands, key=lambda c: -c.act_bits):
        sp = cand.space
        if target_fps is None:
            i = sp.fastest(cap)
            if i is not None:
                return _design(cand, i, board, None, f"highest activation precision with a feasible design "
                               f"({cand.act_bits} bits), then max FPS, then min LUT"), cand
        else:
            i = sp.cheapest_meeting(target_fps, cap)
            if i is not None:
                return _design(cand, i, board, target_fps,
                               f"highest activation precision meeting {target_fps:g} FPS ({cand.act_bits} bits), "
                               "then min LUT (ties: DSP, BRAM18, then max FPS)"), cand
        limits.append({"act_bits": cand.act_bits, **sp.limit(cap)})
    lines = [f"  {d['act_bits']}-bit activations: best {d['fps']:.4g} FPS, bound by {d['binding']} ({d['detail']})"
             for d in limits]
    what = f"{target_fps:g} FPS is not reachable" if target_fps is not None else "no design fits"
    raise InfeasibleDesign(f"{what} on {board.name} within {cap * 100:.0f}% of each resource:\n" + "\n".join(lines)
                           + "\nlower the target, raise --cap, use fewer activation bits or a larger board", limits)


def search(graph: Graph, board: Board, target_fps: float | None = None, cap: float = 0.8) -> Design:
    """The design vaqf picks for ``graph`` at its own activation precision."""
    _check_request(target_fps, cap)
    return select([Candidate(act_bits_of(graph), graph, Space(graph, board))], board, target_fps, cap)[0]


def search_act_bits(graph_for_bits: Callable[[int], Graph], board: Board, target_fps: float | None = None,
                    cap: float = 0.8, bits: Iterable[int] = DEFAULT_ACT_BITS) -> Design:
    """The design vaqf picks over activation precisions ``bits``: ``graph_for_bits(b)`` is the model
    imported with b-bit activations (the importer re-run with ``--act-bits b`` for a float model)."""
    _check_request(target_fps, cap)
    return select(build_candidates(graph_for_bits, board, bits), board, target_fps, cap)[0]


def front_indices(space: Space, cap: float) -> list[int]:
    """Feasible designs of one space not dominated in (FPS up, LUT down), fastest first.

    Of designs with equal FPS and LUT, the one with fewer DSPs, then BRAM18, is kept."""
    ok = np.flatnonzero(space.feasible(cap))
    if ok.size == 0:
        return []
    r = space.res[ok]
    order = ok[np.lexsort((r[:, _BRAM], r[:, _DSP], r[:, _LUT], space.cycles[ok]))]
    front = []
    best_lut = np.inf
    for i in order:
        if space.res[i, _LUT] < best_lut:
            front.append(int(i))
            best_lut = space.res[i, _LUT]
    return front


def pareto_designs(cands: Sequence[Candidate], board: Board, cap: float = 0.8,
                   limit: int | None = 40) -> list[Design]:
    """Feasible designs not dominated in (activation bits up, FPS up, LUT down), fastest first.

    A design of fewer activation bits stays only if it is faster or smaller than every design of more
    bits. ``limit`` keeps that many, evenly spread along the front (None: all)."""
    points = []  # (bits, cycles, lut, cand, index)
    for cand in cands:
        for i in front_indices(cand.space, cap):
            points.append((cand.act_bits, int(cand.space.cycles[i]), int(cand.space.res[i, _LUT]), cand, i))
    kept = []
    for p in points:
        dominated = any(q[0] >= p[0] and q[1] <= p[1] and q[2] <= p[2] and (q[0], q[1], q[2]) != (p[0], p[1], p[2])
                        for q in points)
        if not dominated:
            kept.append(p)
    kept.sort(key=lambda p: (p[1], p[2], -p[0]))
    if limit is not None and len(kept) > limit:
        pick = np.linspace(0, len(kept) - 1, limit).round().astype(int)
        kept = [kept[j] for j in sorted(set(pick.tolist()))]
    return [_design(p[3], p[4], board, None, "pareto") for p in kept]


def pareto_front(graph: Graph, board: Board, cap: float = 0.8, limit: int | None = 40) -> list[Design]:
    """Feasible designs of ``graph`` not dominated in (FPS up, LUT down), fastest first."""
    return pareto_designs([Candidate(act_bits_of(graph), graph, Space(graph, board))], board, cap, limit)


def design_for_knobs(graph: Graph, board: Board, knobs: dict[str, dict[str, int]],
                     target_fps: float | None = None, act_bits: int | None = None) -> Design:
    """A design with pinned knobs (e.g. from ``--design FILE``), re-estimated for this graph."""
    est = estimate(graph, board, knobs)
    bits = act_bits if act_bits is not None else act_bits_of(graph)
    return Design(board.name, bits, knobs, board.clock_mhz, board.axi_bits, target_fps, "pinned", est.to_json())


__all__ = ["DEFAULT_ACT_BITS", "Candidate", "Space", "act_bits_of", "build_candidates", "design_for_knobs",
           "front_indices", "pareto_designs", "pareto_front", "pareto_mask", "search", "search_act_bits", "select",
           "signed_bits"]
