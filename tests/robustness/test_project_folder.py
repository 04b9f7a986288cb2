"""A project folder is vaqf's own, and only its own files in it: a re-compile keeps what users and vendor tools put
there, only a marker whose hashes match counts, writes never go through symlinks, a second compile is refused
while one writes, and what a killed compile leaves is recovered by the next one."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import vaqf
from vaqf import cli
from vaqf.backend import emit
from vaqf.backend.emit import MARKER, project_problem, read_marker, recover_output, write_inside
from vaqf.errors import OutputExists, VaqfError
from vaqf.examples import example_model

ROOT = Path(__file__).resolve().parents[2]


def _compile(out: Path, **kw) -> None:  # noqa: ANN003
    vaqf.compile_model(example_model("mlp"), out, **kw)


def _board(out: Path) -> str:
    return json.loads((out / "design.json").read_text())["board"]["name"]


def _user_files(out: Path) -> None:
    (out / "vaqf_prj" / "solution1").mkdir(parents=True)
    (out / "vaqf_prj" / "solution1" / "vivado_hls.log").write_text("a day of synthesis")
    (out / "notes.txt").write_text("mine")
    (out / "src" / "my_helper.h").write_text("// the user's own header")
    os.symlink("/etc", out / "etc_link")


def _leftovers(out: Path) -> list[str]:
    return sorted(p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}."))


def test_recompile_keeps_what_vaqf_did_not_write(tmp_path: Path) -> None:
    out = tmp_path / "proj"
    _compile(out)
    _user_files(out)
    _compile(out, board="zcu104")
    assert _board(out) == "zcu104"  # vaqf's files are the new project's
    assert (out / "vaqf_prj" / "solution1" / "vivado_hls.log").read_text() == "a day of synthesis"
    assert (out / "notes.txt").read_text() == "mine"
    assert (out / "src" / "my_helper.h").read_text() == "// the user's own header"
    assert os.readlink(out / "etc_link") == "/etc"
    assert project_problem(out) is None
    assert "notes.txt" not in read_marker(out)  # never listed as vaqf's: a third compile keeps it too
    assert _leftovers(out) == []


def test_files_of_the_old_project_that_the_new_one_lacks_go(tmp_path: Path) -> None:
    out = tmp_path / "proj"
    _compile(out)
    (out / "data" / "obsolete.bin").write_bytes(b"x")
    marker = json.loads((out / MARKER).read_text())
    marker["files"]["data/obsolete.bin"] = emit._sha256(out / "data" / "obsolete.bin")  # as if vaqf wrote it
    (out / MARKER).write_text(json.dumps(marker))
    _compile(out)
    assert not (out / "data" / "obsolete.bin").exists()


@pytest.mark.parametrize("marker", [
    '{"tool": "vaqf", "version": "0.1.0", "note": "created by vaqf; vaqf may replace this folder"}\n',  # no hashes
    "",
    '{"tool": "vaqf", "files": {"notes.txt": "0000"}}',             # a hash that does not match
    '{"tool": "vaqf", "files": {"../outside.txt": "0000"}}',        # a path out of the folder
])
def test_forged_or_foreign_marker_is_not_a_project(tmp_path: Path, marker: str) -> None:
    out = tmp_path / "theirs"
    out.mkdir()
    (out / "notes.txt").write_text("precious")
    (out / MARKER).write_text(marker)
    with pytest.raises(OutputExists, match="--force"):
        _compile(out)
    assert sorted(p.name for p in out.iterdir()) == sorted(["notes.txt", MARKER])
    assert (out / "notes.txt").read_text() == "precious"


def test_a_changed_vaqf_file_needs_force_and_force_keeps_the_rest(tmp_path: Path) -> None:
    out = tmp_path / "proj"
    _compile(out)
    _user_files(out)
    (out / "src" / "vaqf_top.cpp").write_text("// hand-edited")
    with pytest.raises(OutputExists, match="src/vaqf_top.cpp has changed"):
        _compile(out, board="zcu104")
    assert (out / "src" / "vaqf_top.cpp").read_text() == "// hand-edited"
    _compile(out, board="zcu104", force=True)
    assert _board(out) == "zcu104" and project_problem(out) is None
    assert (out / "vaqf_prj" / "solution1" / "vivado_hls.log").is_file() and (out / "notes.txt").is_file()


def test_a_user_file_where_the_new_project_writes_needs_force(tmp_path: Path) -> None:
    out = tmp_path / "proj"
    _compile(out)
    marker = json.loads((out / MARKER).read_text())
    del marker["files"]["report.md"]  # the previous project did not write report.md: the user did
    (out / MARKER).write_text(json.dumps(marker))
    (out / "report.md").write_text("my report")
    with pytest.raises(OutputExists, match="report.md was not written by vaqf"):
        _compile(out)
    assert (out / "report.md").read_text() == "my report" and _leftovers(out) == []
    _compile(out, force=True)
    assert (out / "report.md").read_text() != "my report"


def test_a_symlinked_marker_is_not_a_project(tmp_path: Path) -> None:
    out = tmp_path / "proj"
    _compile(out)
    real = tmp_path / "marker.json"
    real.write_text((out / MARKER).read_text())
    (out / MARKER).unlink()
    os.symlink(real, out / MARKER)
    assert read_marker(out) is None
    with pytest.raises(OutputExists):
        _compile(out)


def test_write_inside_never_writes_through_a_link(tmp_path: Path) -> None:
    folder, victim = tmp_path / "proj", tmp_path / "victim.txt"
    folder.mkdir()
    victim.write_text("the user's file")
    os.symlink(victim, folder / "report.md")
    write_inside(folder, "report.md", "# report\n")
    assert victim.read_text() == "the user's file"  # the link was replaced, not followed
    assert not (folder / "report.md").is_symlink() and (folder / "report.md").read_text() == "# report\n"
    os.symlink(tmp_path, folder / "report")
    with pytest.raises(VaqfError, match="symbolic link"):
        write_inside(folder, "report/report.json", "{}")
    with pytest.raises(VaqfError, match="not a path inside"):
        write_inside(folder, "../escape.txt", "x")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["proj", "victim.txt"]


def test_dash_o_that_is_a_link_installs_where_it_points(tmp_path: Path) -> None:
    real, link = tmp_path / "scratch" / "proj", tmp_path / "proj"
    real.parent.mkdir()
    os.symlink(real, link)
    _compile(link)
    assert link.is_symlink() and project_problem(real) is None


# ---- concurrency -----------------------------------------------------------------------------------------------

HOLD = """
import sys, time
from vaqf.backend.emit import project_lock
with project_lock(sys.argv[1], exclusive=sys.argv[2] == "ex"):
    print("held", flush=True)
    time.sleep(120)
