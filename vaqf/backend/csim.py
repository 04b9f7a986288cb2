"""Build a generated project with g++ and run it: the C-simulation that must equal the simulator."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vaqf import progress
from vaqf.backend.emit import random_int_inputs, read_io_file, write_io_file
from vaqf.errors import ToolchainError, VaqfError
from vaqf.ir import Graph
from vaqf.ir.serialize import load_graph
from vaqf.sim.simulator import Simulator

log = logging.getLogger(__name__)

#: VAQF_COUNT_CYCLES: the kernels' cycle counters (hls/vaqf/cycles.h), compiled only into C-simulations
CXXFLAGS = ["-O2", "-std=c++14", "-w", "-DVAQF_COUNT_CYCLES"]


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


def build(project: Path) -> Path:
    """Compile the testbench and top into ``project/build/csim`` (reused while the sources are unchanged)."""
    project = Path(project)
    sources = [project / "tb" / "testbench.cpp", project / "src" / "vaqf_top.cpp"]
    for s in sources:
        if not s.is_file():
            raise VaqfError(f"{project} is not a vaqf project: {s.relative_to(project)} is missing")
    inc = ap_include_dir()
    cxx = compiler()
    h = hashlib.sha256()
    for f in sorted((project / "src").rglob("*")) + [sources[0]]:
        if f.is_file():
            h.update(f.name.encode())
            h.update(f.read_bytes())
    h.update(str(inc).encode())
    h.update(cxx.encode())
    digest = h.hexdigest()[:16]
    exe = project / "build" / "csim"
    stamp = project / "build" / "csim.sha"
    if exe.is_file() and stamp.is_file() and stamp.read_text() == digest:
        return exe
    exe.parent.mkdir(exist_ok=True)
    cmd = [cxx, *CXXFLAGS, f"-I{project / 'src'}", f"-I{inc}", *map(str, sources), "-o", str(exe)]
    log.info("building C-simulation: %s", " ".join(cmd))
    with progress.stage("building the C-simulation with g++"):
        proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-25:])
        raise ToolchainError(f"g++ failed to build {project}:\n{tail}")
    stamp.write_text(digest)
    return exe


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
    inputs: int
    bit_exact: int              # samples whose every output equals the simulator's
    mismatched_values: int
    outputs: list[np.ndarray]   # C++ integer outputs
    expected: list[np.ndarray]  # simulator integer outputs
    cycles: list[LayerCycles] | None = None  # per layer, when asked for

    def total_cycles(self) -> tuple[int, int]:
        """(measured, estimated) cycles of a whole frame."""
        cyc = self.cycles or []
        return sum(c.measured for c in cyc), sum(c.estimated for c in cyc)

    def to_json(self) -> dict:
        d = {"inputs": self.inputs, "bit_exact": self.bit_exact, "mismatched_values": self.mismatched_values}
        if self.cycles is not None:
            m, e = self.total_cycles()
            d["cycles"] = [c.to_json() for c in self.cycles]
            d["total"] = {"measured": m, "estimated": e}
        return d


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
    out = [LayerCycles("io", "top", counted.get("io", 0), int(design.estimate.get("cycles", layer_est)) - layer_est)]
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


def run_csim(project: Path, int_inputs: list[np.ndarray] | None = None, count: int = 100, seed: int = 0,
             graph: Graph | None = None, cycles: bool = False) -> CsimResult:
    """Run the C-simulation on integer inputs (random over the input types by default) and compare; with
    ``cycles``, also read the kernels' cycle counters for the first input and set them against the
    estimate per layer."""
    project = Path(project)
    graph = graph or load_graph(project)
    exe = build(project)
    if int_inputs is None:
        int_inputs = random_int_inputs(graph, count, seed)
    n = int(int_inputs[0].shape[0])
    expected = simulate_in_batches(graph, int_inputs)
    with tempfile.TemporaryDirectory(prefix="vaqf-csim-") as td:
        tdp = Path(td)
        write_io_file(tdp / "in.bin", int_inputs, np.int32)
        with progress.stage(f"running the C-simulation on {n} inputs"):
            proc = subprocess.run([str(exe), str(project / "data" / "weights.bin"), str(tdp / "in.bin"),
                                   str(tdp / "out.bin"), str(n), str(tdp / "cycles.txt")],
                                  capture_output=True, text=True)
        if proc.returncode != 0:
            raise ToolchainError(f"the C-simulation exited with {proc.returncode}: {proc.stderr.strip()[-2000:]}")
        got = read_io_file(tdp / "out.bin", graph.outputs, n, np.int64)
        layer_cycles = read_cycles(project, tdp / "cycles.txt") if cycles else None
    per_sample = np.ones(n, dtype=bool)
    mism = 0
    for g, e in zip(got, expected, strict=True):
        diff = g.reshape(n, -1) != np.asarray(e, dtype=np.int64).reshape(n, -1)
        per_sample &= ~diff.any(axis=1)
        mism += int(diff.sum())
    return CsimResult(n, int(per_sample.sum()), mism, got, expected, layer_cycles)
