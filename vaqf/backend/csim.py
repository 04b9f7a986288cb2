"""Build a generated project with g++ and run it: the C-simulation that must equal the simulator.

``vaqf csim`` compiles the project's C++ and runs it, as ``make csim`` would: run it on projects you trust. What it
guards against is a project making it run anything else, or hang. It never runs a binary found in the project: the
sources are copied out of the project (plain files only) and built into a cache outside it, private to the user
and named by the SHA-256 of what was compiled, so a cached build is always one vaqf made from those very sources.
It never writes into the project; it reads only plain files from it (a FIFO or a device would block forever);
every subprocess has a timeout. The run goes in steps of a few seconds, with progress after each and Ctrl-C
(or SIGTERM) stopping it with the results so far.
"""

from __future__ import annotations

import atexit
import hashlib
import importlib.util
import json
import logging
import os
import re
import shutil
import stat
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vaqf import progress
from vaqf.backend.emit import (
    check_compiled_together,
    project_lock,
    random_int_inputs,
    read_io_file,
    write_io_file,
)
from vaqf.errors import ToolchainError, VaqfError
from vaqf.ir import Graph
from vaqf.ir.serialize import load_graph
from vaqf.sim.simulator import Simulator

log = logging.getLogger(__name__)

#: VAQF_COUNT_CYCLES: the kernels' cycle counters (hls/vaqf/cycles.h), compiled only into C-simulations
CXXFLAGS = ["-O2", "-std=c++14", "-w", "-DVAQF_COUNT_CYCLES"]
BUILD_TIMEOUT_S = 3600.0
#: rough speed of the kernels' C-simulation built with -O2, in multiply-accumulates per second of one core
#: (DeiT-tiny, 1.26 G MACs: about 200 s an input); sets the default input count and the default timeout
CSIM_MACS_PER_S = 5e6
#: the default input count aims at a run of about this long, with at least one input and at most DEFAULT_INPUTS
DEFAULT_RUN_S = 120.0
DEFAULT_INPUTS = 200
#: the default per-input timeout: this many times the expected time, and never less than MIN_TIMEOUT_S
TIMEOUT_FACTOR = 20.0
MIN_TIMEOUT_S = 600.0
#: inputs go to the binary in steps of about this long (one input at a time when one takes longer): progress is
#: shown and Ctrl-C stops the run between steps, with the steps done so far as the result
STEP_S = 2.0
MAX_STEP = 4096
#: what a project may hand the build: files under src/ and tb/, and their bytes
MAX_SOURCE_FILES = 10_000
MAX_SOURCE_BYTES = 1 << 30
#: the files of a project the C-simulation reads (besides src/ and tb/, which the build copies)
PROJECT_FILES = ("graph.json", "graph.npz", "design.json", "data/layers.json", "data/weights.bin")
CACHE_ENTRIES = 32
WORKDIR_PREFIX = "vaqf-csim-"


def ap_include_dir() -> Path:
    """``$XILINX_HLS/include`` when set, else the Apache-2.0 ap_types headers shipped by hls4ml."""
    xil = os.environ.get("XILINX_HLS")
    if xil:
        p = Path(xil) / "include"
        if (p / "ap_int.h").is_file():
            return p
        raise ToolchainError(f"XILINX_HLS is set to {xil}, but {p}/ap_int.h does not exist")
    spec = importlib.util.find_spec("hls4ml")
    if spec is not None and spec.submodule_search_locations:
        for loc in spec.submodule_search_locations:
            p = Path(loc) / "templates" / "vivado" / "ap_types"
            if (p / "ap_int.h").is_file():
                return p
    raise ToolchainError("no ap_int.h headers found: set XILINX_HLS to a Vivado/Vitis HLS install, or install "
                         "the C-simulation extra: pip install 'vaqf[csim]' (hls4ml ships the Apache-2.0 headers)")


def compiler() -> str:
    cxx = os.environ.get("CXX", "g++")
    if shutil.which(cxx) is None:
        raise ToolchainError(f"C++ compiler '{cxx}' not found; install g++ (or set CXX)")
    return cxx


