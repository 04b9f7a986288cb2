"""Design: the decisions for one accelerator, as data (serializable, loadable, pinnable).

The one record the backend and the report read: the board's full record (not only its name, so a design for
a custom board file stays what it was), the activation precision, every unit instance's knobs (their lane
knobs are the design's word lanes), the estimate with each layer's cycles and the per-layer mode its unit
chose (``Unit.mode``), and the buffer plan (which buffer holds each value, and each buffer's words).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vaqf.errors import VaqfError
from vaqf.hw.board import Board, board_from_dict, get_board
from vaqf.ir import Graph

DESIGN_VERSION = 2
KNOWN_FIELDS = {"version", "board", "act_bits", "clock_mhz", "word_bits", "target_fps", "knobs", "objective",
                "estimate", "buffers", "arch"}
#: the accelerator architectures: the layer-sequential engine of shared units, the streaming dataflow pipeline
ARCHITECTURES = ("engine", "dataflow")
#: no unit has a knob above this (the widest choices are 256 lanes); larger values only overflow the cost model
MAX_KNOB = 2**16
WORD_BITS = (32, 64, 128, 256, 512, 1024)
MAX_DESIGN_BYTES = 64 * 2**20


@dataclass
class Design:
    """The one record of a design's decisions; the backend and the report only read it (``design.json``).

    - ``board``: the board's full record (a built-in board's name is looked up); ``clock_mhz``: the clock the
      kernels are designed for; ``word_bits``: the DDR bus width of the weight reader;
    - ``act_bits``: the activation precision; ``knobs``: unit instance -> knob -> value (the parallelism of each
      unit, e.g. ``{"gemm0": {"pe": 16, "simd": 32}}``: ``vaqf.units_of(graph)`` lists a graph's instances);
    - ``target_fps`` and ``objective``: what the search was asked for and how it chose;
    - ``estimate``: the cost model's figures (keys in :func:`vaqf.api.estimate_design`), per-layer ``mode`` included;
    - ``buffers``: the on-chip buffer plan for the design's lane count (``vaqf.hw.memory.BufferPlan``).
    """

    board: Board                              # the full record (a name is looked up among the built-in boards)
    act_bits: int
    knobs: dict[str, dict[str, int]]          # unit instance -> knob -> value
    clock_mhz: float
    word_bits: int
    target_fps: float | None = None
    objective: str = ""
    estimate: dict[str, Any] = field(default_factory=dict)  # estimate.layers[i].mode: the unit's decision
    buffers: dict[str, Any] = field(default_factory=dict)   # BufferPlan.to_json() of the design's lanes
    # "engine": knobs per unit instance; "dataflow": knobs per layer (graph node), vaqf/dataflow
    arch: str = "engine"

    def __post_init__(self) -> None:
        if isinstance(self.board, str):
            self.board = get_board(self.board)

    @property
    def board_name(self) -> str:
        return self.board.name

    def modes(self) -> dict[str, Any]:
        """Node name -> the per-layer mode its unit chose, as recorded in the estimate."""
        return {e["node"]: e.get("mode") for e in self.estimate.get("layers", [])}

    def to_json(self) -> dict:
        return {"version": DESIGN_VERSION, "board": self.board.to_json(), "act_bits": self.act_bits,
                "clock_mhz": self.clock_mhz, "word_bits": self.word_bits, "target_fps": self.target_fps,
                "knobs": self.knobs, "objective": self.objective, "estimate": self.estimate, "buffers": self.buffers,
                "arch": self.arch}

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_json(), indent=2, sort_keys=True))

    @classmethod
    def from_json(cls, d: dict, where: str = "the design") -> Design:
        """A design from its JSON record, every field checked for type and range (a VaqfError naming the field
        otherwise); ``check_knobs`` then checks the knobs against the graph they are for."""
        if not isinstance(d, dict):
            raise VaqfError(f"{where} is not a JSON object (got {type(d).__name__})")
        if d.get("version") != DESIGN_VERSION:
            raise VaqfError(f"{where} has version {_shown(d.get('version'))}, not {DESIGN_VERSION} (designs written by "
                            "an older vaqf: compile again without --design)")
        missing = [k for k in ("board", "act_bits", "knobs", "clock_mhz", "word_bits") if k not in d]
        if missing:
            raise VaqfError(f"{where} lacks {', '.join(missing)}; write it with vaqf (design.json of a project)")
        unknown = sorted(set(d) - KNOWN_FIELDS)
        if unknown:
            raise VaqfError(f"{where} has unknown fields {', '.join(map(_shown, unknown[:5]))}; known: "
                            f"{', '.join(sorted(KNOWN_FIELDS))}")
        knobs_in = d["knobs"]
        if not isinstance(knobs_in, dict) or not all(isinstance(ks, dict) for ks in knobs_in.values()):
            raise VaqfError(f"{where}: knobs must map each unit to its knobs ({{\"dense_int8\": {{\"pe\": 4, ...}}}})")
        knobs = {str(u): {str(k): _int(v, f"knob {u}.{k}", where, 1, MAX_KNOB) for k, v in ks.items()}
                 for u, ks in knobs_in.items()}
        try:
            board = board_from_dict(d["board"], f"the board record of {where}")
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise VaqfError(f"{where}: malformed board record ({type(e).__name__}: {_shown(e)})") from None
        target = d.get("target_fps")
        arch = d.get("arch", "engine")
        if arch not in ARCHITECTURES:
            raise VaqfError(f"{where}: arch must be one of {', '.join(ARCHITECTURES)}, got {_shown(arch)}")
        for key in ("estimate", "buffers"):
            if not isinstance(d.get(key, {}), dict):
                raise VaqfError(f"{where}: {key} must be a JSON object")
        return cls(board, _int(d["act_bits"], "act_bits", where, 2, 16), knobs,
                   _float(d["clock_mhz"], "clock_mhz", where, 2000.0),
                   _choice(d["word_bits"], "word_bits", where, WORD_BITS),
                   None if target is None else _float(target, "target_fps", where, 1e12),
                   str(d.get("objective", "")), dict(d.get("estimate", {})), dict(d.get("buffers", {})), str(arch))

    @classmethod
    def load(cls, path: str | Path) -> Design:
        p = Path(path)
        if not p.is_file():
            raise VaqfError(f"design file {p} does not exist")
        if p.stat().st_size > MAX_DESIGN_BYTES:
            raise VaqfError(f"design file {p} is larger than {MAX_DESIGN_BYTES >> 20} MiB; it is not a vaqf design")
        try:
            data = json.loads(p.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise VaqfError(f"design file {p} is not valid JSON: {_shown(e)}") from None
        except RecursionError:
            raise VaqfError(f"design file {p} nests too deeply to be a vaqf design") from None
        return cls.from_json(data, f"design file {p}")


def check_knobs(knobs: dict[str, dict[str, int]], graph: Graph, where: str = "the design") -> None:
    """The knobs are for this graph: exactly its unit instances, each with exactly its unit's knobs, each value
    one of the unit's choices for the graph's layers (positive powers of two within the unit's limits)."""
    from vaqf.hw.model import unit_knob_space, units_of

    if knobs and all(isinstance(k, str) for k in knobs) and _is_dataflow_knobs(knobs, graph):
        from vaqf.dataflow.plan import check_dataflow_knobs

        check_dataflow_knobs(knobs, graph, where)
        return
    units = units_of(graph)
    unknown = sorted(set(knobs) - set(units))
    missing = sorted(set(units) - set(knobs))
    if unknown or missing:
        parts = ([f"units {', '.join(map(_shown, unknown))} that this model does not have"] if unknown else []) + \
                ([f"no knobs for its units {', '.join(missing)}"] if missing else [])
        raise VaqfError(f"{where} is not for this model: it has {' and '.join(parts)} (this model's units: "
                        f"{', '.join(sorted(units))}); compile without --design to search a design for it")
    for unit, nodes in sorted(units.items()):
        space = unit_knob_space(nodes)
        given = knobs[unit]
        bad = sorted(set(given) - set(space))
        if bad:
            raise VaqfError(f"{where}: unit {unit} has no knob {', '.join(map(_shown, bad))} (its knobs: "
                            f"{', '.join(sorted(space))})")
        absent = sorted(set(space) - set(given))
        if absent:
            raise VaqfError(f"{where}: unit {unit} lacks knob {', '.join(absent)}")
        for k, v in sorted(given.items()):
            if v not in space[k]:
                raise VaqfError(f"{where}: knob {unit}.{k} = {v} is not one of this model's choices "
                                f"({', '.join(map(str, space[k]))})")


def _is_dataflow_knobs(knobs: dict[str, dict[str, int]], graph: Graph) -> bool:
    """Knobs keyed by the graph's node names (a dataflow design's layers), not by unit instances."""
    names = {n.name for n in graph.nodes}
    return set(knobs) <= names


def _shown(x: object, limit: int = 60) -> str:
    """A value from a file as a message shows it: repr, control characters escaped, cut."""
    text = repr(x) if not isinstance(x, BaseException) else " ".join(str(x).split())
    text = text.encode("unicode_escape").decode("ascii")
    return text if len(text) <= limit else text[:limit] + "..."


def _int(v: object, name: str, where: str, lo: int, hi: int) -> int:
    whole = (isinstance(v, int) and not isinstance(v, bool)) or (isinstance(v, float) and math.isfinite(v)
                                                                 and v == int(v))
    if not whole:
        raise VaqfError(f"{where}: {name} must be an integer, got {_shown(v)}")
    if not lo <= int(v) <= hi:
        raise VaqfError(f"{where}: {name} = {int(v)} is outside {lo}..{hi}")
    return int(v)


def _float(v: object, name: str, where: str, hi: float) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or not 0 < v <= hi:
        raise VaqfError(f"{where}: {name} must be a finite number in (0, {hi:g}], got {_shown(v)}")
    return float(v)


def _choice(v: object, name: str, where: str, choices: tuple[int, ...]) -> int:
    if isinstance(v, bool) or v not in choices:
        raise VaqfError(f"{where}: {name} must be one of {', '.join(map(str, choices))}, got {_shown(v)}")
    return int(v)  # type: ignore[arg-type]
