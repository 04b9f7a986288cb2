"""Design: the decisions for one accelerator, as data (serializable, loadable, pinnable).

The one record the backend and the report read: the board's full record (not only its name, so a design for
a custom board file stays what it was), the activation precision, every unit instance's knobs (their lane
knobs are the design's word lanes), the estimate with each layer's cycles and the per-layer mode its unit
chose (``Unit.mode``), and the buffer plan (which buffer holds each value, and each buffer's words).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vaqf.errors import VaqfError
from vaqf.hw.board import Board, board_from_dict, get_board

DESIGN_VERSION = 2


@dataclass
class Design:
    board: Board                              # the full record (a name is looked up among the built-in boards)
    act_bits: int
    knobs: dict[str, dict[str, int]]          # unit instance -> knob -> value
    clock_mhz: float
    word_bits: int
    target_fps: float | None = None
    objective: str = ""
    estimate: dict[str, Any] = field(default_factory=dict)  # estimate.layers[i].mode: the unit's decision
    buffers: dict[str, Any] = field(default_factory=dict)   # BufferPlan.to_json() of the design's lanes

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
                "knobs": self.knobs, "objective": self.objective, "estimate": self.estimate, "buffers": self.buffers}

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_json(), indent=2, sort_keys=True))

    @classmethod
    def from_json(cls, d: dict) -> Design:
        try:
            if d.get("version") != DESIGN_VERSION:
                raise VaqfError(f"design version {d.get('version')} is not {DESIGN_VERSION} (designs written by "
                                "an older vaqf: compile again without --design)")
            knobs = {str(u): {str(k): int(v) for k, v in ks.items()} for u, ks in d["knobs"].items()}
            board = board_from_dict(d["board"], "the design's board record")
            return cls(board, int(d["act_bits"]), knobs, float(d["clock_mhz"]), int(d["word_bits"]),
                       d.get("target_fps"), str(d.get("objective", "")), dict(d.get("estimate", {})),
                       dict(d.get("buffers", {})))
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise VaqfError(f"malformed design: {e}") from e

    @classmethod
    def load(cls, path: str | Path) -> Design:
        p = Path(path)
        if not p.is_file():
            raise VaqfError(f"design file {p} does not exist")
        try:
            data = json.loads(p.read_text())
        except json.JSONDecodeError as e:
            raise VaqfError(f"design file {p} is not valid JSON: {e}") from e
        return cls.from_json(data)
