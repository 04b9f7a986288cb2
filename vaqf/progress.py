"""Progress on long steps, on stderr, only when enabled: stage lines with elapsed time, tqdm bars on a terminal,
and for steps counted in items (csim's inputs) a bar with an ETA on a terminal or a line per item otherwise.

The CLI enables it (unless --quiet or --json); the Python API stays silent unless a caller enables it.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

T = TypeVar("T")
_enabled = False


def enable(on: bool = True) -> None:
    global _enabled
    _enabled = on


def enabled() -> bool:
    return _enabled


def _terminal() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # stderr replaced or closed
        return False


@contextmanager
def stage(message: str) -> Iterator[None]:
    """``with stage("importing model.onnx"):`` prints the message, then its duration when it ends."""
    if not _enabled:
        yield
        return
    start = time.perf_counter()
    print(f"vaqf: {message} ...", file=sys.stderr, flush=True)
    yield
    print(f"vaqf: {message}: done in {time.perf_counter() - start:.1f} s", file=sys.stderr, flush=True)


def note(message: str) -> None:
    """One line of progress (``vaqf: message``), when enabled."""
    if _enabled:
        print(f"vaqf: {message}", file=sys.stderr, flush=True)


def bar(items: Iterable[T], total: int | None = None, desc: str = "", unit: str = "it") -> Iterable[T]:
    """A tqdm bar over ``items`` when progress is enabled and stderr is a terminal, else the items as they are
    (a bar's carriage returns would fill a log)."""
    if not _enabled or not _terminal():
        return items
    from tqdm import tqdm

    return tqdm(items, total=total, desc=f"vaqf: {desc}", unit=unit, file=sys.stderr, leave=False)


def duration(seconds: float) -> str:
    """``0.0013 s``, ``42 s``, ``3 min 20 s``, ``2 h 05 min``: how long, for people."""
    if seconds < 1:
        return f"{max(seconds, 0):.2g} s"
    s = round(seconds)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


class Counter:
    """Progress of ``total`` items done in steps of one or more: a tqdm bar with rate and ETA on a terminal, else one
    line per step (``vaqf: C-simulation: 3/10 inputs, 3 bit-exact; 61 s, about 2 min 22 s left``); silent when
    progress is disabled."""

    def __init__(self, total: int, desc: str, unit: str = "it") -> None:
        self.total, self.desc, self.unit = total, desc, unit
        self.done = 0
        self._start = time.perf_counter()
        self._bar: Any = None
        if _enabled and _terminal():
            from tqdm import tqdm

            # updates come a step (seconds) apart: draw every one, not tqdm's default of at most 10 a second
            self._bar = tqdm(total=total, desc=f"vaqf: {desc}", unit=unit, file=sys.stderr, leave=False,
                             mininterval=0)

    def advance(self, n: int, note: str = "") -> None:
        self.done += n
        if self._bar is not None:
            if note:
                self._bar.set_postfix_str(note, refresh=False)
            self._bar.update(n)
        elif _enabled:
            elapsed = time.perf_counter() - self._start
            left = elapsed / self.done * (self.total - self.done) if self.done else 0.0
            eta = f", about {duration(left)} left" if self.done < self.total else ""
            print(f"vaqf: {self.desc}: {self.done}/{self.total} {self.unit}s{', ' + note if note else ''}; "
                  f"{duration(elapsed)}{eta}", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


@contextmanager
def counter(total: int, desc: str, unit: str = "it") -> Iterator[Counter]:
    c = Counter(total, desc, unit)
    try:
        yield c
    finally:
        c.close()
