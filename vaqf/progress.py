"""Progress on long steps: stage lines with elapsed time and tqdm bars, on stderr, only when enabled.

The CLI enables it (unless --quiet or --json); the Python API stays silent unless a caller enables it.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import TypeVar

T = TypeVar("T")
_enabled = False


def enable(on: bool = True) -> None:
    global _enabled
    _enabled = on


def enabled() -> bool:
    return _enabled


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


def bar(items: Iterable[T], total: int | None = None, desc: str = "", unit: str = "it") -> Iterable[T]:
    """A tqdm bar over ``items`` when progress is enabled, else the items as they are."""
    if not _enabled:
        return items
    from tqdm import tqdm

    return tqdm(items, total=total, desc=f"vaqf: {desc}", unit=unit, file=sys.stderr, leave=False)
