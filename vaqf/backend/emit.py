"""Render a Vivado/Vitis HLS project for a Graph and a Design.

The emitter knows nothing unit-specific: each layer's unit (vaqf/units) gives plain values (``Unit.config``
for its instance's config struct, ``Unit.describe`` for a layer's typed descriptor and buffers,
``Unit.ddr_blobs`` for its DDR data) and the unit's Jinja2 template (templates/units) turns them into a
config struct, a wrapper function and a call. The buffer plan and the per-layer modes come from the
Design. The project is written to a temporary folder next to the destination and moved into place, so a
failed or interrupted compile never leaves a half-written project.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import hashlib
import json
import logging
import os
import shutil
import signal
import stat
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
import numpy as np

from vaqf import __version__
from vaqf.backend.bd import block_design_values
from vaqf.backend.names import NameTable
from vaqf.backend.package_files import hls_dir, templates_dir
from vaqf.dse.design import Design
from vaqf.errors import OutputExists, ProjectBusy, VaqfError
from vaqf.hw.board import Board
from vaqf.hw.cost import DDR_LATENCY
from vaqf.hw.layout import design_lanes, last_dim, row_words
from vaqf.hw.memory import BufferPlan, plan_buffers
from vaqf.hw.model import io_port, units_of
from vaqf.ir import Graph, Value
from vaqf.ir.serialize import save_graph
from vaqf.units import unit_of
from vaqf.units.base import EmitContext

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no lock file
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

MARKER = ".vaqf-project"
TB_VECTORS = 16
#: models with more DDR words than this get fewer self-check vectors (simulating them takes seconds each)
LARGE_MODEL_WORDS = 1 << 18
TB_VECTORS_LARGE = 2


@dataclass
class DdrImage:
    lanes: np.ndarray                    # uint32 lanes, little-endian, whole words
    offsets: dict[tuple[str, str], int]  # (node, blob) -> word offset
    word_bits: int

    @property
    def words(self) -> int:
        return self.lanes.size * 32 // self.word_bits


def build_ddr_image(graph: Graph, word_bits: int, knobs: dict[str, dict[str, int]] | None = None,
                    board: Board | None = None) -> DdrImage:
    """The DDR image of the graph's constants (``Unit.ddr_blobs``, in graph order); ``knobs`` (per unit
    instance) and ``board`` are the design's, for units whose layout depends on them."""
    lanes_per_word = word_bits // 32
    parts: list[np.ndarray] = []
    offsets: dict[tuple[str, str], int] = {}
    pos = 0
    for node in graph.topo():
        unit = unit_of(node)
        if unit is None:
            continue
        unit_knobs = (knobs or {}).get(unit.instance(node), {})
        for blob, arr in unit.ddr_blobs(node, word_bits, unit_knobs, board).items():
            if arr.size % lanes_per_word:
                raise VaqfError(f"blob {blob} of {node.name} is not whole words")  # pragma: no cover
            offsets[(node.name, blob)] = pos
            parts.append(arr.astype(np.uint32))
            pos += arr.size // lanes_per_word
    lanes = np.concatenate(parts) if parts else np.zeros(lanes_per_word, dtype=np.uint32)
    return DdrImage(lanes, offsets, word_bits)


def design_plan(graph: Graph, design: Design, lanes: int) -> BufferPlan:
    """The design's buffer plan (planned afresh for a design that records none); a recorded plan must be for
    these lanes and hold every value of the graph."""
    if not design.buffers:
        return plan_buffers(graph, lanes)
    plan = BufferPlan.from_json(design.buffers)
    names = {v.name for v in graph.values()}
    if plan.lanes != lanes or not names <= set(plan.buffer_of):
        raise VaqfError("the design's buffer plan is not this graph's at its lane count (a design of another "
                        "model?): compile again without --design, or search again")
    return plan


def design_modes(graph: Graph, knobs: dict[str, dict[str, int]], board: Board) -> dict[str, Any]:
    """Each layer's per-layer mode (``Unit.mode``) under the design's knobs."""
    out: dict[str, Any] = {}
    for node in graph.topo():
        unit = unit_of(node)
        if unit is not None:
            out[node.name] = unit.mode(node, knobs.get(unit.instance(node), {}), board)
    return out


