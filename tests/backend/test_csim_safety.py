"""``vaqf csim`` runs only what it built from the project's sources, writes nothing into the project, never waits
on a FIFO or a device, and stops a run that takes too long."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import signal
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from vaqf import cli
from vaqf.backend import csim
from vaqf.backend.csim import build, cache_dir, clean_stale_workdirs, run_csim
from vaqf.errors import ToolchainError, VaqfError


@pytest.fixture
def project(compiled: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("VAQF_CACHE_DIR", str(tmp_path / "cache"))
    dst = tmp_path / "mlp"
    shutil.copytree(compiled, dst, symlinks=True)
    return dst


@contextlib.contextmanager
def deadline(seconds: int) -> Iterator[None]:
    """Fail instead of hanging: what the test guards against is a read that never returns."""
    def expired(signum: int, frame: object) -> None:
        raise AssertionError(f"still waiting after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def _digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and not p.is_symlink()}


def _old_stamp(project: Path) -> str:
    """The stamp the build cache of earlier versions trusted: a hash anyone can compute from the project."""
    h = hashlib.sha256()
    for f in sorted((project / "src").rglob("*")) + [project / "tb" / "testbench.cpp"]:
        if f.is_file():
            h.update(f.name.encode())
            h.update(f.read_bytes())
    h.update(str(csim.ap_include_dir()).encode())
    h.update(csim.compiler().encode())
    return h.hexdigest()[:16]


@pytest.mark.cxx
def test_a_binary_shipped_in_the_project_is_never_run(project: Path, tmp_path: Path) -> None:
    ran = tmp_path / "shipped-binary-ran"
    (project / "build").mkdir()
    fake = project / "build" / "csim"
    fake.write_text(f"#!/bin/sh\ntouch {ran}\nexit 0\n")
    fake.chmod(0o755)
    (project / "build" / "csim.sha").write_text(_old_stamp(project))
    res = run_csim(project, count=5)
    assert res.bit_exact == 5
    assert not ran.exists()
    assert cache_dir() is not None and build(project).parent == cache_dir()


@pytest.mark.cxx
def test_csim_writes_nothing_into_the_project(project: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    os.symlink(elsewhere, project / "build")  # a link that a write into build/ would follow
    before = _digest(project)
    assert run_csim(project, count=3).bit_exact == 3
    assert _digest(project) == before and list(elsewhere.iterdir()) == []


@pytest.mark.cxx
def test_the_cache_is_private_and_keyed_by_the_sources(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[list[str]] = []
    real_run = subprocess.run

    def counting(cmd, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        calls.append(list(cmd))
        return real_run(cmd, *args, **kwargs)

    monkeypatch.setattr(csim.subprocess, "run", counting)
    exe = build(project)
    assert build(project) == exe and len(calls) == 1  # same sources: the cached build, no second g++
    assert stat.S_IMODE(os.stat(cache_dir()).st_mode) == 0o700
    with (project / "src" / "vaqf_top.cpp").open("a") as f:
        f.write("\n// changed\n")
    assert build(project) != exe and len(calls) == 2
    os.chmod(cache_dir(), 0o777)  # writable by anyone: not a cache vaqf trusts
    assert cache_dir() is None
    assert build(project).parent != exe.parent


def test_a_fifo_in_the_project_is_refused_not_waited_for(project: Path, capsys: pytest.CaptureFixture) -> None:
    weights = project / "data" / "weights.bin"
    weights.unlink()
    os.mkfifo(weights)
    with deadline(60):
        with pytest.raises(VaqfError, match="not a plain file"):
            run_csim(project, count=1)
        assert cli.main(["csim", str(project), "--inputs", "1"]) == 2
    assert "not a plain file" in capsys.readouterr().err


def test_a_device_behind_a_link_is_refused(project: Path) -> None:
    weights = project / "data" / "weights.bin"
    weights.unlink()
    os.symlink("/dev/zero", weights)
    with deadline(60), pytest.raises(VaqfError, match="not a plain file"):
        run_csim(project, count=1)


@pytest.mark.cxx
def test_a_fifo_among_the_sources_is_refused(project: Path) -> None:
    os.mkfifo(project / "src" / "extra.h")
    with deadline(60), pytest.raises(VaqfError, match="not a plain file"):
        run_csim(project, count=1)


@pytest.mark.cxx
def test_a_run_that_takes_too_long_is_stopped(project: Path) -> None:
    tb = project / "tb" / "testbench.cpp"
    text = tb.read_text().replace("int main(int argc, char** argv) {",
                                  "#include <unistd.h>\nint main(int argc, char** argv) {\n    sleep(600);", 1)
    tb.write_text(text)
    with deadline(120), pytest.raises(ToolchainError, match="did not finish 1 input within"):
        run_csim(project, count=2, timeout_s=0.5)


def test_temporary_folders_of_dead_runs_are_removed(tmp_path: Path) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    gone = tmp_path / f"vaqf-csim-{dead_pid}-abc"
    mine = tmp_path / f"vaqf-csim-{os.getpid()}-def"
    living = tmp_path / f"vaqf-csim-{os.getppid()}-ghi"
    for d in (gone, mine, living):
        (d / "project").mkdir(parents=True)
    assert clean_stale_workdirs(tmp_path) == [gone]
    assert not gone.exists() and mine.exists() and living.exists()