"""


def _hold_lock(folder: Path, mode: str) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(folder), mode], stdout=subprocess.PIPE, text=True,
                            cwd=ROOT)
    assert proc.stdout.readline().strip() == "held"
    return proc


@pytest.mark.parametrize("mode", ["ex", "sh"])
def test_a_second_compile_is_refused_while_one_holds_the_folder(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                                 mode: str) -> None:
    out = tmp_path / "proj"
    _compile(out)
    before = (out / MARKER).read_text()
    capsys.readouterr()
    holder = _hold_lock(out, mode)  # "ex": another compile writing it; "sh": a csim reading it
    try:
        rc = cli.main(["compile", "--example", "mlp", "-o", str(out), "--board", "zcu104"])
        err = capsys.readouterr().err
    finally:
        holder.kill()
        holder.wait()
    assert rc == 2 and "another vaqf command is using" in err and "Traceback" not in err
    assert "searching" not in err  # refused before any work, not after a search
    assert (out / MARKER).read_text() == before
    assert _leftovers(out) == [".proj.lock"]  # the killed holder's lock file: not locked, reused next time
    assert cli.main(["compile", "--example", "mlp", "-o", str(out), "--board", "zcu104"]) == 0
    assert _board(out) == "zcu104" and _leftovers(out) == []


def test_csim_during_a_compile_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "proj"
    _compile(out)
    holder = _hold_lock(out, "ex")
    try:
        rc = cli.main(["csim", str(out), "--inputs", "1"])
        err = capsys.readouterr().err
    finally:
        holder.kill()
        holder.wait()
    assert rc == 2 and "a vaqf compile is writing" in err


# ---- interrupts ----------------------------------------------------------------------------------------------

def test_sigterm_during_a_compile_is_an_interrupt(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "proj"
    _compile(out)
    _user_files(out)
    before = (out / MARKER).read_text()
    handler = signal.getsignal(signal.SIGTERM)
    real_save = emit.save_graph

    def save_then_term(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        os.kill(os.getpid(), signal.SIGTERM)  # what `kill PID` does, halfway through writing
        return real_save(*args, **kwargs)

    monkeypatch.setattr(emit, "save_graph", save_then_term)
    rc = cli.main(["compile", "--example", "mlp", "-o", str(out), "--board", "zcu104"])
    err = capsys.readouterr().err
    assert rc == 128 + signal.SIGTERM and "stopped by SIGTERM" in err and "Traceback" not in err
    assert (out / MARKER).read_text() == before and project_problem(out) is None
    assert (out / "notes.txt").is_file() and _leftovers(out) == []
    assert signal.getsignal(signal.SIGTERM) == handler  # main put the previous handler back


def test_ctrl_c_during_start_up_is_one_line(capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupted() -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "build_parser", interrupted)
    assert cli.main(["boards"]) == 130
    assert capsys.readouterr().err.strip() == "vaqf: interrupted"


KILL_BETWEEN_RENAMES = """
import os, sys
from pathlib import Path
from vaqf.backend import emit
import vaqf
from vaqf.examples import example_model