def tb_vector_count(image: DdrImage) -> int:
    return TB_VECTORS if image.words <= LARGE_MODEL_WORDS else TB_VECTORS_LARGE


def _env() -> jinja2.Environment:
    # user text reaches C++, Tcl, cfg, Make, Python and Markdown only through the filters of vaqf.backend.escape
    from vaqf.backend.escape import environment

    return environment(jinja2.FileSystemLoader(str(templates_dir())))


def render_sources(graph: Graph, design: Design) -> tuple[dict[str, str], DdrImage, BufferPlan]:
    """Text of every generated source file, the DDR image and the buffer plan."""
    env = _env()
    word_bits = design.word_bits
    if word_bits % 32 or not 32 <= word_bits <= 1024:
        raise VaqfError(f"word width {word_bits} must be a multiple of 32 in 32..1024")
    lanes = design_lanes(design.knobs)
    plan = design_plan(graph, design, lanes)
    board = design.board
    image = build_ddr_image(graph, word_bits, design.knobs, board)
    names = NameTable()
    ident = {n.name: f"l{i}_{names(n.name)}" for i, n in enumerate(graph.topo())}
    buffers = {v: plan.name(v) for v in plan.kind_of}
    modes = design.modes() if design.estimate.get("layers") else design_modes(graph, design.knobs, board)
    units = units_of(graph)
    ctx = EmitContext(buffers, image.offsets, ident, {"act": "act_dummy", "acc": "acc_dummy"}, design.knobs, board,
                      lanes, word_bits, modes, units)
    layers = []
    descs: dict[str, list] = {u: [] for u in units}  # unit -> every call's descriptor, its ROM in call order
    for node in graph.topo():
        unit = unit_of(node)
        layer = {"ident": ident[node.name], "op": node.op, "config": "", "call": "", "node": node.name,
                 "unit": "none" if unit is None else unit.instance(node)}
        if unit is not None:  # a node on no unit only relabels its input's buffer: no call
            p = unit.describe(node, ctx)
            table = descs[unit.instance(node)]
            p["desc_id"] = len(table)  # the slot of the layer's first call in the unit's descriptor ROM
            table.extend([c["desc"] for c in p["calls"]] if "calls" in p else [p["desc"]])
            tmpl = env.get_template(unit.template_path)
            layer["config"] = str(tmpl.module.config(p)).strip()
            layer["call"] = str(tmpl.module.call(p)).strip()
        layers.append(layer)
    unit_structs = []
    for u, nodes in units.items():
        if u not in design.knobs:
            raise VaqfError(f"the design has no knobs for unit '{u}'")
        unit = unit_of(nodes[0])
        params = {**unit.config(u, nodes, design.knobs[u], word_bits), "descs": descs[u],
                  "desc_cpp": unit.descriptors[0].cpp}
        tmpl = env.get_template(unit.template_path)
        unit_structs.append(tmpl.module.unit_config(u, params))
    io_in = [{"ident": f"in{i}", "buf": buffers[v.name], "size": v.info.size, "shape": list(v.info.shape),
              "shape_text": ", ".join(map(str, v.info.sample_shape)), "row": last_dim(v.info),
              "row_words": row_words(last_dim(v.info), lanes), **io_port(v, lanes, word_bits, 32)}
             for i, v in enumerate(graph.inputs)]
    io_out = [{"ident": f"out{i}", "buf": buffers[v.name], "size": v.info.size, "shape": list(v.info.shape),
               "row": last_dim(v.info), "row_words": row_words(last_dim(v.info), lanes),
               **io_port(v, lanes, word_bits, 64)} for i, v in enumerate(graph.outputs)]
    values: dict[str, Any] = {
        "version": __version__,
        "word_bits": word_bits,
        "ddr_words": max(image.words, 1),
        "act_bits": plan.bits.get("act", 2),
        "acc_bits": plan.bits.get("acc", 32),
        "buffers": [{"kind": k, "name": name, "size": size, "words": words} for k, name, size, words in plan.buffers()],
        "lanes": lanes,
        "ddr_latency": DDR_LATENCY,
        "units": unit_structs,
        "unit_names": list(units),
        "layers": layers,
        "inputs": io_in,
        "outputs": io_out,
        "part": board.part,
        "clock_ns": round(1000.0 / design.clock_mhz, 3),
        "board": board.name,
        "tb_vectors": tb_vector_count(image),
        "top": "vaqf_top",
        "bd": block_design_values(board, design.clock_mhz),  # scripts/build_bd.tcl (None: no flow)
        "tb_in_bytes": 4 * sum(v.info.size for v in graph.inputs),  # one input vector (1-vector cosim)
        "wide_io": word_bits >= 64,
    }
    files = {
        "src/vaqf_top.h": "project/vaqf_top.h.j2",
        "src/vaqf_params.h": "project/vaqf_params.h.j2",
        "src/vaqf_top.cpp": "project/vaqf_top.cpp.j2",
        "tb/testbench.cpp": "project/testbench.cpp.j2",
        "scripts/build_vivado_hls.tcl": "project/build_vivado_hls.tcl.j2",
        "scripts/build_vitis_hls.tcl": "project/build_vitis_hls.tcl.j2",
        "scripts/hls_config.cfg": "project/hls_config.cfg.j2",
        "Makefile": "project/Makefile.j2",
        "README.md": "project/README.md.j2",
        "driver/vaqf_driver.py": "project/vaqf_driver.py.j2",
        "scripts/build_bd.tcl": "project/build_bd.tcl.j2",
    }
    out = {path: env.get_template(t).render(**values) for path, t in files.items()}
    out["data/layers.json"] = json.dumps([{"index": i, "ident": layer["ident"], "node": layer["node"],
                                           "op": layer["op"], "unit": layer["unit"]}
                                          for i, layer in enumerate(layers)], indent=1) + "\n"
    return out, image, plan


