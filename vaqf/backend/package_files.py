"""Where the Jinja2 templates and the HLS kernel library live (source tree or installed wheel)."""

from __future__ import annotations

import importlib.util
from functools import cache
from pathlib import Path

from vaqf.errors import VaqfError


def _locate(package: str, repo_dir: str, probe: str) -> Path:
    # templates/ and hls/ hold no __init__.py, so in an installed wheel vaqf.templates and vaqf.hls are
    # namespace packages: importlib.resources.files() gives a MultiplexedPath whose str() is its repr, not
    # a folder. The spec's search locations are plain folders for regular and namespace packages alike.
    try:
        spec = importlib.util.find_spec(package)
    except (ModuleNotFoundError, ValueError):
        spec = None
    for loc in (spec.submodule_search_locations or []) if spec is not None else []:
        p = Path(loc)
        if (p / probe).exists():
            return p
    p = Path(__file__).resolve().parents[2] / repo_dir  # running from a source checkout
    if (p / probe).exists():
        return p
    raise VaqfError(f"vaqf's {repo_dir}/ files are missing from this installation; reinstall vaqf")


@cache
def templates_dir() -> Path:
    return _locate("vaqf.templates", "templates", "project/vaqf_top.cpp.j2")


@cache
def hls_dir() -> Path:
    """The folder holding the kernel headers (``vaqf/*.h``)."""
    return _locate("vaqf.hls", "hls", "vaqf/dense.h") / "vaqf"
