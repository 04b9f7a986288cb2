"""A dataflow design: every layer's folding, the stages, converters and FIFOs it implies, and what it costs.

The stage chain for knobs (``plan_for``): the input reader, then per layer its stages (a conv's window
generator, its FIFO, its MVAU; a dense layer's MVAU; a pool), a width converter where a layer's output words
(PE or P elements) differ from the next layer's input words (SIMD or P elements), and the output writer.
FIFOs: one frame of the producer's words on every edge between layers and at the ends (so each stage runs
a frame ahead of the next: frames overlap and the interval is the slowest stage's frame), two words after a
converter, the window slack of ``LayerHw.inner_fifo`` inside a conv.

The search (``search_dataflow``): a layer's cycles do not depend on the others' knobs and the design's
resources are their sum plus converters, FIFOs and shell, so for a cycle budget B the cheapest design takes,
per layer, its option with the fewest LUTs among those within B (the reader and writer count with the first
and last layer; converters never take longer than their neighbours). The fastest design is the smallest
budget whose cheapest design fits; a target gives the budget clock / FPS. When the LUT-cheapest choice
exceeds another resource (BRAM18 for weights), layers are moved to the option within B that frees the most
of it per LUT added, until the design fits or no move helps.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any

from vaqf.dataflow.pipeline import Pipeline, build_pipeline
from vaqf.dataflow.stages import (
    DWC_DEPTH,
    IO_DEPTH,
    SHELL,
    LayerHw,
    dwc_cost,
    dwc_trips,
    fifo_cost,
    io_cost,
    io_words,
)
from vaqf.hw.board import Board
from vaqf.hw.cost import DDR_LATENCY, RESOURCE_KEYS, Cost
from vaqf.ir import Graph

log = logging.getLogger(__name__)


@dataclass
class Stage:
    name: str
    kind: str                  # input | swg | mvau | pool | dwc | output
    layer: str | None          # the layer (graph node) it belongs to
    trips: int                 # loop trips per frame (cycles per frame in steady state)
    depth: int                 # pipeline depth, once per call
    cost: Cost
    in_width: int = 0          # elements per input word
    out_width: int = 0         # elements per output word


@dataclass
class Fifo:
    src: str
    dst: str
    depth: int
    width: int                 # bits per word
    cost: Cost

    @property
    def name(self) -> str:
        return f"{self.src}__{self.dst}"


@dataclass
class DataflowPlan:
    pipeline: Pipeline
    hws: list[LayerHw]
    knobs: dict[str, dict[str, int]]
    stages: list[Stage]
    fifos: list[Fifo]
    bus_bits: int
    shell: Cost = field(default_factory=lambda: SHELL)
    clock_hz: float = 0.0       # the board's, set by DataflowSpace.plan (0: unknown)

    @property
    def fps(self) -> float:
        """Frames per second in steady state."""
        return self.clock_hz / self.interval

    @property
    def interval(self) -> int:
        """Cycles between frames in steady state: the slowest stage's frame."""
        return max(s.trips for s in self.stages)

    @property
    def latency(self) -> int:
        """Cycles from a frame's first input word to its last output word, bounded above by every stage
        finishing the frame before the next starts it (the frame-level recurrence of the counters)."""
        return sum(s.trips + s.depth for s in self.stages) + DDR_LATENCY

    def resources(self) -> Cost:
        total = self.shell
        for s in self.stages:
            total = total + s.cost
        for f in self.fifos:
            total = total + f.cost
        return total

    def fifo_resources(self) -> Cost:
        total = Cost()
        for f in self.fifos:
            total = total + f.cost
        return total

    def bottleneck(self) -> Stage:
        return max(self.stages, key=lambda s: s.trips)

    def estimate(self, board: Board) -> dict[str, Any]:
        res = self.resources().resources()
        caps = board.resources()
        util = {k: round(res[k] / caps[k], 4) if caps[k] else (0.0 if res[k] == 0 else float("inf"))
                for k in RESOURCE_KEYS}
        fifo = self.fifo_resources().resources()
        b = self.bottleneck()
        return {"arch": "dataflow", "fps": round(board.clock_hz / self.interval, 3), "cycles": self.interval,
                "interval_cycles": self.interval, "latency_cycles": self.latency,
                "latency_ms": round(self.latency / board.clock_hz * 1e3, 6), "io_cycles": 0,
                "resources": res, "utilization": util, "fifo_resources": fifo,
                "shell_resources": self.shell.resources(),
                "bottleneck": b.name,
                "units": {s.name: s.cost.resources() for s in self.stages},
                "layers": [{"node": s.name, "op": s.kind, "unit": s.kind, "layer": s.layer, "cycles": s.trips,
                            "depth": s.depth, "ddr_bytes": 0, "resources": s.cost.resources()} for s in self.stages],
                "fifos": [{"src": f.src, "dst": f.dst, "depth": f.depth, "width": f.width,
                           "resources": f.cost.resources()} for f in self.fifos]}