# ---- the project folder -------------------------------------------------------------------------------------------
# A project folder holds what vaqf wrote (listed, with each file's hash, in the marker) and whatever users and vendor
# tools add (the README sends Vivado runs into vaqf_prj/). Only a marker whose hashes match counts as "a vaqf
# project", so a copied or forged marker never makes vaqf delete files it did not write; a re-compile replaces the
# listed files and carries everything else into the new project. The install is one atomic exchange of two
# folders where the OS has it, so -o holds the old project or the new one whatever signal arrives; leftovers of a
# killed run (.<name>.tmp-*, .<name>.old-*) are recovered or removed by the next compile, under a lock file
# (.<name>.lock beside the folder) that also refuses a second compile, or a csim, while one is writing.


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _manifest(folder: Path) -> dict[str, str]:
    """Every plain file under ``folder`` (relative POSIX path -> sha256), the marker excepted."""
    out: dict[str, str] = {}
    for root, dirs, names in os.walk(folder):  # never descends into symlinked folders
        dirs.sort()
        for name in sorted(names):
            p = Path(root) / name
            rel = p.relative_to(folder).as_posix()
            if rel != MARKER and not p.is_symlink() and p.is_file():
                out[rel] = _sha256(p)
    return out


def _safe_rel(rel: object) -> bool:
    """A relative path that stays inside its folder (what a marker may list)."""
    if not isinstance(rel, str) or not rel or len(rel) > 4096 or rel.startswith("/") or "\\" in rel or "\0" in rel:
        return False
    return rel != MARKER and all(part not in ("", ".", "..") for part in rel.split("/"))


def read_marker(folder: Path) -> dict[str, str] | None:
    """The files vaqf wrote into ``folder`` (relative path -> sha256) as its marker lists them; None without a
    marker in this format (no marker, a symlink, one by hand or by an older vaqf)."""
    p = Path(folder) / MARKER
    try:
        st = os.lstat(p)
        if not stat.S_ISREG(st.st_mode) or st.st_size > 64 << 20:
            return None
        data = json.loads(p.read_text())
    except (OSError, ValueError):
        return None
    files = data.get("files") if isinstance(data, dict) else None
    if data.get("tool") != "vaqf" or not isinstance(files, dict):
        return None
    if not all(_safe_rel(rel) and isinstance(h, str) for rel, h in files.items()):
        return None
    return files


