"""A built wheel works on its own: templates/ and hls/ ship inside it, not only in the source tree.

The wheel is built from a copy of the sources (so no build/ folder lands in the checkout) without build
isolation (setuptools comes from the running environment, nothing is fetched to build). It is installed
into a fresh venv, *without* --system-site-packages, by pip with its configured index and find-links,
its dependencies pinned to the versions installed here (so pip's cache and local wheel folders serve
them: seconds on the development machines). Without a reachable index the test skips, saying why.
The compile runs from a folder outside the repository, so nothing can fall back to the source tree.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SKIP_DIRS = {".venv", ".git", "build", "dist", "out", "tests", "bench", "examples", ".pytest_cache",
             ".hypothesis", ".ruff_cache", "__pycache__"}


NETWORK_FAILURES = ("NewConnectionError", "Max retries exceeded", "Temporary failure in name resolution",
                    "Network is unreachable", "ConnectTimeoutError", "ProxyError")


def _runtime_dependencies() -> list[tuple[str, str]]:
    """(name, installed version) of every non-optional requirement of vaqf."""
    pins = []
    for req in importlib.metadata.requires("vaqf") or []:
        if "extra ==" in req:
            continue
        name = re.match(r"[A-Za-z0-9_.-]+", req).group(0)
        pins.append((name, importlib.metadata.version(name)))
    return pins


def _clean_env() -> dict[str, str]:
    """This environment without PYTHONPATH: the wheel's venv must import its own vaqf, not a checkout's."""
    return {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}


def _run(cmd: list[str], cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=_clean_env())
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def _copy_sources(dst: Path) -> Path:
    def ignore(folder: str, names: list[str]) -> set[str]:
        return {n for n in names if n in SKIP_DIRS or n.endswith(".egg-info")} if Path(folder) == REPO else \
            {n for n in names if n == "__pycache__"}

    shutil.copytree(REPO, dst, ignore=ignore)
    return dst


@pytest.mark.slow
def test_wheel_installs_and_compiles_outside_the_repo(tmp_path: Path) -> None:
    pip_ok = subprocess.run([sys.executable, "-m", "pip", "--version"], capture_output=True)
    if pip_ok.returncode != 0:
        pytest.skip("pip is not available in this environment")
    src = _copy_sources(tmp_path / "src")
    wheels = tmp_path / "wheels"
    _run([sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "--no-build-isolation", "-q",
          "-w", str(wheels)], cwd=tmp_path)
    (wheel,) = wheels.glob("vaqf-*.whl")
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], cwd=tmp_path)
    py = venv / "bin" / "python"
    # pin the dependencies to the versions of this environment: reproducible, and pip's cache has them
    constraints = tmp_path / "constraints.txt"
    constraints.write_text("".join(f"{name}=={version}\n" for name, version in _runtime_dependencies()))
    proc = subprocess.run([str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check", "-c",
                           str(constraints), str(wheel)], cwd=tmp_path, capture_output=True, text=True, timeout=600,
                          env=_clean_env())
    if proc.returncode != 0 and any(s in proc.stdout + proc.stderr for s in NETWORK_FAILURES):
        pytest.skip(f"pip cannot reach its package index to install vaqf's dependencies: {proc.stderr[-500:]}")
    assert proc.returncode == 0, f"pip install of the wheel failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    work = tmp_path / "elsewhere"
    work.mkdir()
    # the installed package, not the checkout, is what runs
    where = _run([str(py), "-c", "import vaqf, sys; print(vaqf.__file__)"], cwd=work).stdout.strip()
    assert str(venv) in where and str(REPO) not in where
    proc = _run([str(venv / "bin" / "vaqf"), "compile", "--example", "mlp", "-o", "X", "--json"], cwd=work)
    data = json.loads(proc.stdout)
    assert data["design"]["act_bits"] == 8
    x = work / "X"
    for rel in ("src/vaqf/dense.h", "src/vaqf/qarith.h", "scripts/build_vivado_hls.tcl", "src/vaqf_top.cpp",
                "tb/testbench.cpp", "data/weights.bin"):
        assert (x / rel).is_file(), rel
    # the kernel headers are the ones of this source tree
    assert (x / "src" / "vaqf" / "dense.h").read_bytes() == (REPO / "hls" / "vaqf" / "dense.h").read_bytes()