def killed_swap(tmp, out):  # the two-rename install (no RENAME_EXCHANGE), killed between the renames
    old = out.parent / f".{out.name}.old-killed"
    os.replace(out, old)
    os._exit(9)

emit._swap = killed_swap
vaqf.compile_model(example_model("mlp"), sys.argv[1], board="zcu104")
"""


def test_a_compile_killed_between_renames_is_recovered_by_the_next(tmp_path: Path) -> None:
    out = tmp_path / "proj"
    _compile(out)
    _user_files(out)
    proc = subprocess.run([sys.executable, "-c", KILL_BETWEEN_RENAMES, str(out)], cwd=ROOT, capture_output=True)
    assert proc.returncode == 9
    assert not out.exists() and ".proj.old-killed" in _leftovers(out)  # the window a SIGKILL could hit
    recover_output(out)
    assert project_problem(out) is None and _board(out) == "zcu102" and (out / "notes.txt").is_file()
    assert not any(name.startswith((".proj.old-", ".proj.tmp-")) for name in _leftovers(out))


def test_leftovers_of_killed_runs_are_cleaned_and_user_files_put_back(tmp_path: Path) -> None:
    out = tmp_path / "proj"
    _compile(out)
    # killed while writing: a temporary folder without a marker
    partial = tmp_path / ".proj.tmp-abc123"
    (partial / "src").mkdir(parents=True)
    (partial / "src" / "vaqf_top.cpp").write_text("// half")
    # killed while carrying the user's files into the new project: a marked folder holding one of them
    carrying = tmp_path / ".proj.tmp-def456"
    carrying.mkdir()
    (carrying / "design.json").write_text("{}")
    (carrying / MARKER).write_text(json.dumps({"tool": "vaqf", "files": {
        "design.json": emit._sha256(carrying / "design.json")}}))
    (carrying / "vaqf_prj").mkdir()
    (carrying / "vaqf_prj" / "run.log").write_text("the user's")
    # a moved-aside project whose replacement did land
    (tmp_path / ".proj.old-789xyz").mkdir()
    _compile(out, board="zcu104")
    assert _leftovers(out) == []
    assert (out / "vaqf_prj" / "run.log").read_text() == "the user's" and project_problem(out) is None


@pytest.mark.slow
def test_sigkill_at_any_moment_leaves_old_or_new_project(tmp_path: Path) -> None:
    out = tmp_path / "proj"
    _compile(out)
    _user_files(out)
    script = textwrap.dedent("""
        import sys, vaqf
        from vaqf.examples import example_model
        vaqf.compile_model(example_model("mlp"), sys.argv[1], board=sys.argv[2])
    """)
    boards = ["zcu104", "zcu102"]
    for trial in range(8):
        proc = subprocess.Popen([sys.executable, "-c", script, str(out), boards[trial % 2]], cwd=ROOT,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            proc.wait(timeout=0.4 + 0.35 * trial)  # from start-up to past the install
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        assert project_problem(out) is None, f"trial {trial}: -o is neither the old nor the new project"
        recover_output(out)  # what the next compile does first
        assert (out / "notes.txt").is_file() and (out / "vaqf_prj" / "solution1" / "vivado_hls.log").is_file()
        assert [n for n in _leftovers(out) if n != ".proj.lock"] == []


@pytest.mark.parametrize("rel", ["graph.npz", "data/weights.bin", "design.json"])
def test_a_graph_or_weight_image_changed_after_the_compile_is_refused(tmp_path: Path, rel: str,
                                                                       capsys: pytest.CaptureFixture) -> None:
    """The simulator reads graph.*, the C++ data/*: a file edited since the compile would set one model against
    another. One flipped byte is enough to be refused."""
    out = tmp_path / "proj"
    _compile(out)
    data = bytearray((out / rel).read_bytes())
    data[len(data) // 2] ^= 1
    (out / rel).write_bytes(bytes(data))
    for run in (lambda: vaqf.load(out), lambda: vaqf.simulate(out, np.zeros((1, 64), np.float32))):
        with pytest.raises(VaqfError, match=f"{rel} has changed since vaqf wrote it"):
            run()
    assert cli.main(["csim", str(out), "--inputs", "1"]) == 2
    assert f"{rel} has changed since vaqf wrote it" in capsys.readouterr().err
    data[len(data) // 2] ^= 1
    (out / rel).write_bytes(bytes(data))
    vaqf.load(out)  # as vaqf wrote it again: loads