def _through_symlink(folder: Path, rel: str) -> bool:
    """Whether a path inside ``folder`` passes through (or is) a symbolic link."""
    p = folder
    for part in rel.split("/"):
        p = p / part
        if p.is_symlink():
            return True
    return False


def project_problem(folder: Path) -> str | None:
    """Why ``folder`` is not a vaqf project as vaqf wrote it, or None when it is (every file its marker lists is
    there, a plain file, with the hash vaqf recorded)."""
    folder = Path(folder)
    files = read_marker(folder)
    if files is None:
        return "it has no vaqf marker" if not os.path.lexists(folder / MARKER) else \
            f"its {MARKER} marker is not one vaqf wrote (no file hashes)"
    for rel, digest in sorted(files.items()):
        p = folder / rel
        if _through_symlink(folder, rel) or not p.is_file():
            return f"{rel} is missing or not a plain file"
        if _sha256(p) != digest:
            return f"{rel} has changed since vaqf wrote it"
    return None


#: the files that must come from one compile: the simulator reads the graph, the C++ the weight image and
#: the layer table, both the design
COMPILED_TOGETHER = ("graph.json", "graph.npz", "design.json", "data/layers.json", "data/weights.bin")


def check_compiled_together(folder: Path) -> None:
    """Refuse a project whose graph, design, weight image or layer table is not the one vaqf wrote with the
    others: the simulator would read one model and the C++ another, and a C-simulation would compare them."""
    folder = Path(folder)
    files = read_marker(folder)
    if files is None:
        raise VaqfError(f"{folder} has no {MARKER} marker vaqf can verify ({project_problem(folder)}), so its graph "
                        "and weight image cannot be checked to come from one compile; compile the project again")
    for rel in COMPILED_TOGETHER:
        digest = files.get(rel)
        p = folder / rel
        if digest is None or _through_symlink(folder, rel) or not p.is_file():
            raise VaqfError(f"{folder}: {rel} is missing, or not a file vaqf wrote with the project; compile the "
                            "project again")
        if _sha256(p) != digest:
            raise VaqfError(f"{folder}: {rel} has changed since vaqf wrote it, so the graph the simulator reads and "
                            "the weight image the C++ reads may no longer agree; compile the project again")


def _is_vaqf_project(path: Path) -> bool:
    return project_problem(path) is None


def _foreign_entries(folder: Path, files: dict[str, str] | None) -> list[str]:
    """What vaqf did not write under ``folder``: relative paths of the topmost such entries (a user's vaqf_prj/
    is one entry), symlinks as links. Without a marker (``files`` None) everything is foreign."""
    listed = set(files or ()) | {MARKER}
    parents = {"/".join(rel.split("/")[:i]) for rel in listed for i in range(1, rel.count("/") + 1)}
    out: list[str] = []

    def walk(rel_dir: str) -> None:
        with os.scandir(folder / rel_dir if rel_dir else folder) as it:
            entries = sorted(it, key=lambda e: e.name)
        for entry in entries:
            rel = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
            if rel in listed and entry.is_file(follow_symlinks=False):
                continue
            if rel in parents and entry.is_dir(follow_symlinks=False):
                walk(rel)
            else:
                out.append(rel)

    if files is not None:
        walk("")
    else:
        out = sorted(os.listdir(folder))
    return out


