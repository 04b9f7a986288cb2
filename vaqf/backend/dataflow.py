"""The HLS project of a dataflow design: the DATAFLOW top, one function per stage, weight ROMs, testbench.

Rendered from ``templates/dataflow/`` with the kernels of ``hls/vaqf/dataflow/`` (plus ``hls/vaqf/qarith.h``
for requantizing epilogues). The weights are ROMs in the sources (``src/params/<layer>.h``, 64-bit words):
a dataflow design holds them on chip by construction, and the search admits it only when they fit the
board's memory. The host streams frames in the pipeline's order: ``data/io.json`` carries, per input and
output, the permutation from stream position to the tensor's row-major index, which the testbench and the
driver apply.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jinja2
import numpy as np

from vaqf import __version__
from vaqf.backend.names import NameTable
from vaqf.dataflow.pipeline import Layer
from vaqf.dataflow.plan import DataflowPlan, plan_for
from vaqf.dataflow.stages import LayerHw, folded_bias, io_words, thresholds, weight_chunks
from vaqf.dse.design import Design
from vaqf.errors import VaqfError
from vaqf.hw.cost import DDR_LATENCY
from vaqf.ir import Graph
from vaqf.ir.qarith import Rounding

#: numbers per line of a ROM initializer
PER_LINE = 8


def templates_dir() -> Path:
    from vaqf.backend.package_files import _locate

    return _locate("vaqf.templates", "templates", "dataflow/top.cpp.j2") / "dataflow"


def kernels_dir() -> Path:
    """The folder holding ``qarith.h`` and ``dataflow/*.h``."""
    from vaqf.backend.package_files import _locate

    return _locate("vaqf.hls", "hls", "vaqf/dataflow/mvau.h") / "vaqf"


def _env() -> jinja2.Environment:
    """vaqf's one environment shape (strict, the escaping filters every user text goes through), with block
    tags trimmed: these templates are loops over stages."""
    from vaqf.backend.escape import environment

    env = environment(jinja2.FileSystemLoader(str(templates_dir())))
    env.trim_blocks = True
    env.lstrip_blocks = True
    return env


def plan_of(graph: Graph, design: Design) -> DataflowPlan:
    from vaqf.dataflow.pipeline import build_pipeline
    from vaqf.dataflow.plan import layer_hws

    pipe = build_pipeline(graph)
    return plan_for(pipe, layer_hws(pipe), design.knobs, design.word_bits)


def _rom(values: np.ndarray, fmt: str = "{}") -> str:
    """A C initializer of nested braces, PER_LINE numbers a line."""
    a = np.asarray(values)
    if a.ndim == 1:
        items = [fmt.format(int(v)) for v in a]
        lines = [", ".join(items[i:i + PER_LINE]) for i in range(0, len(items), PER_LINE)]
        return "{" + ",\n".join(lines) + "}"
    return "{" + ",\n".join(_rom(x, fmt) for x in a) + "}"


def _weight_words(layer: Layer, hw: LayerHw, pe: int, simd: int) -> np.ndarray:
    """uint64 [PE, NF*SF, chunks]: word (p, nf*SF + sf) holds the weights of channel nf*PE + p, columns
    sf*SIMD .. sf*SIMD + SIMD - 1, element s at bits s*W .. s*W + W - 1 (bipolar: 1 means +1), split into
    chunks of ``weight_chunks`` bits."""
    m = hw.mvau
    assert m is not None
    w = layer.weight.astype(np.int64)
    nf, sf = layer.n // pe, layer.k // simd
    wb = m.w_bits
    bits = np.where(w > 0, 1, 0) if m.bipolar else (w & ((1 << wb) - 1))
    # [nf, pe, sf, simd] -> [pe, nf, sf, simd]
    t = bits.reshape(nf, pe, sf, simd).transpose(1, 0, 2, 3).reshape(pe, nf * sf, simd)
    chunks, cw = weight_chunks(simd * wb)
    out = np.zeros((pe, nf * sf, chunks), dtype=np.uint64)
    for s in range(simd):
        for b in range(wb):  # bit by bit: an element may straddle two chunks
            c, off = divmod(s * wb + b, cw)
            out[:, :, c] |= ((t[:, :, s] >> b) & 1).astype(np.uint64) << np.uint64(off)
    return out


def _per_channel(values: np.ndarray, pe: int) -> np.ndarray:
    """[N, ...] -> [PE, NF, ...]: channel nf*PE + p at [p, nf]."""
    v = np.asarray(values)
    n = v.shape[0]
    return np.swapaxes(v.reshape((n // pe, pe) + v.shape[1:]), 0, 1)


def _mvau_values(layer: Layer, hw: LayerHw, pe: int, simd: int, stage: int, depth: int) -> dict[str, Any]:
    m = hw.mvau
    assert m is not None
    a = layer.node.attrs
    rq = a.get("requant")
    nf, sf = layer.n // pe, layer.k // simd
    out = layer.out_elem
    cfg: dict[str, Any] = {
        "SIMD": simd, "PE": pe, "IN_BITS": m.in_bits, "IN_SIGNED": "true" if m.in_signed else "false",
        "W_BITS": max(m.w_bits, 1), "BIPOLAR": "true" if m.bipolar else "false", "ACC_BITS": m.acc_bits,
        "OUT_BITS": int(out.bits), "NF": nf, "SF": sf, "WDEPTH": nf * sf, "WCHUNKS": weight_chunks(simd * m.w_bits)[0],
        "WCHUNK_BITS": weight_chunks(simd * m.w_bits)[1],
        "TRIPS": m.trips(pe, simd), "RELU": "true" if a.get("relu") else "false", "STAGE": stage, "DEPTH": depth,
        "LO": int(out.min), "HI": int(out.max), "ZP": int(rq["zero_point"]) if rq is not None else 0,
        "MODE": Rounding(rq["rounding"]).cpp_id if rq is not None else 0,
    }
    arrays: dict[str, Any] = {"w": _rom(_weight_words(layer, hw, pe, simd), "0x{:x}ULL")}
    if m.mode == "thresholds":
        thr = thresholds(layer)
        cfg.update(EPI="EPI_THRESHOLDS", NTHR=thr.shape[1], THR_BITS=m.thr_bits,
                   CMP_BITS=max(m.acc_bits, m.thr_bits) + 1, BIAS_BITS=2)
        arrays["thr"] = _rom(_per_channel(thr, pe))
        zeros = np.zeros((pe, nf), dtype=np.int64)
        arrays.update(bias=_rom(zeros), mant=_rom(zeros), shift=_rom(zeros))
    else:
        bias = folded_bias(layer)
        cfg.update(EPI="EPI_REQUANT" if m.mode == "requant" else "EPI_ACC", NTHR=1, THR_BITS=2, CMP_BITS=2,
                   BIAS_BITS=m.bias_bits)
        arrays["thr"] = _rom(np.zeros((pe, nf, 1), dtype=np.int64))
        arrays["bias"] = _rom(_per_channel(bias, pe))
        if m.mode == "requant":
            mant = np.broadcast_to(np.asarray(rq["mantissa"], dtype=np.int64), (layer.n,))
            shift = np.broadcast_to(np.asarray(rq["shift"], dtype=np.int64), (layer.n,))
        else:
            mant = np.zeros(layer.n, dtype=np.int64)
            shift = np.zeros(layer.n, dtype=np.int64)
        arrays["mant"] = _rom(_per_channel(mant, pe))
        arrays["shift"] = _rom(_per_channel(shift, pe))
    return {"cfg": cfg, "arrays": arrays}


def render(graph: Graph, design: Design) -> dict[str, str]:
    """Text of every source file of the dataflow project (paths relative to the project)."""
    plan = plan_of(graph, design)
    env = _env()
    bus = design.word_bits
    names = NameTable()
    by_layer = {hw.layer.name: hw for hw in plan.hws}
    layer_ident = {hw.layer.name: f"l{i}_{names(hw.layer.name)}" for i, hw in enumerate(plan.hws)}
    stages: list[dict[str, Any]] = []
    params: dict[str, str] = {}
    streams: list[dict[str, Any]] = []
    # stream k joins stage k and stage k + 1 (the plan's FIFOs, in chain order)
    fifo_of = {(f.src, f.dst): f for f in plan.fifos}
    for k, st in enumerate(plan.stages):
        entry: dict[str, Any] = {"index": k, "kind": st.kind, "name": st.name, "ident": f"s{k}_{st.kind}",
                                 "trips": st.trips, "depth": st.depth}
        if k + 1 < len(plan.stages):
            f = fifo_of[(st.name, plan.stages[k + 1].name)]
            streams.append({"name": f"q{k}", "width": f.width, "depth": f.depth})
        if st.kind in ("swg", "mvau", "pool"):
            assert st.layer is not None
            hw = by_layer[st.layer]
            layer = hw.layer
            kn = design.knobs[layer.name]
            entry["layer"] = layer_ident[layer.name]
            if st.kind == "mvau":
                vals = _mvau_values(layer, hw, kn["pe"], kn["simd"], k, st.depth)
                entry["cfg"] = vals["cfg"]
                params[f"src/params/{layer_ident[layer.name]}.h"] = env.get_template("params.h.j2").render(
                    ident=layer_ident[layer.name], node=layer.name, cfg=vals["cfg"], arrays=vals["arrays"],
                    version=__version__)
                entry["params"] = f"params/{layer_ident[layer.name]}.h"
            elif st.kind == "swg":
                g = layer.geom
                simd = kn["simd"]
                sw = hw.swg
                assert sw is not None
                entry["cfg"] = {"SIMD": simd, "BITS": int(layer.in_elem.bits), "CF": g["c"] // simd, "H": g["h"],
                                "W": g["w"], "K": g["kernel"], "PT": g["pads"][0], "PL": g["pads"][1],
                                "HO": g["ho"], "WO": g["wo"], "PRE": sw.pre_rows(), "T": sw.pass_trips(simd),
                                "TRIPS": st.trips, "ZP": g["zp"], "STAGE": k, "DEPTH": st.depth}
            else:
                g = layer.geom
                p = kn["p"]
                entry["cfg"] = {"P": p, "BITS": int(layer.in_elem.bits),
                                "SIGNED": "true" if layer.in_elem.signed else "false", "CF": g["c"] // p,
                                "H": g["h"], "W": g["w"], "K": g["kernel"], "HO": g["ho"], "WO": g["wo"],
                                "TRIPS": st.trips, "STAGE": k, "DEPTH": st.depth}
        elif st.kind == "dwc":
            prev = streams[k - 1]
            bits = prev["width"] // st.in_width
            elems = st.trips * min(st.in_width, st.out_width)
            entry["cfg"] = {"A": st.in_width, "B": st.out_width, "BITS": bits, "ELEMS": elems}
        stages.append(entry)
    pipe = plan.pipeline
    in_bits, out_bits = int(pipe.in_elem.bits), int(pipe.out_elem.bits)
    s_in, s_out = plan.stages[0].out_width, plan.stages[-1].in_width
    in_words, in_bus, _ = io_words(pipe.input_value.info.size, s_in, in_bits, bus)
    out_words, out_bus, _ = io_words(pipe.output_value.info.size, s_out, out_bits, bus)
    io = {"bus": bus, "in_bits": in_bits, "in_signed": bool(pipe.in_elem.signed), "in_s": s_in, "in_words": in_words,
          "in_bus_words": in_bus, "in_size": pipe.input_value.info.size,
          "out_bits": out_bits, "out_signed": bool(pipe.out_elem.signed), "out_s": s_out, "out_words": out_words,
          "out_bus_words": out_bus, "out_size": pipe.output_value.info.size}
    # any word past ap_int's default 1024 bits: streams, a PE's weights, the bus words staging a stream word
    io["wide"] = max([s["width"] for s in streams] + [hw.word_bits(design.knobs[hw.layer.name]) for hw in plan.hws]
                     + [-(-s_in * in_bits // bus) * bus, -(-s_out * out_bits // bus) * bus]) > 1024
    values = {"version": __version__, "stages": stages, "streams": streams, "io": io, "top": "vaqf_top",
              "ddr_latency": DDR_LATENCY, "part": design.board.part, "clock_ns": round(1000.0 / design.clock_mhz, 3),
              "board": design.board.name, "interval": plan.interval, "latency": plan.latency,
              "fps": round(design.board.clock_hz / plan.interval, 3),
              "in_order": _rom(pipe.input_order), "out_order": _rom(pipe.output_order)}
    files = {"src/vaqf_top.h": "top.h.j2", "src/vaqf_top.cpp": "top.cpp.j2", "tb/testbench.cpp": "testbench.cpp.j2",
             "tb/io_order.h": "io_order.h.j2", "scripts/build_vitis_hls.tcl": "build_vitis_hls.tcl.j2",
             "README.md": "README.md.j2"}
    out = {path: env.get_template(t).render(**values) for path, t in files.items()}
    out.update(params)
    out["data/layers.json"] = json.dumps([{"index": s["index"], "ident": s["ident"], "node": s["name"],
                                           "op": s["kind"], "unit": s["kind"]} for s in stages], indent=1) + "\n"
    out["data/io.json"] = json.dumps({
        "arch": "dataflow", "bus_bits": bus,
        "inputs": [{"name": "in0", "shape": list(pipe.input_value.info.sample_shape), "size": io["in_size"],
                    "bits": in_bits, "signed": io["in_signed"], "stream_word_elements": s_in,
                    "bus_words_per_frame": in_bus, "scale": [float(s) for s in pipe.input_value.info.scale],
                    "zero_point": pipe.input_value.info.zero_point,
                    "rounding": graph.metadata.get("input_rounding", {}).get(pipe.input_value.name, "HALF_EVEN"),
                    "transform": graph.metadata.get("input_transform", {}).get(pipe.input_value.name),
                    "stream_order": [int(v) for v in pipe.input_order]}],
        "outputs": [{"name": "out0", "shape": list(pipe.output_value.info.sample_shape), "size": io["out_size"],
                     "bits": out_bits, "signed": io["out_signed"], "stream_word_elements": s_out,
                     "bus_words_per_frame": out_bus, "scale": [float(s) for s in pipe.output_value.info.scale],
                     "zero_point": pipe.output_value.info.zero_point,
                     "stream_order": [int(v) for v in pipe.output_order]}]}, indent=1) + "\n"
    return out


def kernel_files() -> dict[str, bytes]:
    """The kernel headers a dataflow project compiles (relative to the project)."""
    k = kernels_dir()
    out = {f"src/vaqf/{p.name}": p.read_bytes() for p in (k / "qarith.h",)}
    for p in sorted((k / "dataflow").glob("*.h")):
        out[f"src/vaqf/dataflow/{p.name}"] = p.read_bytes()
    if not out:
        raise VaqfError(f"no dataflow kernels under {k}")
    return out
