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

Architectures. Every candidate precision is searched as a layer-sequential engine (this module's spaces) and,
when the graph streams (vaqf.dataflow.pipeline), as a dataflow pipeline (vaqf.dataflow.plan); the objective
above picks between the two best designs (fewer LUTs at a target, else the higher steady-state frame rate), and
the design's objective text says which was chosen and what the other offered.

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
from typing import TYPE_CHECKING

import numpy as np

from vaqf.dse.design import Design
from vaqf.errors import InfeasibleDesign, VaqfError
from vaqf.hw.board import Board
from vaqf.hw.cost import RESOURCE_KEYS, Cost
from vaqf.hw.layout import design_lanes, lane_choices_up_to, last_dim
from vaqf.hw.memory import plan_buffers, signed_bits
from vaqf.hw.model import (
    SHELL,
    buffers_cost,
    cost_groups,
    estimate,
    io_cycles,
    unit_knob_space,
    unit_options,
    units_of,
)
from vaqf.ir import Graph
from vaqf.ops import get_spec

if TYPE_CHECKING:
    from vaqf.dataflow.plan import DataflowPlan

log = logging.getLogger(__name__)

#: candidate activation precisions, highest first (``vaqf compile``/``explore`` without --act-bits)
DEFAULT_ACT_BITS = (8, 6, 4)
#: designs evaluated per block of the final cross product (bounds memory, not the size of the space)
BLOCK = 1 << 18
#: an option (or partial design) needing more than this multiple of any board resource can never fit
#: and is dropped early; below it, infeasible designs are kept to name the binding resource
OVER_BOARD = 2.0
#: the infeasibility diagnosis looks at designs up to this multiple of the cap (within OVER_BOARD)
RELAXED_ROOM = 1.5
#: a faster design that gains no more than this fraction does not make its resource "binding"
MARGINAL_GAIN = 0.05
_LUT, _FF, _DSP, _BRAM, _URAM = (RESOURCE_KEYS.index(k) for k in ("lut", "ff", "dsp", "bram18", "uram"))


@dataclass
class _Options:
    """Options of one unit (or of several merged units), as arrays, one row per option.

    An option's knobs are looked up, not stored: row i is ``source[rows[i]]`` for one unit (a list of
    knob dicts), or the union of row ``rows[i, 0]`` of ``source[0]`` and row ``rows[i, 1]`` of
    ``source[1]`` for merged units (merging builds no dicts for the options it then drops).
    """

    units: list[str]
    source: list[dict[str, dict[str, int]]] | tuple[_Options, _Options]
    rows: np.ndarray                        # int64 [n] or [n, 2]: where each option's knobs come from
    cycles: np.ndarray                      # int64 [n]
    res: np.ndarray                         # int64 [n, len(RESOURCE_KEYS)]
    simd: np.ndarray                        # int64 [n]: largest SIMD among the units
    ddr: np.ndarray                         # int64 [n]: DDR bytes per frame

    def __len__(self) -> int:
        return len(self.cycles)

    def knobs(self, i: int) -> dict[str, dict[str, int]]:
        """Unit -> knob -> value of option ``i``."""
        if isinstance(self.source, tuple):
            ia, ib = self.rows[i]
            return {**self.source[0].knobs(int(ia)), **self.source[1].knobs(int(ib))}
        return self.source[int(self.rows[i])]

    def keys(self, cols: Sequence[int] | None = None) -> np.ndarray:
        res = self.res if cols is None else self.res[:, list(cols)]
        return np.column_stack([self.cycles, res, self.simd]).astype(np.int64)

    def take(self, idx: np.ndarray) -> _Options:
        return _Options(self.units, self.source, self.rows[idx], self.cycles[idx], self.res[idx], self.simd[idx],
                        self.ddr[idx])

    @classmethod
    def of_unit(cls, unit: str, knobs: list[dict[str, int]], cycles: Sequence[int], res: Sequence[Sequence[int]],
                ddr: Sequence[int]) -> _Options:
        return cls([unit], [{unit: kn} for kn in knobs], np.arange(len(knobs), dtype=np.int64),
                   np.array(cycles, dtype=np.int64), np.array(res, dtype=np.int64).reshape(-1, len(RESOURCE_KEYS)),
                   np.array([int(kn.get("simd", kn.get("lanes", 1))) for kn in knobs], dtype=np.int64),
                   np.array(ddr, dtype=np.int64))

    @classmethod
    def empty(cls) -> _Options:
        """The options of no unit at all: one option costing nothing."""
        return cls([], [{}], np.zeros(1, np.int64), np.zeros(1, np.int64), np.zeros((1, len(RESOURCE_KEYS)), np.int64),
                   np.ones(1, np.int64), np.zeros(1, np.int64))


def _loops():  # noqa: ANN202
    """vaqf.dse.pareto, imported on first use (numba loads then, not with vaqf)."""
    from vaqf.dse import pareto

    return pareto


def pareto_mask(keys: np.ndarray) -> np.ndarray:
    """Rows of ``keys`` (all to be minimized) that no other row dominates; of equal rows, the first.

    In lexicographic order a row can only be dominated by (or equal to) a row before it, so rows are
    taken in that order and a row is dropped when a kept row is <= it everywhere
    (:func:`vaqf.dse.pareto.pareto_sorted`).
    """
    n = keys.shape[0]
    keep = np.zeros(n, dtype=bool)
    if n == 0:
        return keep
    k = keys[:, keys.max(axis=0) != keys.min(axis=0)]  # constant columns decide nothing
    if k.shape[1] == 0:
        keep[0] = True
        return keep
    order = np.lexsort(k.T[::-1])  # stable: of equal rows, the first comes first
    keep[order[_loops().pareto_sorted(np.ascontiguousarray(k[order], dtype=np.int64))]] = True
    return keep


def _pareto(opts: _Options, cols: Sequence[int] | None = None) -> _Options:
    return opts.take(np.flatnonzero(pareto_mask(opts.keys(cols))))


def _within(opts: _Options, room: np.ndarray) -> _Options:
    """The options using at most ``room`` of every resource (the least demanding one if none does)."""
    ok = np.all(opts.res <= room, axis=1)
    if not ok.any():
        with np.errstate(divide="ignore", invalid="ignore"):
            over = np.where(room > 0, opts.res / np.maximum(room, 1), np.where(opts.res > 0, np.inf, 0.0))
        ok = np.zeros(len(opts), dtype=bool)
        ok[int(np.argmin(over.max(axis=1)))] = True
    return opts.take(np.flatnonzero(ok))


def _merge(a: _Options, b: _Options, room: np.ndarray, cols: Sequence[int] | None = None) -> _Options:
    ia, ib = np.meshgrid(np.arange(len(a)), np.arange(len(b)), indexing="ij")
    ia, ib = ia.ravel(), ib.ravel()
    res = a.res[ia] + b.res[ib]
    ok = np.all(res <= room, axis=1)
    if not ok.any():
        ok[:] = True
    ia, ib = ia[ok], ib[ok]
    merged = _Options(a.units + b.units, (a, b), np.column_stack([ia, ib]), a.cycles[ia] + b.cycles[ib], res[ok],
                      np.maximum(a.simd[ia], b.simd[ib]), a.ddr[ia] + b.ddr[ib])
    return _pareto(merged, cols)


def _cost_row(c: Cost) -> list[int]:
    return [getattr(c, r) for r in RESOURCE_KEYS]


@dataclass
class Point:
    """One design of a space: its cycles, frame rate, resources and their utilization of the board."""

    cycles: int
    fps: float
    res: np.ndarray
    util: np.ndarray
    ddr: int


class LaneSpace:
    """The candidate designs of a graph on a board that use at most ``room`` of every board resource.

    Options of each unit that cannot be part of such a design are dropped, each unit's options are
    Pareto-reduced (module docstring), and units are merged (each merge Pareto-reduced and pruned the
    same way) down to two groups A and B; the designs are the cross product A x B, design i being
    (i // len(B), i % len(B)). Queries scan that product block by block. A search with resource cap c is
    exact on a space with room >= c.
    """

    def __init__(self, graph: Graph, board: Board, fixed: dict[str, dict[str, int]] | None = None,
                 room: float = 1.0, lanes: int = 1, groups: dict[str, list] | None = None) -> None:
        self.graph = graph
        self.board = board
        self.room = float(room)
        self.fixed = fixed
        self.lanes = int(lanes)
        self.units = units_of(graph)
        self._groups = groups
        self.caps = np.array([board.resources()[r] for r in RESOURCE_KEYS], dtype=np.float64)
        self.plan = plan_buffers(graph, self.lanes)
        self.fixed_cycles = io_cycles(graph, self.lanes, board.axi_bits)
        self._shell = np.array(_cost_row(SHELL), dtype=np.int64)
        self._buffers: dict[int, Cost] = {}
        self._relaxed: Space | None = None
        units: list[_Options] = []
        raw = 1
        for u, nodes in self.units.items():
            if fixed and u in fixed:
                combos = [{k: int(v) for k, v in fixed[u].items()}]
            else:
                space = unit_knob_space(nodes)
                for lane_key in ("simd", "lanes"):  # every unit reads and writes words of the design's lanes
                    if lane_key in space:
                        space[lane_key] = [self.lanes]
                names = sorted(space)
                combos = [dict(zip(names, c, strict=True)) for c in itertools.product(*(space[k] for k in names))]
            raw *= len(combos)
            cycles, hws, ddr = unit_options(nodes, combos, board, None if groups is None else groups[u])
            units.append(_Options.of_unit(u, combos, cycles, [_cost_row(h) for h in hws], ddr))
        self.raw_combinations = raw
        # what every design needs besides its units' options: the shell and the cheapest buffer plan
        simds = sorted({1, *(int(x) for o in units for x in o.simd)})
        base = self._shell + np.min([_cost_row(self._buffer(x)) for x in simds], axis=0)
        limit = np.floor((self.room + 1e-12) * self.caps).astype(np.int64) - base
        mins = [o.res.min(axis=0) for o in units]
        total_min = np.sum(mins, axis=0) if mins else np.zeros(len(RESOURCE_KEYS), np.int64)
        # a resource no design can exhaust within the room decides nothing: leave it out of the keys
        most = self._shell + np.max([_cost_row(self._buffer(x)) for x in simds], axis=0) + \
            (np.sum([o.res.max(axis=0) for o in units], axis=0) if units else 0)
        self._key_cols = [j for j, r in enumerate(RESOURCE_KEYS)
                          if r in ("lut", "dsp", "bram18") or most[j] > limit[j] + base[j]]
        groups = [_pareto(_within(o, limit - (total_min - m)), self._key_cols)
                  for o, m in zip(units, mins, strict=True)]
        pruned = [len(g) for g in groups]
        while len(groups) > 2:
            groups.sort(key=len)
            rest = sum((g.res.min(axis=0) for g in groups[2:]), np.zeros(len(RESOURCE_KEYS), np.int64))
            groups = [_merge(groups[0], groups[1], limit - rest, self._key_cols)] + groups[2:]
        while len(groups) < 2:
            groups.append(_Options.empty())
        self.a, self.b = sorted(groups, key=len, reverse=True)
        # SIMD as an index into its sorted values, and the activation buffers' LUT and BRAM18 per index
        self._simds = np.array(sorted({*self.a.simd.tolist(), *self.b.simd.tolist()}), dtype=np.int64)
        self._a_simd = np.searchsorted(self._simds, self.a.simd).astype(np.int64)
        self._b_simd = np.searchsorted(self._simds, self.b.simd).astype(np.int64)
        self._buf_lut = np.array([self._buffer(int(x)).lut for x in self._simds], dtype=np.int64)
        self._buf_bram = np.array([self._buffer(int(x)).bram18 for x in self._simds], dtype=np.int64)
        log.debug("design space of %s on %s: %d units, %d knob combinations; %d evaluated after Pareto "
                 "pruning (per unit: %s)", graph.name, board.name, len(self.units), raw, len(self),
                 ", ".join(f"{u} {n}" for u, n in zip(self.units, pruned, strict=True)) or "none")

    def __len__(self) -> int:
        return len(self.a) * len(self.b)

    def _buffer(self, simd: int) -> Cost:
        """The buffers and their sharing multiplexers: the same for every design of this space (one lane
        count); the ``simd`` column of the options is that count throughout."""
        if not self._buffers:
            self._buffers[self.lanes] = buffers_cost(self.plan, self.graph)
        return self._buffers[self.lanes]

    def _util(self, res: np.ndarray) -> np.ndarray:
        caps = self.caps
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(caps > 0, res / np.where(caps > 0, caps, 1), np.where(res > 0, np.inf, 0.0))

    def _threshold(self, cap: float) -> np.ndarray:
        """The most of each resource a design within ``cap`` may use (utilization <= cap, as integers)."""
        return np.floor((cap + 1e-12) * self.caps).astype(np.int64)

    def blocks(self):
        """(first index, cycles [n], resources [n, R]) of successive slices of the space."""
        nb = len(self.b)
        rows = max(1, BLOCK // nb)
        for a0 in range(0, len(self.a), rows):
            a1 = min(a0 + rows, len(self.a))
            cycles = (self.fixed_cycles + self.a.cycles[a0:a1, None] + self.b.cycles[None, :]).ravel()
            res = (self._shell + self.a.res[a0:a1, None, :] + self.b.res[None, :, :]).reshape(-1, len(RESOURCE_KEYS))
            simd = np.maximum(self.a.simd[a0:a1, None], self.b.simd[None, :]).ravel()
            values = np.unique(simd)
            if len(values) == 1:
                res[:, _LUT] += self._buffer(int(values[0])).lut
                res[:, _BRAM] += self._buffer(int(values[0])).bram18
            else:
                for v in values:
                    sel = simd == v
                    res[sel, _LUT] += self._buffer(int(v)).lut
                    res[sel, _BRAM] += self._buffer(int(v)).bram18
            yield a0 * nb, cycles, res

    def fps_of(self, cycles: np.ndarray) -> np.ndarray:
        return self.board.clock_hz / np.maximum(cycles, 1)

    def point(self, i: int) -> Point:
        ia, ib = divmod(int(i), len(self.b))
        cycles = int(self.fixed_cycles + self.a.cycles[ia] + self.b.cycles[ib])
        res = self._shell + self.a.res[ia] + self.b.res[ib]
        buf = self._buffer(int(max(self.a.simd[ia], self.b.simd[ib])))
        res[_LUT] += buf.lut
        res[_BRAM] += buf.bram18
        return Point(cycles, float(self.fps_of(np.array([cycles]))[0]), res, self._util(res),
                     int(self.a.ddr[ia] + self.b.ddr[ib]))

    def knobs(self, i: int) -> dict[str, dict[str, int]]:
        ia, ib = divmod(int(i), len(self.b))
        out = {**self.a.knobs(ia), **self.b.knobs(ib)}
        return {u: dict(out[u]) for u in self.units}

    def _query(self, kind: int, cap: float = 1.0, max_cycles: int = 0) -> int | None:
        """The design of this space minimizing a key (:func:`vaqf.dse.pareto.argmin_product`), or None."""
        i = _loops().argmin_product(kind, self.a.cycles, self.a.res, self._a_simd, self.b.cycles, self.b.res,
                                   self._b_simd, np.int64(self.fixed_cycles), self._shell, self._buf_lut,
                                   self._buf_bram, _LUT, _DSP, _BRAM, self._threshold(cap), self.caps,
                                   np.int64(max_cycles))
        return None if i < 0 else int(i)

    def _check_room(self, cap: float) -> None:
        if cap > self.room + 1e-12:
            raise VaqfError(f"this design space holds designs within {self.room:g} of the board; a cap of {cap:g} "
                            "needs a space built with room >= cap")

    def fastest(self, cap: float) -> int | None:
        """The feasible design with the highest frame rate (ties: fewer LUT, DSP, BRAM18)."""
        self._check_room(cap)
        return self._query(_loops().FASTEST, cap)

    def max_cycles(self, target_fps: float) -> int:
        """The most cycles a frame may take to reach ``target_fps`` (as :meth:`fps_of` computes frame rates)."""
        def fps(c: int) -> float:  # the float64 division of fps_of
            return self.board.clock_hz / max(c, 1)

        c = int(self.board.clock_hz // target_fps)  # then exact, whatever the rounding of that division
        while c > 0 and fps(c) < target_fps:
            c -= 1
        while fps(c + 1) >= target_fps:
            c += 1
        return c  # 0: no frame is fast enough

    def cheapest_meeting(self, target_fps: float, cap: float) -> int | None:
        """The feasible design meeting ``target_fps`` with the fewest LUTs (ties: DSP, BRAM18, FPS)."""
        self._check_room(cap)
        return self._query(_loops().CHEAPEST, cap, self.max_cycles(target_fps))

    def front(self, cap: float) -> list[int]:
        """Feasible designs not dominated in (FPS up, LUT down), fastest first; of designs with equal FPS
        and LUT, the one with fewer DSPs, then BRAM18."""
        self._check_room(cap)
        th = self._threshold(cap)
        parts = []
        for start, cycles, res in self.blocks():
            ok = np.flatnonzero(np.all(res <= th, axis=1))
            if ok.size:
                parts.append(_front2(cycles[ok], res[ok], start + ok))
        if not parts:
            return []
        c, r, i = (np.concatenate(x) for x in zip(*parts, strict=True))
        return [int(x) for x in _front2(c, r, i)[2]]

    def limit(self, cap: float) -> dict:
        """What stops this precision: the best feasible frame rate and the binding resource.

        The binding resource is the one a faster design runs out of first: among the designs faster
        than the best feasible one, the design that comes closest to fitting (smallest largest
        utilization), and the resource it most exceeds. When no faster design exists, every unit is at
        its largest parallelism, and the frame rate is bound by DDR bandwidth if weight traffic takes most
        of the cycles, else by the parallelism the units offer; the same when more resources would gain
        at most MARGINAL_GAIN. Faster designs are looked for among those within RELAXED_ROOM x cap of the
        board (at most OVER_BOARD).
        """
        best = self.fastest(cap)
        relaxed = self.relaxed(cap)
        if best is None:
            i = relaxed._query(_loops().CLOSEST)
            if i is None:
                return {"fps": 0.0, "binding": "parallelism", "detail": "the design space is empty"}
            p = relaxed.point(i)
            r = int(np.argmax(p.util))
            return {"fps": 0.0, "binding": RESOURCE_KEYS[r], "need": float(p.util[r]),
                    "detail": f"even the smallest design needs {p.util[r] * 100:.0f}% of the "
                              f"{RESOURCE_KEYS[r].upper()} (cap {cap * 100:.0f}%)"}
        bp = self.point(best)
        i = relaxed._query(_loops().CLOSEST_FASTER, max_cycles=bp.cycles)
        top = relaxed._query(_loops().FEWEST_CYCLES)
        gain = relaxed.point(top).fps / bp.fps - 1 if top is not None else 0.0
        return _binding(bp, None if i is None else relaxed.point(i), gain, cap, self.board)

    def relaxed(self, cap: float) -> Space:
        """A space of the same graph with room for the designs that just miss ``cap`` (for diagnostics)."""
        room = diagnosis_room(cap)
        if self.room >= room:
            return self
        if self._relaxed is None or self._relaxed.room < room:
            self._relaxed = LaneSpace(self.graph, self.board, self.fixed, room, self.lanes, self._groups)
        return self._relaxed


def graph_lane_choices(graph: Graph) -> list[int]:
    """The lane counts a design of ``graph`` may use: powers of two up to the first that holds its longest
    row (wider words would only add idle lanes)."""
    return lane_choices_up_to(max((last_dim(v.info) for v in graph.values()), default=1))


class Space:
    """Every design of a graph on a board: the union of one :class:`LaneSpace` per lane count the design's
    activation words may have (every unit reads and writes words of that many lanes, so a design has one).
    Design i is design ``i - offset[j]`` of lane space j. Queries answer over all lane spaces with the ties of
    :class:`LaneSpace` (then the fewer lanes)."""

    def __init__(self, graph: Graph, board: Board, fixed: dict[str, dict[str, int]] | None = None,
                 room: float = 1.0, lanes: Sequence[int] | None = None) -> None:
        self.graph = graph
        self.board = board
        self.room = float(room)
        self.fixed = fixed
        self.units = units_of(graph)
        from vaqf.hw.layout import lane_knob

        pinned = {lane_knob(k) for k in (fixed or {}).values()} - {None}
        choices = sorted(pinned) if pinned else list(lanes or graph_lane_choices(graph))
        if len(choices) > 1 and pinned:
            choices = [max(choices)]  # disagreeing pins: estimate() names the conflict
        groups = {u: cost_groups(nodes) for u, nodes in self.units.items()}  # the cost keys, once for every L
        self.spaces = [LaneSpace(graph, board, fixed, room, v, groups) for v in choices]
        self.offsets = np.cumsum([0] + [len(sp) for sp in self.spaces])
        self.raw_combinations = sum(sp.raw_combinations for sp in self.spaces)
        self.fixed_cycles = self.spaces[0].fixed_cycles
        self._relaxed: Space | None = None
        log.info("design space of %s on %s: %d units, %d knob combinations over %d lane counts (%s); %d evaluated "
                 "after Pareto pruning", graph.name, board.name, len(self.units), self.raw_combinations,
                 len(choices), ", ".join(map(str, choices)), len(self))

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def _locate(self, i: int) -> tuple[LaneSpace, int]:
        j = int(np.searchsorted(self.offsets, int(i), side="right") - 1)
        return self.spaces[j], int(i) - int(self.offsets[j])

    def point(self, i: int) -> Point:
        sp, k = self._locate(i)
        return sp.point(k)

    def knobs(self, i: int) -> dict[str, dict[str, int]]:
        sp, k = self._locate(i)
        return sp.knobs(k)

    def fps_of(self, cycles: np.ndarray) -> np.ndarray:
        return self.spaces[0].fps_of(cycles)

    def max_cycles(self, target_fps: float) -> int:
        return self.spaces[0].max_cycles(target_fps)

    def blocks(self):
        for j, sp in enumerate(self.spaces):
            for start, cycles, res in sp.blocks():
                yield int(self.offsets[j]) + start, cycles, res

    def _best(self, found: list[int | None], key: Callable[[Point], tuple]) -> int | None:
        best, best_key = None, None
        for j, k in enumerate(found):
            if k is None:
                continue
            kk = key(self.spaces[j].point(k))
            if best_key is None or kk < best_key:
                best, best_key = int(self.offsets[j]) + k, kk
        return best

    def fastest(self, cap: float) -> int | None:
        """The feasible design with the highest frame rate (ties: fewer LUT, DSP, BRAM18, then fewer lanes)."""
        return self._best([sp.fastest(cap) for sp in self.spaces],
                          lambda p: (p.cycles, int(p.res[_LUT]), int(p.res[_DSP]), int(p.res[_BRAM])))

    def cheapest_meeting(self, target_fps: float, cap: float) -> int | None:
        """The feasible design meeting ``target_fps`` with the fewest LUTs (ties: DSP, BRAM18, FPS, lanes)."""
        return self._best([sp.cheapest_meeting(target_fps, cap) for sp in self.spaces],
                          lambda p: (int(p.res[_LUT]), int(p.res[_DSP]), int(p.res[_BRAM]), p.cycles))

    def front(self, cap: float) -> list[int]:
        """Feasible designs not dominated in (FPS up, LUT down) over every lane count, fastest first."""
        idx = [int(self.offsets[j]) + k for j, sp in enumerate(self.spaces) for k in sp.front(cap)]
        if not idx:
            return []
        pts = [self.point(i) for i in idx]
        cycles = np.array([p.cycles for p in pts], dtype=np.int64)
        res = np.array([p.res for p in pts], dtype=np.int64)
        return [int(x) for x in _front2(cycles, res, np.array(idx, dtype=np.int64))[2]]

    def limit(self, cap: float) -> dict:
        """:meth:`LaneSpace.limit` over every lane count: the faster designs looked at are those of every
        lane space; the one closest to fitting names the binding resource."""
        best = self.fastest(cap)
        if best is None:
            return min((sp.limit(cap) for sp in self.spaces), key=lambda d: d["detail"])
        bp = self.point(best)
        near: list[Point] = []
        tops: list[Point] = []
        for sp in self.spaces:
            rel = sp.relaxed(cap)
            i = rel._query(_loops().CLOSEST_FASTER, max_cycles=bp.cycles)
            if i is not None:
                near.append(rel.point(i))
            t = rel._query(_loops().FEWEST_CYCLES)
            if t is not None:
                tops.append(rel.point(t))
        gain = max(p.fps for p in tops) / bp.fps - 1 if tops else 0.0
        closest = min(near, key=lambda q: (float(np.max(q.util)), q.cycles)) if near else None
        return _binding(bp, closest, gain, cap, self.board)

    def relaxed(self, cap: float) -> Space:
        room = diagnosis_room(cap)
        if self.room >= room:
            return self
        if self._relaxed is None or self._relaxed.room < room:
            self._relaxed = Space(self.graph, self.board, self.fixed, room, [sp.lanes for sp in self.spaces])
        return self._relaxed


def _binding(bp: Point, closest: Point | None, gain: float, cap: float, board: Board) -> dict:
    """What stops the best feasible design ``bp``: the resource the faster design closest to fitting
    (``closest``) exceeds most, when more resources would gain more than MARGINAL_GAIN (``gain``); else DDR
    bandwidth when weight traffic takes most of the cycles, else the knob ranges."""
    if closest is not None and gain > MARGINAL_GAIN:
        r = int(np.argmax(closest.util))
        return {"fps": bp.fps, "binding": RESOURCE_KEYS[r], "need": float(closest.util[r]),
                "reach": bp.fps * (1 + gain),
                "detail": f"the next faster design ({closest.fps:.4g} FPS) needs {closest.util[r] * 100:.0f}% "
                          f"of the {RESOURCE_KEYS[r].upper()} (cap {cap * 100:.0f}%)"}
    more = f"; more resources would gain at most {gain * 100:.1f}%" if closest is not None else ""
    memory = bp.ddr / board.ddr_bytes_per_cycle
    if memory >= 0.5 * bp.cycles:
        return {"fps": bp.fps, "binding": "ddr_bandwidth",
                "detail": f"weight traffic from DDR takes {memory / bp.cycles * 100:.0f}% of the "
                          f"cycles at {board.ddr_bytes_per_cycle:.3g} bytes/cycle{more}"}
    return {"fps": bp.fps, "binding": "parallelism",
            "detail": f"every unit is at its largest knobs, and the cycles do not shrink with larger ones{more}"}


def diagnosis_room(cap: float) -> float:
    """The room of a space that answers queries at ``cap`` and diagnoses the binding resource too (the
    designs that just miss the cap); spaces built with it never need the relaxed copy."""
    return min(OVER_BOARD, max(1.0, RELAXED_ROOM * cap))


def _front2(cycles: np.ndarray, res: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The (cycles down, LUT down) Pareto front of some designs, fewest cycles first."""
    order = np.lexsort((idx, res[:, _BRAM], res[:, _DSP], res[:, _LUT], cycles))
    lut = res[order, _LUT]
    prev_min = np.minimum.accumulate(np.concatenate([[np.iinfo(np.int64).max], lut[:-1]]))
    keep = order[lut < prev_min]
    return cycles[keep], res[keep], idx[keep]


@dataclass
class Candidate:
    """One activation precision: the graph imported at it, its engine design space and (built on first use) its
    dataflow space, or why the graph cannot stream (``dataflow_reason``)."""

    act_bits: int
    graph: Graph
    space: Space = field(repr=False)
    _dataflow: object = field(default=None, repr=False)
    dataflow_reason: str = ""

    def dataflow(self, board: Board) -> object:
        """The :class:`vaqf.dataflow.DataflowSpace` of this graph on ``board``, or None (reason kept)."""
        from vaqf.dataflow import DataflowSpace, DataflowUnsupported

        sp = self._dataflow
        if sp is None or (sp is not False and sp.board != board):  # type: ignore[attr-defined]
            try:
                self._dataflow = DataflowSpace.build(self.graph, board)
            except DataflowUnsupported as e:
                self._dataflow, self.dataflow_reason = False, str(e)
        return self._dataflow or None

    @classmethod
    def build(cls, graph: Graph, board: Board, cap: float = 0.8, act_bits: int | None = None) -> Candidate:
        """The candidate of ``graph`` (at ``act_bits``, default its own precision) with a design space that
        answers queries within ``cap`` and diagnoses infeasible targets (:func:`diagnosis_room`)."""
        bits = act_bits_of(graph) if act_bits is None else act_bits
        return cls(bits, graph, Space(graph, board, room=diagnosis_room(cap)))


def act_bits_of(graph: Graph) -> int:
    """The graph's activation precision: the bit width of the matrix-product inputs (ops declaring
    ``precision_inputs``) that carry the most multiply-accumulates (ties: the wider), so that a 6-bit
    encoder with an 8-bit patch embedding and head is a 6-bit design; without matrix products, the
    widest value held in an activation buffer."""
    macs: dict[int, int] = {}
    for n in graph.nodes:
        spec = get_spec(n.op)
        if getattr(spec, "precision_inputs", False):
            work = max(1, int(spec.macs(n)))
            for v in n.inputs:
                bits = int(v.info.qtype.bits)
                macs[bits] = macs.get(bits, 0) + work
    if macs:
        return max(macs, key=lambda b: (macs[b], b))
    plan = plan_buffers(graph)
    bits = [graph.value(v).info.qtype.bits for v, k in plan.kind_of.items() if k == "act"]
    return max(bits) if bits else 0


def _signature(graph: Graph) -> tuple:
    values = tuple((v.name, str(v.info.qtype), v.info.shape) for v in graph.values())
    return (tuple(n.op for n in graph.topo()), values)


def build_candidates(graph_for_bits: Callable[[int], Graph], board: Board,
                     bits: Iterable[int] = DEFAULT_ACT_BITS, cap: float = 1.0) -> list[Candidate]:
    """Import the model at each candidate precision (highest first) and build each design space (with
    room for designs within ``cap`` of the board).

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
    return [Candidate.build(g, board, cap, b) for b, g in graphs]


def _space(cand: Candidate, board: Board, cap: float) -> Space:
    if cand.space.room < cap or cand.space.board != board:
        cand.space = Space(cand.graph, board, room=diagnosis_room(cap))
    return cand.space


def _design(cand: Candidate, i: int, board: Board, target: float | None, objective: str) -> Design:
    knobs = cand.space.knobs(i)
    est = estimate(cand.graph, board, knobs)
    return Design(board, cand.act_bits, knobs, board.clock_mhz, board.axi_bits, target, objective,
                  engine_estimate(est.to_json(), board), plan_buffers(cand.graph, design_lanes(knobs)).to_json())


def engine_estimate(est: dict, board: Board) -> dict:
    """The engine's estimate with the fields both architectures report: it runs one frame at a time, so its
    steady-state interval is its latency."""
    return {**est, "arch": "engine", "interval_cycles": est["cycles"], "latency_cycles": est["cycles"],
            "latency_ms": round(est["cycles"] / board.clock_hz * 1e3, 6)}


#: the architectures a search may choose from (``--arch``)
ARCH_CHOICES = ("auto", "engine", "dataflow")


def _pick(engine: tuple[Point, int] | None, flow: object, target_fps: float | None) -> str | None:
    """Which of an engine design and a dataflow plan the objective prefers: with a target, the fewer LUTs
    (ties: DSP, BRAM18, then the faster); without, the faster (ties: fewer LUT, DSP, BRAM18)."""
    if engine is None and flow is None:
        return None
    if engine is None:
        return "dataflow"
    if flow is None:
        return "engine"
    p = engine[0]
    e_res = {k: int(p.res[j]) for j, k in enumerate(RESOURCE_KEYS)}
    f_res = flow.resources().resources()  # type: ignore[attr-defined]
    e_fps, f_fps = p.fps, flow.fps  # type: ignore[attr-defined]
    if target_fps is not None:
        ke = (e_res["lut"], e_res["dsp"], e_res["bram18"], -e_fps)
        kf = (f_res["lut"], f_res["dsp"], f_res["bram18"], -f_fps)
    else:
        ke = (-e_fps, e_res["lut"], e_res["dsp"], e_res["bram18"])
        kf = (-f_fps, f_res["lut"], f_res["dsp"], f_res["bram18"])
    return "dataflow" if kf < ke else "engine"


def _why(arch: str, engine: tuple[Point, int] | None, flow: object, cand: Candidate, target_fps: float | None) -> str:
    """One sentence: the architecture chosen and what the other one offered."""
    def lut(n: int) -> str:
        return f"{n:,} LUT"

    if flow is not None:
        f_res = flow.resources().resources()  # type: ignore[attr-defined]
        f_txt = f"the dataflow pipeline {flow.fps:.4g} FPS with {lut(f_res['lut'])}"
    else:
        f_txt = ("no dataflow pipeline (" + cand.dataflow_reason + ")") if cand.dataflow_reason else \
            "no dataflow pipeline fits"
    if engine is not None:
        e_txt = f"the engine {engine[0].fps:.4g} FPS with {lut(int(engine[0].res[_LUT]))}"
    else:
        e_txt = "no engine design fits" + (" the target" if target_fps is not None else "")
    rule = "fewer LUTs at the target" if target_fps is not None else "the higher frame rate"
    return f"{arch} chosen ({rule}): {f_txt}, against {e_txt}"


def _check_request(target_fps: float | None, cap: float) -> None:
    if target_fps is not None and not target_fps > 0:
        raise VaqfError(f"--fps must be positive, got {target_fps}")
    if not 0 < cap <= 1:
        raise VaqfError(f"resource cap must be in (0, 1], got {cap}")


def select(cands: Sequence[Candidate], board: Board, target_fps: float | None = None,
           cap: float = 0.8, arch: str = "engine") -> tuple[Design, Candidate]:
    """The design vaqf picks among the candidate precisions and architectures (see the module docstring and
    docs/design-space.md), and its candidate. ``arch``: "engine" (the default), "dataflow", or "auto" (both,
    the objective choosing)."""
    _check_request(target_fps, cap)
    if arch not in ARCH_CHOICES:
        raise VaqfError(f"--arch must be one of {', '.join(ARCH_CHOICES)}, got {arch!r}")
    limits = []
    for cand in sorted(cands, key=lambda c: -c.act_bits):
        sp = _space(cand, board, cap) if arch != "dataflow" else None
        flow_space = cand.dataflow(board) if arch != "engine" else None
        if arch == "dataflow" and flow_space is None:
            raise VaqfError(f"--arch dataflow: {cand.dataflow_reason}; compile with --arch engine (or auto)")
        engine: tuple[Point, int] | None = None
        flow = None
        if sp is not None:
            i = sp.fastest(cap) if target_fps is None else sp.cheapest_meeting(target_fps, cap)
            engine = (sp.point(i), i) if i is not None else None
        if flow_space is not None:
            flow = flow_space.fastest(cap) if target_fps is None else flow_space.meeting(target_fps, cap)
        chosen = _pick(engine, flow, target_fps)
        if chosen is not None:
            # the comparison only when both were searched; a forced architecture keeps the plain rule
            why = _why(chosen, engine, flow, cand, target_fps) if arch == "auto" else ""
            if target_fps is None:
                rule = (f"highest activation precision with a feasible design ({cand.act_bits} bits), then max FPS, "
                        "then min LUT")
            else:
                rule = (f"highest activation precision meeting {target_fps:g} FPS ({cand.act_bits} bits), then min "
                        "LUT (ties: DSP, BRAM18, then max FPS)")
            objective = f"{rule}; {why}" if why else rule
            if chosen == "engine":
                assert engine is not None
                return _design(cand, engine[1], board, target_fps, objective), cand
            return dataflow_design(flow, board, cand.act_bits, target_fps, objective), cand
        lim = sp.limit(cap) if sp is not None else None
        if flow_space is not None:
            flim = flow_space.limit(cap)  # type: ignore[attr-defined]
            if lim is None or flim["fps"] > lim["fps"]:
                lim = {**flim, "detail": "dataflow: " + flim["detail"]}
        assert lim is not None
        limits.append({"act_bits": cand.act_bits, **lim})
    lines = [f"  {d['act_bits']}-bit activations: best {d['fps']:.4g} FPS, bound by "
             f"{BINDING_NAMES.get(d['binding'], d['binding'])}: {d['detail']}" for d in limits]
    what = f"{target_fps:g} FPS is not reachable" if target_fps is not None else "no design fits"
    raise InfeasibleDesign(f"{what} on {board.name} within {cap * 100:.0f}% of each resource:\n" + "\n".join(lines)
                           + "\nwhat would help: " + "; ".join(_advice(limits, cands, target_fps)), limits)


#: how the message names what binds a precision (``limit()["binding"]``)
BINDING_NAMES = {"parallelism": "the knob ranges", "ddr_bandwidth": "DDR bandwidth",
                 **{r: f"the {r.upper()}" for r in RESOURCE_KEYS}}


def _advice(limits: list[dict], cands: Sequence[Candidate], target_fps: float | None) -> list[str]:
    """Only the remedies that move what binds: more of the cap when the design would fit the board, a board
    with more of the resource when it would not, fewer activation bits when the resource binds a float model
    quantized here, fewer weight bits or more bandwidth when DDR binds; nothing but a lower target (or a
    faster clock) when every knob is at its end."""
    out: list[str] = []

    def add(text: str) -> None:
        if text not in out:
            out.append(text)

    if target_fps is not None:
        add("a lower --fps target")
    float_model = any(c.graph.metadata.get("format", "onnx") == "onnx" for c in cands)
    lowest = min(c.act_bits for c in cands)
    for d in limits:
        b = d["binding"]
        if b in RESOURCE_KEYS:
            need, reach = d.get("need", 0.0), d.get("reach")
            short = target_fps is not None and reach is not None and reach < target_fps
            if need <= 1.0 and not short:
                which = "the smallest design" if d["fps"] == 0 else "the next faster design"
                add(f"--cap {min(1.0, float(np.ceil(need * 100)) / 100):.2f} or more ({which} needs "
                    f"{need * 100:.0f}% of the {b.upper()})")
            if short:  # more of this board reaches only so far: what binds after it is the knob ranges
                add(f"more resources reach at most {reach:.4g} FPS at {d['act_bits']}-bit activations: a smaller "
                    "model or a faster clock")
            else:
                add(f"a board with more {b.upper()}")
            if float_model and d["act_bits"] == lowest and lowest > 2:
                add(f"fewer activation bits (--act-bits {lowest - 2}, or --search-bits with smaller widths)")
        elif b == "ddr_bandwidth":
            add("fewer weight bits (--weights binary or int4 for a float model; weights stream from DDR every frame)")
            add("a board with more DDR bandwidth per cycle (ddr_gbps and axi_bits in a board file)")
        else:
            add("a faster clock (clock_mhz in a board file), if the design meets timing there")
    return out


def search(graph: Graph, board: Board, target_fps: float | None = None, cap: float = 0.8,
           arch: str = "engine") -> Design:
    """The design vaqf picks for ``graph`` at its own activation precision."""
    _check_request(target_fps, cap)
    return select([Candidate.build(graph, board, cap)], board, target_fps, cap, arch)[0]


def search_act_bits(graph_for_bits: Callable[[int], Graph], board: Board, target_fps: float | None = None,
                    cap: float = 0.8, bits: Iterable[int] = DEFAULT_ACT_BITS) -> Design:
    """The design vaqf picks over activation precisions ``bits``: ``graph_for_bits(b)`` is the model
    imported with b-bit activations (the importer re-run with ``--act-bits b`` for a float model)."""
    _check_request(target_fps, cap)
    return select(build_candidates(graph_for_bits, board, bits, cap), board, target_fps, cap)[0]


def front_indices(space: Space, cap: float) -> list[int]:
    """Feasible designs of one space not dominated in (FPS up, LUT down), fastest first."""
    return space.front(cap)


def pareto_designs(cands: Sequence[Candidate], board: Board, cap: float = 0.8,
                   limit: int | None = 40) -> list[Design]:
    """Feasible designs not dominated in (activation bits up, FPS up, LUT down), fastest first.

    A design of fewer activation bits stays only if it is faster or smaller than every design of more
    bits. ``limit`` keeps that many, evenly spread along the front (None: all)."""
    points = []  # (bits, cycles, lut, cand, index)
    for cand in cands:
        space = _space(cand, board, cap)
        for i in front_indices(space, cap):
            p = space.point(i)
            points.append((cand.act_bits, p.cycles, int(p.res[_LUT]), cand, i))
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
    return pareto_designs([Candidate.build(graph, board, cap)], board, cap, limit)


def design_for_knobs(graph: Graph, board: Board, knobs: dict[str, dict[str, int]],
                     target_fps: float | None = None, act_bits: int | None = None, arch: str = "engine") -> Design:
    """A design with pinned knobs (e.g. from ``--design FILE``), re-estimated for this graph."""
    bits = act_bits if act_bits is not None else act_bits_of(graph)
    if arch == "dataflow":
        from vaqf.dataflow.plan import DataflowSpace

        plan = DataflowSpace.build(graph, board).plan(knobs)
        return dataflow_design(plan, board, bits, target_fps, "pinned")
    est = estimate(graph, board, knobs)
    return Design(board, bits, knobs, board.clock_mhz, board.axi_bits, target_fps, "pinned",
                  engine_estimate(est.to_json(), board), plan_buffers(graph, design_lanes(knobs)).to_json())


__all__ = ["ARCH_CHOICES", "DEFAULT_ACT_BITS", "Candidate", "LaneSpace", "Point", "Space", "act_bits_of",
           "build_candidates", "design_for_knobs", "front_indices", "graph_lane_choices", "pareto_designs",
           "pareto_front", "pareto_mask", "search", "search_act_bits", "select", "signed_bits"]


def dataflow_design(plan: DataflowPlan, board: Board, act_bits: int, target_fps: float | None,
                    objective: str) -> Design:
    """The Design record of a dataflow plan (arch "dataflow", knobs per layer, the estimate with every stage)."""
    return Design(board, act_bits, plan.knobs, board.clock_mhz, plan.bus_bits, target_fps, objective,
                  plan.estimate(board), {}, "dataflow")