def write_inside(folder: Path, rel: str, data: bytes | str) -> Path:
    """Write ``folder/rel`` without following a symlink: a link at the path (or above it, inside ``folder``) is
    refused, and the file is written beside the path and renamed over it, so a planted link is replaced, never
    written through."""
    folder = Path(folder)
    if not _safe_rel(rel) and rel != MARKER:
        raise VaqfError(f"refusing to write {rel!r} into {folder}: not a path inside the folder")
    parts = rel.split("/")
    p = folder
    for part in parts[:-1]:
        p = p / part
        if p.is_symlink():
            raise VaqfError(f"refusing to write {rel} in {folder}: {p.relative_to(folder)} is a symbolic link (vaqf "
                            "never writes through links); remove it and run again")
        p.mkdir(exist_ok=True)
    target = folder / rel
    fd, tmp = tempfile.mkstemp(prefix=f".{parts[-1]}.", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return target


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _abs(out_dir: str | Path) -> Path:
    """The folder a path names, with the user's own links (e.g. -o a link to scratch space) resolved."""
    return Path(os.path.realpath(os.path.abspath(out_dir)))


# --- the lock beside the folder

_held: dict[str, list[Any]] = {}  # lock file -> [fd, depth, exclusive]: reentrant within a process


def _lock_file(folder: Path) -> Path:
    return folder.parent / f".{folder.name}.lock"


def _acquire(path: Path, folder: Path, exclusive: bool) -> int | None:
    if fcntl is None:  # pragma: no cover - no flock (Windows): no lock
        return None
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0),
                         0o644)
        except OSError as e:
            if not exclusive and e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
                return None  # a folder this user cannot write: no compile of theirs can write it either
            raise VaqfError(f"cannot create the lock file {path}: {e.strerror}; check that the folder is "
                            "writable") from None
        try:
            fcntl.flock(fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise
            if exclusive:
                raise ProjectBusy(f"another vaqf command is using {folder} (a compile writing it or a csim reading "
                                  f"it; lock {path.name}): wait until it has finished, or write to another "
                                  "folder") from None
            raise ProjectBusy(f"a vaqf compile is writing {folder} now: run this again when it has "
                              "finished") from None
        # the holder before us removes the file when it lets go: make sure we hold the file now at the path
        try:
            if os.stat(path, follow_symlinks=False).st_ino == os.fstat(fd).st_ino:
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)


def _release(path: Path, fd: int) -> None:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # the last holder removes the file
        if os.stat(path, follow_symlinks=False).st_ino == os.fstat(fd).st_ino:
            os.unlink(path)
    except OSError:
        pass  # others still hold it (they remove it), or it is gone already
    finally:
        os.close(fd)


@contextlib.contextmanager
def project_lock(folder: str | Path, exclusive: bool = True) -> Iterator[None]:
    """Hold ``.<name>.lock`` beside ``folder``: exclusive to write the folder, shared to read it (csim). A second
    holder that conflicts gets ``ProjectBusy`` at once; the lock dies with its process (flock), so a killed run
    never blocks the next one. Reentrant within a process."""
    folder = _abs(folder)
    path = _lock_file(folder)
    held = _held.get(str(path))
    if held is not None and (held[2] or not exclusive):
        held[1] += 1
        try:
            yield
        finally:
            held[1] -= 1
        return
    if held is not None:
        raise ProjectBusy(f"{folder} is being read by this process (a csim) and cannot be written now")
    folder.parent.mkdir(parents=True, exist_ok=True)
    fd = _acquire(path, folder, exclusive)
    if fd is None:
        yield
        return
    _held[str(path)] = [fd, 1, exclusive]
    try:
        yield
    finally:
        del _held[str(path)]
        _release(path, fd)


# --- checking, recovering, installing

def check_output_dir(out_dir: str | Path, force: bool) -> None:
    """Refuse, before any work, an output that vaqf must not replace: a file, a folder another vaqf command holds,
    or a non-empty folder that is not a project as vaqf wrote it (without ``force``)."""
    out = _abs(out_dir)
    if os.path.lexists(out) and not out.is_dir():
        raise OutputExists(f"{out_dir} exists and is not a folder")
    if _lock_file(out).exists() and str(_lock_file(out)) not in _held:
        with project_lock(out):  # refuses now if another compile holds it, instead of after the search
            pass
    if out.is_dir() and any(out.iterdir()) and not force:
        why = project_problem(out)
        if why is not None:
            raise OutputExists(f"{out_dir} exists and is not a project vaqf wrote ({why}); choose another folder, "
                               "or pass --force to replace it")