# ---- what is read from the project ------------------------------------------------------------------------------

def _not_a_project(project: Path, why: str) -> VaqfError:
    return VaqfError(f"{project} is not a vaqf project: {why} (give a folder written by `vaqf compile`)")


def check_project(project: Path) -> None:
    """Refuse a project whose files the C-simulation reads are missing or not plain files (a FIFO or a device
    would block the read forever)."""
    project = Path(project)
    if not project.is_dir():
        raise _not_a_project(project, "no such folder")
    for rel in PROJECT_FILES + ("tb/testbench.cpp", "src/vaqf_top.cpp"):
        try:
            st = os.stat(project / rel)
        except FileNotFoundError:
            raise _not_a_project(project, f"{rel} is missing") from None
        except OSError as e:
            raise VaqfError(f"cannot read {project / rel}: {e.strerror}") from None
        if not stat.S_ISREG(st.st_mode):
            raise VaqfError(f"{project / rel} is not a plain file (a FIFO, device or folder): vaqf reads only plain "
                            "files from a project; compile the project again")


def _read_plain(path: Path, limit: int = MAX_SOURCE_BYTES) -> bytes:
    """A plain file's bytes, never blocking: opened without waiting for a FIFO's writer, refused unless plain."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError as e:
        raise VaqfError(f"cannot read {path}: {e.strerror}") from None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise VaqfError(f"{path} is not a plain file (a FIFO, device or folder): vaqf reads only plain files from "
                            "a project; compile the project again")
        if st.st_size > limit:
            raise VaqfError(f"{path} has {st.st_size} bytes, more than the {limit} vaqf reads from a project")
        return f.read(st.st_size)  # what it held when checked, however it grows


def _copy_sources(project: Path, dst: Path) -> None:
    """Copy the project's src/ and tb/ to ``dst`` (links followed once, plain files only, bounded), so the build
    compiles exactly the bytes it hashed and never reads the project again."""
    files = 0
    total = 0
    seen: set[tuple[int, int]] = set()

    def copy_dir(src: Path, out: Path) -> None:
        nonlocal files, total
        st = os.stat(src)
        if (st.st_dev, st.st_ino) in seen:
            raise VaqfError(f"{src} is reached twice through symbolic links: compile the project again")
        seen.add((st.st_dev, st.st_ino))
        out.mkdir()
        for name in sorted(os.listdir(src)):
            p = src / name
            try:
                st = os.stat(p)
            except OSError as e:
                raise VaqfError(f"cannot read {p}: {e.strerror}") from None
            if stat.S_ISDIR(st.st_mode):
                copy_dir(p, out / name)
                continue
            data = _read_plain(p)
            files += 1
            total += len(data)
            if files > MAX_SOURCE_FILES or total > MAX_SOURCE_BYTES:
                raise VaqfError(f"{project} has more than {MAX_SOURCE_FILES} files or {MAX_SOURCE_BYTES} bytes under "
                                "src/ and tb/: not a project vaqf wrote")
            (out / name).write_bytes(data)

    dst.mkdir(parents=True, exist_ok=True)
    for sub in ("src", "tb"):
        copy_dir(project / sub, dst / sub)


def _digest(sources: Path, inc: Path, cxx: str) -> str:
    """SHA-256 of everything a build reads: the copied sources (paths and bytes), the flags, the compiler and the
    ap_types headers (by path, size and time: they are the user's own install)."""
    h = hashlib.sha256()
    for p in sorted(sources.rglob("*")):
        if p.is_file():
            data = p.read_bytes()
            h.update(f"{p.relative_to(sources).as_posix()}\0{len(data)}\0".encode())
            h.update(data)
    h.update("\0".join(CXXFLAGS).encode())
    exe = shutil.which(cxx) or cxx
    for p in [Path(exe), *sorted(q for q in inc.rglob("*") if q.is_file())]:
        st = os.stat(p)
        h.update(f"\0{os.path.realpath(p)}\0{st.st_size}\0{st.st_mtime_ns}".encode())
    return h.hexdigest()


# ---- the build cache, outside the project --------------------------------------------------------------------------

def cache_dir() -> Path | None:
    """Where built C-simulations are kept: ``$VAQF_CACHE_DIR/csim``, else ``$XDG_CACHE_HOME/vaqf/csim``, else
    ``~/.cache/vaqf/csim``; None when that folder cannot be made private to this user (builds then go to a
    temporary folder)."""
    base = os.environ.get("VAQF_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "vaqf")
    d = Path(base) / "csim"
    try:
        d.mkdir(parents=True, exist_ok=True, mode=0o700)
        st = os.lstat(d)
    except OSError as e:
        log.info("no C-simulation cache (%s): building into a temporary folder", e)
        return None
    mine = not hasattr(os, "getuid") or st.st_uid == os.getuid()
    if not stat.S_ISDIR(st.st_mode) or not mine or st.st_mode & 0o022:
        log.warning("not using %s as the C-simulation cache: it is not a folder of this user's that only they can "
                    "write", d)
        return None
    return d


def _prune_cache(cache: Path) -> None:
    """Keep the newest CACHE_ENTRIES builds; drop half-written ones of runs that are gone."""
    entries = []
    for p in cache.iterdir():
        m = re.fullmatch(r"\.[0-9a-f]+\.(\d+)\.tmp", p.name)
        if m and not _alive(int(m.group(1))):
            p.unlink(missing_ok=True)
        elif re.fullmatch(r"[0-9a-f]{64}", p.name):
            entries.append((p.stat().st_mtime, p))
    for _, p in sorted(entries, reverse=True)[CACHE_ENTRIES:]:
        p.unlink(missing_ok=True)


_scratch: list[Path] = []


def _scratch_dir() -> Path:
    """A temporary folder for builds without a cache, removed when the process exits."""
    if not _scratch:
        _scratch.append(Path(tempfile.mkdtemp(prefix=f"{WORKDIR_PREFIX}{os.getpid()}-")))
        atexit.register(shutil.rmtree, _scratch[0], True)
    return _scratch[0]


def build(project: Path, work: Path | None = None) -> Path:
    """Compile the project's testbench and top with g++; returns the executable. The sources are copied out of the
    project first and the executable is kept in the cache (``cache_dir()``) under the SHA-256 of what was compiled,
    so a later run on the same sources reuses it; nothing of the project's own build/ is read or written."""
    project = Path(project)
    for rel in ("tb/testbench.cpp", "src/vaqf_top.cpp"):
        if not (project / rel).is_file():
            raise _not_a_project(project, f"{rel} is missing")
    inc = ap_include_dir()
    cxx = compiler()
    with tempfile.TemporaryDirectory(prefix=f"{WORKDIR_PREFIX}{os.getpid()}-") as td:
        sources = Path(td) / "sources"
        _copy_sources(project, sources)
        digest = _digest(sources, inc, cxx)
        cache = cache_dir()
        where = cache if cache is not None else (work or _scratch_dir())
        exe = where / (digest if cache is not None else "csim")
        if cache is not None and exe.is_file() and not exe.is_symlink():
            os.utime(exe)
            return exe
        part = where / f".{digest[:16]}.{os.getpid()}.tmp"
        cmd = [cxx, *CXXFLAGS, f"-I{sources / 'src'}", f"-I{inc}", str(sources / "tb" / "testbench.cpp"),
               str(sources / "src" / "vaqf_top.cpp"), "-o", str(part)]
        log.info("building C-simulation: %s", " ".join(cmd))
        try:
            with progress.stage("building the C-simulation with g++"):
                proc = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL,
                                      timeout=BUILD_TIMEOUT_S)
            if proc.returncode != 0:
                tail = "\n".join(proc.stderr.strip().splitlines()[-25:])
                raise ToolchainError(f"g++ failed to build {project}:\n{tail}")
            os.replace(part, exe)
        except subprocess.TimeoutExpired:
            raise ToolchainError(f"g++ did not finish building {project} within {progress.duration(BUILD_TIMEOUT_S)}"
                                 ) from None
        finally:
            part.unlink(missing_ok=True)
    if cache is not None:
        _prune_cache(cache)
    return exe


# ---- temporary folders of killed runs -------------------------------------------------------------------------------

def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # someone else's process, or no way to tell: leave its files alone
    return True


def clean_stale_workdirs(root: Path | None = None) -> list[Path]:
    """Remove the ``vaqf-csim-<pid>-*`` folders in the temporary folder whose run is gone (killed before it could
    clean up); returns what was removed."""
    root = Path(root or tempfile.gettempdir())
    removed = []
    uid = os.getuid() if hasattr(os, "getuid") else None
    try:
        candidates = list(root.glob(f"{WORKDIR_PREFIX}*"))
    except OSError:
        return removed
    for p in candidates:
        m = re.fullmatch(re.escape(WORKDIR_PREFIX) + r"(\d+)-.+", p.name)
        try:
            st = os.lstat(p)
        except OSError:
            continue
        if not stat.S_ISDIR(st.st_mode) or (uid is not None and st.st_uid != uid):
            continue
        if m is not None and (int(m.group(1)) == os.getpid() or _alive(int(m.group(1)))):
            continue
        if m is None and time.time() - st.st_mtime < 86400:  # an older vaqf's name, without the run's id
            continue
        shutil.rmtree(p, ignore_errors=True)
        removed.append(p)
    return removed


# ---- results ----------------------------------------------------------------------------------------------------

@dataclass
class LayerCycles:
    layer: str        # node name ("io": the top's input and output copies)
    unit: str
    measured: int     # cycles the C-simulation's counters give for the first input
    estimated: int    # cycles the cost model gives (design.json)

    @property
    def ratio(self) -> float:
        return self.measured / self.estimated if self.estimated else (1.0 if self.measured == 0 else float("inf"))

    def to_json(self) -> dict:
        return {"layer": self.layer, "unit": self.unit, "measured": self.measured, "estimated": self.estimated}


@dataclass
class CsimResult:
    inputs: int                 # inputs run (fewer than ``requested`` when interrupted)
    bit_exact: int              # samples whose every output equals the simulator's
    mismatched_values: int
    outputs: list[np.ndarray]   # C++ integer outputs
    expected: list[np.ndarray]  # simulator integer outputs
    cycles: list[LayerCycles] | None = None  # per layer, when asked for
    requested: int = 0          # inputs asked for
    interrupted: bool = False   # stopped by Ctrl-C or SIGTERM: the results are those of the inputs run
    chosen: str = ""            # why this many inputs, when vaqf chose the count

    def total_cycles(self) -> tuple[int, int]:
        """(measured, estimated) cycles of a whole frame."""
        cyc = self.cycles or []
        return sum(c.measured for c in cyc), sum(c.estimated for c in cyc)

    def to_json(self) -> dict:
        d: dict = {"inputs": self.inputs, "bit_exact": self.bit_exact, "mismatched_values": self.mismatched_values}
        if self.interrupted:
            d.update(interrupted=True, requested=self.requested)
        if self.chosen:
            d["inputs_chosen"] = self.chosen
        if self.cycles is not None:
            m, e = self.total_cycles()
            d["cycles"] = [c.to_json() for c in self.cycles]
            d["total"] = {"measured": m, "estimated": e}
        return d


class CsimInterrupted(KeyboardInterrupt):
    """Ctrl-C (or SIGTERM) during a C-simulation; ``result`` holds the inputs run so far."""

    def __init__(self, result: CsimResult) -> None:
        super().__init__(f"C-simulation interrupted after {result.inputs} of {result.requested} inputs")
        self.result = result


def read_cycles(project: Path, path: Path) -> list[LayerCycles]:
    """The counters' file of a C-simulation run, matched with the estimate in the project's design.json."""
    from vaqf.dse.design import Design

    layers = json.loads((project / "data" / "layers.json").read_text())
    design = Design.load(project / "design.json")
    est = {e["node"]: int(e["cycles"]) for e in design.estimate.get("layers", [])}
    counted: dict[str, int] = {}
    for line in path.read_text().split("\n"):
        if line.strip():
            key, value = line.split()
            counted[key] = int(value)
    layer_est = sum(est.values())
    # a dataflow design's stages are its layers (its reader and writer among them): its io_cycles is 0
    io_est = design.estimate.get("io_cycles", int(design.estimate.get("cycles", layer_est)) - layer_est)
    out = [LayerCycles("io", "top", counted.get("io", 0), int(io_est))]
    for entry in layers:
        out.append(LayerCycles(entry["node"], entry["unit"], counted.get(str(entry["index"]), 0),
                               est.get(entry["node"], 0)))
    return out


def simulate_in_batches(graph: Graph, int_inputs: list[np.ndarray], batch: int = 64) -> list[np.ndarray]:
    """The simulator's integer outputs, in batches (bounded memory, and a progress bar when enabled)."""
    sim = Simulator(graph)
    n = int(int_inputs[0].shape[0])
    starts = range(0, n, batch)
    parts = [sim.run_int([a[i : i + batch] for a in int_inputs]).outputs
             for i in progress.bar(starts, total=len(starts), desc="simulating", unit="batch")]
    return [np.concatenate([p[j] for p in parts]) for j in range(len(graph.outputs))]


# ---- how many inputs, how long ---------------------------------------------------------------------------------

def graph_macs(graph: Graph) -> int:
    from vaqf.ops import get_spec

    return sum(int(get_spec(n.op).macs(n)) for n in graph.nodes)


def seconds_per_input(graph: Graph) -> float:
    """A rough C-simulation time of one input, from the design's size (its multiply-accumulates)."""
    return max(graph_macs(graph), 1) / CSIM_MACS_PER_S


def default_input_count(graph: Graph) -> tuple[int, str]:
    """How many random inputs ``vaqf csim`` runs without --inputs: about DEFAULT_RUN_S of work at the design's size,
    1 to DEFAULT_INPUTS; and the sentence that says so."""
    per = seconds_per_input(graph)
    n = int(max(1, min(DEFAULT_INPUTS, DEFAULT_RUN_S // per)))
    why = (f"{n} random input{'s' if n != 1 else ''}, chosen for the design's size ({graph_macs(graph):,} MACs, "
           f"about {progress.duration(per)} an input here); --inputs N to choose")
    return n, why


# ---- the run ----------------------------------------------------------------------------------------------------

def _run_step(exe: Path, weights: Path, work: Path, graph: Graph, chunk: list[np.ndarray], timeout_s: float,
              cycles_file: Path | None) -> list[np.ndarray]:
    k = int(chunk[0].shape[0])
    write_io_file(work / "in.bin", chunk, np.int32)
    cmd = [str(exe), str(weights), str(work / "in.bin"), str(work / "out.bin"), str(k)]
    if cycles_file is not None:
        cmd.append(str(cycles_file))
    with open(work / "stderr.txt", "wb") as err:
        try:
            proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err, cwd=work,
                                  timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise ToolchainError(f"the C-simulation did not finish {k} input{'s' if k != 1 else ''} within "
                                 f"{progress.duration(timeout_s)} and was stopped (--timeout sets the seconds "
                                 "allowed per input)") from None
    if proc.returncode != 0:
        tail = (work / "stderr.txt").read_bytes()[-2000:].decode(errors="replace").strip()
        raise ToolchainError(f"the C-simulation exited with {proc.returncode}: {tail}")
    return read_io_file(work / "out.bin", graph.outputs, k, np.int64)


def run_csim(project: Path, int_inputs: list[np.ndarray] | None = None, count: int | None = 100, seed: int = 0,
             graph: Graph | None = None, cycles: bool = False, x: np.ndarray | None = None,
             timeout_s: float | None = None, saturate: bool = False) -> CsimResult:
    """Run the C-simulation on integer inputs (``x``: float inputs, quantized as the host would; else ``count``
    random ones over the input types; ``count=None``: as many as suit the design's size, see
    ``default_input_count``) and compare with the simulator; with ``cycles``, also read the kernels' cycle
    counters for the first input and set them against the estimate per layer. ``timeout_s`` bounds each input
    (default: TIMEOUT_FACTOR times the expected time); ``saturate``: NaN/inf in ``x`` are set to 0/saturated with
    a warning instead of refused. Ctrl-C raises ``CsimInterrupted`` with the results so far."""
    project = Path(project)
    check_project(project)
    clean_stale_workdirs()
    with tempfile.TemporaryDirectory(prefix=f"{WORKDIR_PREFIX}{os.getpid()}-") as td:
        work = Path(td)
        snap = work / "project"
        # everything read from the project is read here, under the lock: a compile cannot swap it halfway
        with project_lock(project, exclusive=False):
            check_project(project)
            check_compiled_together(project)
            graph = graph or load_graph(project)
            (snap / "data").mkdir(parents=True)
            for rel in ("design.json", "data/layers.json", "data/weights.bin"):
                (snap / rel).write_bytes(_read_plain(project / rel, 1 << 40))
            exe = build(project, work)
        chosen = ""
        if x is not None:
            int_inputs = Simulator(graph, saturate=saturate).quantize_inputs([x])
        if int_inputs is None:
            if count is None:
                count, chosen = default_input_count(graph)
                progress.note(chosen)
            if count < 1:
                raise VaqfError(f"the input count must be at least 1, got {count}")
            int_inputs = random_int_inputs(graph, count, seed)
        return _run(exe, snap, work, graph, int_inputs, cycles, timeout_s, chosen)


def _run(exe: Path, snap: Path, work: Path, graph: Graph, int_inputs: list[np.ndarray], cycles: bool,
         timeout_s: float | None, chosen: str) -> CsimResult:
    n = int(int_inputs[0].shape[0])
    per_input = timeout_s if timeout_s is not None else max(MIN_TIMEOUT_S, TIMEOUT_FACTOR * seconds_per_input(graph))
    if per_input <= 0:
        raise VaqfError(f"the timeout must be positive, got {per_input} s")
    sim = Simulator(graph)
    got_parts: list[list[np.ndarray]] = []
    exp_parts: list[list[np.ndarray]] = []
    exact = np.zeros(0, dtype=bool)
    mism = 0
    layer_cycles = None
    done, step = 0, 1

    def result(interrupted: bool) -> CsimResult:
        outs = [np.concatenate([p[j] for p in got_parts]) if got_parts else np.zeros((0,) + v.info.sample_shape,
                np.int64) for j, v in enumerate(graph.outputs)]
        exps = [np.concatenate([p[j] for p in exp_parts]) if exp_parts else np.zeros((0,) + v.info.sample_shape,
                np.int64) for j, v in enumerate(graph.outputs)]
        return CsimResult(done, int(exact.sum()), mism, outs, exps, layer_cycles, n, interrupted, chosen)

    try:
        with progress.counter(n, "C-simulation", "input") as bar:
            while done < n:
                k = min(step, n - done)
                chunk = [a[done : done + k] for a in int_inputs]
                first = done == 0 and cycles
                start = time.perf_counter()
                # k inputs' time, plus as much again (up to a minute) for start-up and loading the weights
                got = _run_step(exe, snap / "data" / "weights.bin", work, graph, chunk,
                                per_input * k + min(60.0, per_input), work / "cycles.txt" if first else None)
                took = time.perf_counter() - start
                exp = sim.run_int(chunk).outputs
                if first:
                    layer_cycles = read_cycles(snap, work / "cycles.txt")
                same = np.ones(k, dtype=bool)
                for g, e in zip(got, exp, strict=True):
                    diff = g.reshape(k, -1) != np.asarray(e, dtype=np.int64).reshape(k, -1)
                    same &= ~diff.any(axis=1)
                    mism += int(diff.sum())
                got_parts.append(got)
                exp_parts.append([np.asarray(e, dtype=np.int64) for e in exp])
                exact = np.concatenate([exact, same])
                done += k
                bar.advance(k, f"{int(exact.sum())} bit-exact")
                step = int(max(1, min(MAX_STEP, STEP_S * k / max(took, 1e-3))))
    except KeyboardInterrupt as e:
        raise CsimInterrupted(result(True)) from e
    return result(False)