def layer_hws(pipeline: Pipeline) -> list[LayerHw]:
    return [LayerHw.of(layer) for layer in pipeline.layers]


def _dwcs(prev: str, nxt: str, elems: int, a: int, b: int, bits: int, tag: str) -> list[Stage]:
    """Converters from a-element to b-element words: one when either divides the other, else through gcd."""
    if a == b:
        return []
    if a % b == 0 or b % a == 0:
        return [Stage(f"dwc_{tag}", "dwc", None, dwc_trips(elems, a, b), DWC_DEPTH, dwc_cost(a, b, bits), a, b)]
    g = math.gcd(a, b)
    return [Stage(f"dwc_{tag}_a", "dwc", None, dwc_trips(elems, a, g), DWC_DEPTH, dwc_cost(a, g, bits), a, g),
            Stage(f"dwc_{tag}_b", "dwc", None, dwc_trips(elems, g, b), DWC_DEPTH, dwc_cost(g, b, bits), g, b)]


def plan_for(pipeline: Pipeline, hws: list[LayerHw], knobs: dict[str, dict[str, int]], bus_bits: int) -> DataflowPlan:
    """The stage chain, converters and FIFOs of a pipeline at given knobs (a VaqfError names a missing one)."""
    from vaqf.errors import VaqfError

    stages: list[Stage] = []
    fifos: list[Fifo] = []

    def link(src: Stage, dst: Stage, depth: int, bits: int) -> None:
        width = src.out_width * bits
        fifos.append(Fifo(src.name, dst.name, max(2, depth), width, fifo_cost(max(2, depth), width)))

    in_bits = int(pipeline.in_elem.bits)
    first = hws[0]
    for hw in hws:
        if hw.layer.name not in knobs:
            raise VaqfError(f"the dataflow design has no knobs for layer {hw.layer.name}")
    s0 = first.in_width(knobs[first.layer.name])
    words, _, trips = io_words(first.layer.in_elems, s0, in_bits, bus_bits)
    reader = Stage("input", "input", None, trips, IO_DEPTH, io_cost(s0, in_bits, bus_bits), 0, s0)
    stages.append(reader)
    prev = reader
    prev_bits = in_bits
    prev_elems = first.layer.in_elems
    for i, hw in enumerate(hws):
        kn = knobs[hw.layer.name]
        w_in = hw.in_width(kn)
        conv = _dwcs(prev.name, hw.layer.name, prev_elems, prev.out_width, w_in, prev_bits, str(i))
        frame_depth = prev_elems // prev.out_width
        pending_depth = frame_depth
        for d in conv:
            stages.append(d)
            link(prev, d, pending_depth, prev_bits)
            prev, pending_depth = d, 2
        own = hw.stages(kn)
        for j, (kind, t, depth, c) in enumerate(own):
            st = Stage(f"{kind}_{i}", kind, hw.layer.name, t, depth, c, w_in, w_in if kind == "swg" else
                       hw.out_width(kn))
            stages.append(st)
            if j == 0:
                link(prev, st, pending_depth, prev_bits)
            else:
                inner = hw.inner_fifo(kn)
                assert inner is not None
                fifos.append(Fifo(prev.name, st.name, inner[0], inner[1], fifo_cost(inner[0], inner[1])))
            prev = st
        prev_bits = int(hw.layer.out_elem.bits)
        prev_elems = hw.layer.out_elems
    out_bits = int(pipeline.out_elem.bits)
    s_last = prev.out_width
    _, _, trips = io_words(prev_elems, s_last, out_bits, bus_bits)
    writer = Stage("output", "output", None, trips, IO_DEPTH, io_cost(s_last, out_bits, bus_bits), s_last, 0)
    stages.append(writer)
    link(prev, writer, prev_elems // s_last, out_bits)
    return DataflowPlan(pipeline, hws, {k: dict(v) for k, v in knobs.items()}, stages, fifos, bus_bits)


# ---- the search ---------------------------------------------------------------------------------------------------

@dataclass
class _Option:
    knobs: dict[str, int]
    trips: int
    cost: Cost


@dataclass
class DataflowSpace:
    """Every layer's options (trips with the reader/writer folded into the first/last layer, resources)."""

    pipeline: Pipeline
    hws: list[LayerHw]
    options: list[list[_Option]]
    board: Board

    @classmethod
    def build(cls, graph_or_pipeline: Graph | Pipeline, board: Board) -> DataflowSpace:
        pipe = graph_or_pipeline if isinstance(graph_or_pipeline, Pipeline) else build_pipeline(graph_or_pipeline)
        hws = layer_hws(pipe)
        bus = board.axi_bits
        opts: list[list[_Option]] = []
        last = len(hws) - 1
        for i, hw in enumerate(hws):
            row = []
            for kn in hw.options():
                t = hw.trips(kn)
                c = hw.cost(kn)
                if i == 0:
                    t = max(t, io_words(hw.layer.in_elems, hw.in_width(kn), int(pipe.in_elem.bits), bus)[2])
                if i == last:
                    t = max(t, io_words(hw.layer.out_elems, hw.out_width(kn), int(pipe.out_elem.bits), bus)[2])
                row.append(_Option(kn, t, c))
            opts.append(_pareto(row))
        return cls(pipe, hws, opts, board)

    def combinations(self) -> int:
        return math.prod(len(hw.options()) for hw in self.hws)

    def budgets(self) -> list[int]:
        floor = max(min(o.trips for o in row) for row in self.options)
        return sorted({o.trips for row in self.options for o in row if o.trips >= floor})

    def plan(self, knobs: dict[str, dict[str, int]]) -> DataflowPlan:
        p = plan_for(self.pipeline, self.hws, knobs, self.board.axi_bits)
        p.clock_hz = self.board.clock_hz
        return p

    def cheapest_within(self, budget: int, cap: float) -> DataflowPlan | None:
        """The design with every layer within ``budget`` cycles per frame and the fewest LUTs, repaired to fit
        ``cap`` of every resource when the LUT-cheapest choice does not; None when nothing is within budget."""
        picks: list[_Option] = []
        for row in self.options:
            ok = [o for o in row if o.trips <= budget]
            if not ok:
                return None
            picks.append(min(ok, key=lambda o: (o.cost.lut, o.cost.bram18, o.cost.dsp, o.cost.ff, o.trips)))
        limits = {k: math.floor(cap * v + 1e-9) for k, v in self.board.resources().items()}
        for _ in range(4 * len(picks) + 8):
            plan = self.plan({hw.layer.name: p.knobs for hw, p in zip(self.hws, picks, strict=True)})
            res = plan.resources().resources()
            over = [k for k in RESOURCE_KEYS if res[k] > limits[k]]
            if not over:
                return plan
            worst = max(over, key=lambda k: res[k] / max(limits[k], 1))
            best_move, best_score = None, None
            for i, row in enumerate(self.options):
                cur = picks[i]
                for o in row:
                    if o.trips > budget:
                        continue
                    freed = getattr(cur.cost, worst) - getattr(o.cost, worst)
                    if freed <= 0:
                        continue
                    score = (o.cost.lut - cur.cost.lut) / freed
                    if best_score is None or score < best_score:
                        best_move, best_score = (i, o), score
            if best_move is None:
                return plan  # nothing frees the resource within the budget: the caller sees it does not fit
            picks[best_move[0]] = best_move[1]
        return self.plan({hw.layer.name: p.knobs for hw, p in zip(self.hws, picks, strict=True)})

    def fits(self, plan: DataflowPlan, cap: float) -> bool:
        res = plan.resources().resources()
        return all(res[k] <= math.floor(cap * v + 1e-9) for k, v in self.board.resources().items())

    def fastest(self, cap: float) -> DataflowPlan | None:
        budgets = self.budgets()
        lo, hi = 0, len(budgets) - 1
        best = None
        # feasibility grows with the budget (each layer's cheapest option only gets cheaper): bisect, then check
        while lo <= hi:
            mid = (lo + hi) // 2
            p = self.cheapest_within(budgets[mid], cap)
            if p is not None and self.fits(p, cap):
                best, hi = p, mid - 1
            else:
                lo = mid + 1
        return best

    def meeting(self, target_fps: float, cap: float) -> DataflowPlan | None:
        budget = int(self.board.clock_hz // target_fps)
        while budget > 0 and self.board.clock_hz / budget < target_fps:
            budget -= 1
        if budget <= 0:
            return None
        p = self.cheapest_within(budget, cap)
        return p if p is not None and self.fits(p, cap) else None

    def limit(self, cap: float) -> dict[str, Any]:
        """The best frame rate within ``cap`` and what stops a faster design (the resource the next budget's
        cheapest design exceeds most, or the folding range when every layer is fully parallel)."""
        best = self.fastest(cap)
        budgets = self.budgets()
        fps = self.board.clock_hz / best.interval if best is not None else 0.0
        faster = [b for b in budgets if best is None or b < best.interval]
        if not faster:
            return {"fps": fps, "binding": "parallelism",
                    "detail": "every layer is at its largest folding (PE = outputs, SIMD = inputs)"}
        p = self.cheapest_within(faster[-1], 1.0e9)
        assert p is not None
        res = p.resources().resources()
        caps = self.board.resources()
        k = max((r for r in RESOURCE_KEYS if caps[r]), key=lambda r: res[r] / caps[r])
        return {"fps": fps, "binding": k, "need": res[k] / caps[k],
                "detail": f"the next faster dataflow design ({self.board.clock_hz / p.interval:.4g} FPS) needs "
                          f"{res[k] / caps[k] * 100:.0f}% of the {k.upper()} (cap {cap * 100:.0f}%)"}


def _pareto(row: list[_Option]) -> list[_Option]:
    """Options not dominated in (trips, LUT, FF, DSP, BRAM18, URAM)."""
    keyed = sorted(row, key=lambda o: (o.trips, o.cost.lut, o.cost.bram18, o.cost.dsp, o.cost.ff))
    kept: list[_Option] = []
    for o in keyed:
        v = (o.trips, *o.cost.resources().values())
        if any(all(a <= b for a, b in zip((q.trips, *q.cost.resources().values()), v, strict=True)) for q in kept):
            continue
        kept.append(o)
    return kept


def check_dataflow_knobs(knobs: dict[str, dict[str, int]], graph: Graph, where: str = "the design") -> None:
    """The knobs name exactly the pipeline's layers, each with its knobs at legal folding factors."""
    from vaqf.errors import VaqfError

    pipe = build_pipeline(graph)
    hws = {hw.layer.name: hw for hw in layer_hws(pipe)}
    if set(knobs) != set(hws):
        missing = sorted(set(hws) - set(knobs))
        extra = sorted(set(knobs) - set(hws))
        raise VaqfError(f"{where} is not a dataflow design of this model (layers missing: {', '.join(missing) or '-'}; "
                        f"not in the model: {', '.join(extra) or '-'}); compile without --design to search one")
    for name, hw in hws.items():
        space = hw.knob_space()
        given = knobs[name]
        if set(given) != set(space):
            raise VaqfError(f"{where}: layer {name} takes knobs {', '.join(sorted(space))}, got "
                            f"{', '.join(sorted(given))}")
        for k, v in given.items():
            if v not in space[k]:
                raise VaqfError(f"{where}: {name}.{k} = {v} is not one of {', '.join(map(str, space[k]))} "
                                "(folding factors divide the layer's dimension)")