def _stale(out: Path) -> list[Path]:
    """Folders that killed runs left beside ``out``."""
    if not out.parent.is_dir():
        return []
    return sorted(p for p in out.parent.iterdir()
                  if p.name.startswith((f".{out.name}.tmp-", f".{out.name}.old-")) and not p.is_symlink()
                  and p.is_dir())


def recover_output(out_dir: str | Path) -> None:
    """Undo what a killed compile left beside ``out_dir`` (call under its exclusive lock): an -o moved aside and not
    replaced comes back; a user's entries that were being carried into the new project go back into -o; the
    rest of each leftover folder is vaqf's own output and is removed."""
    out = _abs(out_dir)
    stale = _stale(out)
    old = [p for p in stale if p.name.startswith(f".{out.name}.old-")]
    if old and not os.path.lexists(out):  # killed between moving -o aside and moving the new project in
        os.replace(old[-1], out)
        log.warning("restored %s from %s, left by an interrupted compile", out, old[-1].name)
        stale.remove(old[-1])
    for d in stale:
        _discard(d, out)


def _discard(d: Path, out: Path) -> None:
    """Remove a temporary or moved-aside project folder ``d``, moving back into ``out`` first any entry vaqf did
    not write (a user's, carried halfway); one that cannot go back keeps ``d`` in place, with a warning."""
    files = read_marker(d)
    kept = []
    # without a marker a folder holds only vaqf's output: a user's entries are carried in after the marker
    for rel in _foreign_entries(d, files) if files is not None else []:
        try:
            if not out.is_dir() or _through_symlink(out, rel) or os.path.lexists(out / rel):
                raise FileExistsError(rel)
            (out / rel).parent.mkdir(parents=True, exist_ok=True)
            os.replace(d / rel, out / rel)
        except OSError:
            kept.append(rel)
    if kept:
        log.warning("left %s in place: it holds %s, which vaqf did not write", d, ", ".join(kept[:5]))
    else:
        shutil.rmtree(d, ignore_errors=True)


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """SIGINT, SIGTERM and SIGHUP wait until the block ends (they are acted on then): a step that moves a user's
    files and swaps folders is never left half done by a catchable signal. Python handlers are swapped for ones
    that only take note (a signal mask would not do: the kernel hands a process's signal to any of its threads,
    and numba's and OpenMP's do not block it)."""
    names = ("SIGINT", "SIGTERM", "SIGHUP")
    sigs = [getattr(signal, n) for n in names if hasattr(signal, n)]
    if threading.current_thread() is not threading.main_thread():  # handlers are the main thread's to set
        if hasattr(signal, "pthread_sigmask"):
            prev = signal.pthread_sigmask(signal.SIG_BLOCK, sigs)
            try:
                yield
            finally:
                signal.pthread_sigmask(signal.SIG_SETMASK, prev)
        else:  # pragma: no cover - Windows
            yield
        return
    pending: list[int] = []

    def take_note(signum: int, frame: object) -> None:
        pending.append(signum)

    previous = {s: signal.signal(s, take_note) for s in sigs}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        for s in dict.fromkeys(pending):  # now act on each, as if it had arrived here
            handler = previous[s]
            if callable(handler):
                handler(s, None)
            elif handler == signal.SIG_DFL:
                signal.raise_signal(s)


@functools.cache
def _renameat2() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):  # pragma: no cover - glibc before 2.28
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    return fn


def _exchange(a: Path, b: Path) -> bool:
    """Swap two folders in one atomic step (Linux renameat2 RENAME_EXCHANGE); False where there is none."""
    fn = _renameat2()
    if fn is None:
        return False
    import ctypes

    at_fdcwd, rename_exchange = -100, 2
    if fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EPERM):  # a file system without it
        return False
    raise OSError(err, os.strerror(err), str(b))


def _swap(tmp: Path, out: Path) -> Path:
    """Put ``tmp`` at ``out``; returns where the previous ``out`` is now."""
    if _exchange(tmp, out):
        return tmp
    # two renames: a SIGKILL between them leaves -o at .<name>.old-*, which the next compile moves back
    old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
    os.rmdir(old)
    os.replace(out, old)
    try:
        os.replace(tmp, out)
    except BaseException:
        os.replace(old, out)
        raise
    return old


