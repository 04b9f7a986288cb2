"""Design: the decisions for one accelerator, as data (serializable, loadable, pinnable)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vaqf.errors import VaqfError

DESIGN_VERSION = 1


@dataclass
class Design:
    board: str
    act_bits: int
    knobs: dict[str, dict[str, int]]          # unit -> knob -> value
    clock_mhz: float
    word_bits: int
    target_fps: float | None = None
    objective: str = ""
    estimate: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"version": DESIGN_VERSION, "board": self.board, "act_bits": self.act_bits,
                "clock_mhz": self.clock_mhz, "word_bits": self.word_bits, "target_fps": self.target_fps,
                "knobs": self.knobs, "objective": self.objective, "estimate": self.estimate}

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_json(), indent=2, sort_keys=True))

    @classmethod
    def from_json(cls, d: dict) -> Design:
        try:
            if d.get("version") != DESIGN_VERSION:
                raise VaqfError(f"design version {d.get('version')} is not {DESIGN_VERSION}")
            knobs = {str(u): {str(k): int(v) for k, v in ks.items()} for u, ks in d["knobs"].items()}
            return cls(str(d["board"]), int(d["act_bits"]), knobs, float(d["clock_mhz"]), int(d["word_bits"]),
                       d.get("target_fps"), str(d.get("objective", "")), dict(d.get("estimate", {})))
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
