"""Render a Vivado/Vitis HLS project for a Graph and a Design.

The emitter knows nothing unit-specific: each layer's unit (vaqf/units) gives plain values (``Unit.config``
for its instance's config struct, ``Unit.describe`` for a layer's typed descriptor and buffers,
``Unit.ddr_blobs`` for its DDR data) and the unit's Jinja2 template (templates/units) turns them into a
config struct, a wrapper function and a call. The buffer plan and the per-layer modes come from the
Design. The project is written to a temporary folder next to the destination and moved into place, so a
failed or interrupted compile never leaves a half-written project.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
import numpy as np

from vaqf import __version__
from vaqf.backend.bd import block_design_values
from vaqf.backend.names import NameTable
from vaqf.backend.resources import hls_dir, templates_dir
from vaqf.dse.design import Design
from vaqf.errors import OutputExists, VaqfError
from vaqf.hw.board import Board
from vaqf.hw.cost import DDR_LATENCY
from vaqf.hw.layout import design_lanes, last_dim, row_words
from vaqf.hw.memory import BufferPlan, plan_buffers
from vaqf.hw.model import units_of
from vaqf.ir import Graph
from vaqf.ir.serialize import save_graph
from vaqf.units import unit_of
from vaqf.units.base import EmitContext

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
    ctx = EmitContext(buffers, image.offsets, ident, {"act": "act_dummy", "acc": "acc_dummy"}, design.knobs, board,
                      lanes, word_bits, modes)

    units = units_of(graph)
    unit_structs = []
    for u, nodes in units.items():
        if u not in design.knobs:
            raise VaqfError(f"the design has no knobs for unit '{u}'")
        unit = unit_of(nodes[0])
        params = unit.config(u, nodes, design.knobs[u], word_bits)
        tmpl = env.get_template(unit.template_path)
        unit_structs.append(tmpl.module.unit_config(u, params))
    layers = []
    for node in graph.topo():
        unit = unit_of(node)
        layer = {"ident": ident[node.name], "op": node.op, "config": "", "call": "", "node": node.name,
                 "unit": "none" if unit is None else unit.instance(node)}
        if unit is not None:  # a node on no unit only relabels its input's buffer: no call
            p = unit.describe(node, ctx)
            tmpl = env.get_template(unit.template_path)
            layer["config"] = str(tmpl.module.config(p)).strip()
            layer["call"] = str(tmpl.module.call(p)).strip()
        layers.append(layer)
    io_in = [{"ident": f"in{i}", "buf": buffers[v.name], "size": v.info.size, "shape": list(v.info.shape),
              "shape_text": ", ".join(map(str, v.info.sample_shape)), "row": last_dim(v.info),
              "row_words": row_words(last_dim(v.info), lanes)} for i, v in enumerate(graph.inputs)]
    io_out = [{"ident": f"out{i}", "buf": buffers[v.name], "size": v.info.size, "shape": list(v.info.shape),
               "row": last_dim(v.info), "row_words": row_words(last_dim(v.info), lanes)}
              for i, v in enumerate(graph.outputs)]
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


def _is_vaqf_project(path: Path) -> bool:
    return (path / MARKER).is_file()


def check_output_dir(out_dir: Path, force: bool) -> None:
    if out_dir.exists():
        if not out_dir.is_dir():
            raise OutputExists(f"{out_dir} exists and is not a folder")
        if any(out_dir.iterdir()) and not _is_vaqf_project(out_dir) and not force:
            raise OutputExists(f"{out_dir} exists and was not created by vaqf; choose another folder or pass "
                               "--force to replace it")


def write_project(graph: Graph, design: Design, out_dir: str | Path, force: bool = False,
                  tb_inputs: np.ndarray | None = None, extra: dict[str, bytes] | None = None,
                  before_install: Callable[[Path], None] | None = None) -> Path:
    """Render and atomically install the project at ``out_dir``."""
    from vaqf.sim.simulator import Simulator

    out = Path(out_dir)
    check_output_dir(out, force)
    sources, image, _ = render_sources(graph, design)
    parent = out.resolve().parent
    parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=parent))
    try:
        for rel, text in sources.items():
            p = tmp / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(text)
        kernel_dst = tmp / "src" / "vaqf"
        kernel_dst.mkdir(parents=True)
        for h in sorted(hls_dir().glob("*.h")):
            shutil.copyfile(h, kernel_dst / h.name)
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
        (tmp / "data" / "io.json").write_text(json.dumps(io_spec(graph, image), indent=1, sort_keys=True))
        for rel, data in (extra or {}).items():
            p = tmp / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(data)
        if before_install is not None:
            before_install(tmp)  # e.g. the report: written before the project is moved into place
        (tmp / MARKER).write_text(json.dumps({"tool": "vaqf", "version": __version__,
                                              "note": "created by vaqf; vaqf may replace this folder"}) + "\n")
        _install(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("wrote %s (%d DDR words of %d bits)", out, image.words, image.word_bits)
    return out


def _install(tmp: Path, out: Path) -> None:
    """Move ``tmp`` to ``out``; an existing ``out`` is moved aside first and deleted only afterwards."""
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.resolve().parent))
        os.rmdir(old)
        os.replace(out, old)
        try:
            os.replace(tmp, out)
        except BaseException:
            os.replace(old, out)
            raise
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out)


def io_spec(graph: Graph, image: DdrImage) -> dict:
    """What the host driver needs: per input its quantization, per output its dequantization."""
    rounding = graph.metadata.get("input_rounding", {})
    return {
        "word_bits": image.word_bits, "ddr_words": image.words,
        "inputs": [{"name": f"in{i}", "shape": list(v.info.sample_shape), "size": v.info.size,
                    "scale": [float(s) for s in v.info.scale], "zero_point": v.info.zero_point,
                    "min": int(v.info.qtype.min), "max": int(v.info.qtype.max),
                    "rounding": rounding.get(v.name, "HALF_EVEN")} for i, v in enumerate(graph.inputs)],
        "outputs": [{"name": f"out{i}", "shape": list(v.info.sample_shape), "size": v.info.size,
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