def _install(tmp: Path, out: Path, force: bool, shown: str | Path) -> None:
    """Move the finished project ``tmp`` to ``out``. The previous project's entries that vaqf did not write move
    into the new one first; then the two folders trade places; the previous one is removed last."""
    if not out.is_dir():
        os.replace(tmp, out)
        return
    files = read_marker(out)
    carry = _foreign_entries(out, files) if files is not None else []  # unmarked (--force): replaced whole
    clashes = [rel for rel in carry if _clashes(tmp, rel)]
    if clashes and not force:
        raise OutputExists(f"{shown}/{clashes[0]} was not written by vaqf, but the new project writes that path: "
                           "move it out of the folder, or pass --force to replace it")
    carry = [rel for rel in carry if rel not in clashes]
    old_at: Path | None = None
    try:
        with _signals_held():
            moved: list[str] = []
            try:
                for rel in carry:
                    (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
                    os.replace(out / rel, tmp / rel)
                    moved.append(rel)
                old_at = _swap(tmp, out)
            except BaseException:
                for rel in reversed(moved):  # the user's files go back where they were (else _discard tries)
                    with contextlib.suppress(OSError):
                        os.replace(tmp / rel, out / rel)
                raise
    finally:
        if old_at is not None:
            shutil.rmtree(old_at, ignore_errors=True)
    if carry:
        log.info("kept in %s what vaqf did not write: %s", shown, ", ".join(carry[:8]))


def _clashes(tmp: Path, rel: str) -> bool:
    """Whether the new project has something at ``rel`` or a file where one of its folders would go."""
    p = tmp
    parts = rel.split("/")
    for part in parts[:-1]:
        p = p / part
        if os.path.lexists(p) and not p.is_dir():
            return True
    return os.path.lexists(tmp / rel)


def write_project(graph: Graph, design: Design, out_dir: str | Path, force: bool = False,
                  tb_inputs: np.ndarray | None = None, extra: dict[str, bytes] | None = None,
                  before_install: Callable[[Path], None] | None = None) -> Path:
    """Render the project and install it at ``out_dir`` in one atomic step. vaqf's files replace the previous
    project's; everything else in the folder (a user's notes, vendor-tool runs such as vaqf_prj/) is kept."""
    from vaqf.sim.simulator import Simulator

    out = _abs(out_dir)
    for rel in extra or {}:
        if not _safe_rel(rel):
            raise VaqfError(f"extra project file {rel!r} is not a relative path inside the project")
    with project_lock(out):
        recover_output(out)
        check_output_dir(out, force)
        if design.arch == "dataflow":  # the streaming pipeline: its own top, kernels and ROMs (vaqf/dataflow)
            from vaqf.backend.dataflow import kernel_files, render

            sources = render(graph, design)
            kernels = kernel_files()
            image = DdrImage(np.zeros(0, dtype=np.uint32), {}, design.word_bits)
        else:
            sources, image, _ = render_sources(graph, design)
            kernels = {f"src/vaqf/{h.name}": h.read_bytes() for h in sorted(hls_dir().glob("*.h"))}
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
        try:
            for rel, text in sources.items():
                p = tmp / rel
                p.parent.mkdir(parents=True, exist_ok=True)
                p.write_text(text)
            for rel, data in kernels.items():
                p = tmp / rel
                p.parent.mkdir(parents=True, exist_ok=True)
                p.write_bytes(data)
            (tmp / "data").mkdir(exist_ok=True)
            (tmp / "data" / "weights.bin").write_bytes(image.lanes.astype("<u4").tobytes())
            # self-checking testbench vectors for the vendor C-simulation and co-simulation
            sim = Simulator(graph)
            ins = tb_inputs if tb_inputs is not None else random_int_inputs(graph, tb_vector_count(image), seed=0)
            res = sim.run_int(ins)
            write_io_file(tmp / "data" / "tb_inputs.bin", ins, np.int32)
            write_io_file(tmp / "data" / "tb_expected.bin", res.outputs, np.int64)
            save_graph(graph, tmp)
            design.save(tmp / "design.json")
            if "data/io.json" not in sources:
                (tmp / "data" / "io.json").write_text(json.dumps(io_spec(graph, image), indent=1, sort_keys=True))
            for rel, data in (extra or {}).items():
                p = tmp / rel
                p.parent.mkdir(parents=True, exist_ok=True)
                p.write_bytes(data)
            if before_install is not None:
                before_install(tmp)  # e.g. the report: written before the project is moved into place
            marker = {"tool": "vaqf", "version": __version__, "files": _manifest(tmp),
                      "note": "written by vaqf: a re-compile replaces the files listed here (while their hashes "
                              "match) and keeps everything else in this folder"}
            (tmp / MARKER).write_text(json.dumps(marker, indent=1, sort_keys=True) + "\n")
            _install(tmp, out, force, out_dir)
        except BaseException:
            _discard(tmp, out)  # never deletes a user's file carried into it
            raise
    log.info("wrote %s (%d DDR words of %d bits)", out_dir, image.words, image.word_bits)
    return Path(out_dir)


def io_spec(graph: Graph, image: DdrImage) -> dict:
    """What the host driver needs: per input its quantization, per output its dequantization, and the length
    of each host buffer (``elements``: the size padded to whole DDR words, :func:`io_port`)."""
    rounding = graph.metadata.get("input_rounding", {})
    transforms = graph.metadata.get("input_transform", {})  # vaqf.ir.host: float ops, bipolar inputs

    def padded(v: Value, bits: int) -> int:
        port = io_port(v, 1, image.word_bits, bits)
        return port["words"] * port["per_word"] if image.word_bits >= 64 else v.info.size

    return {
        "word_bits": image.word_bits, "ddr_words": image.words,
        "inputs": [{"name": f"in{i}", "shape": list(v.info.sample_shape), "size": v.info.size,
                    "elements": padded(v, 32),
                    "scale": [float(s) for s in v.info.scale], "zero_point": v.info.zero_point,
                    "min": int(v.info.qtype.min), "max": int(v.info.qtype.max),
                    "rounding": rounding.get(v.name, "HALF_EVEN"),
                    "transform": transforms.get(v.name)} for i, v in enumerate(graph.inputs)],
        "outputs": [{"name": f"out{i}", "shape": list(v.info.sample_shape), "size": v.info.size,
                     "elements": padded(v, 64),
                     "scale": [float(s) for s in v.info.scale], "zero_point": v.info.zero_point}
                    for i, v in enumerate(graph.outputs)],
    }


def random_int_inputs(graph: Graph, count: int, seed: int = 0) -> list[np.ndarray]:
    """Uniform random integers over each input's type (exercises the whole range, saturation included)."""
    rng = np.random.default_rng(seed)
    out = []
    for v in graph.inputs:
        shape = (count,) + v.info.sample_shape
        out.append(rng.integers(int(v.info.qtype.min), int(v.info.qtype.max) + 1, size=shape, dtype=np.int64))
    return out


def write_io_file(path: Path, arrays: list[np.ndarray], dtype: type) -> None:
    """Samples one after another; within a sample, each input (or output) in order, row-major."""
    n = arrays[0].shape[0]
    flat = [np.asarray(a).reshape(n, -1).astype(dtype) for a in arrays]
    path.write_bytes(np.concatenate(flat, axis=1).astype(np.dtype(dtype).newbyteorder("<")).tobytes())


def read_io_file(path: Path, graph_values: list, count: int, dtype: type) -> list[np.ndarray]:
    data = np.frombuffer(path.read_bytes(), dtype=np.dtype(dtype).newbyteorder("<")).astype(np.int64)
    sizes = [v.info.size for v in graph_values]
    per = sum(sizes)
    if data.size != per * count:
        raise VaqfError(f"{path.name} holds {data.size} values, expected {per * count}")
    data = data.reshape(count, per)
    out, pos = [], 0
    for v, s in zip(graph_values, sizes, strict=True):
        out.append(data[:, pos : pos + s].reshape((count,) + v.info.sample_shape))
        pos += s
    return out
