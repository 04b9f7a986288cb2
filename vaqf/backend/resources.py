"""Where the Jinja2 templates and the HLS kernel library live (source tree or installed wheel)."""

from __future__ import annotations

from functools import cache
from importlib import resources
from pathlib import Path

from vaqf.errors import VaqfError


def _locate(package: str, repo_dir: str, probe: str) -> Path:
    try:
        p = Path(str(resources.files(package)))
        if (p / probe).exists():
            return p
    except (ModuleNotFoundError, TypeError):
        pass
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
