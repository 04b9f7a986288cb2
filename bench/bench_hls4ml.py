"""The same quantized MLP and CNN through hls4ml and through vaqf: conversion + writing, g++ build of the
C-simulation, prediction of 1,000 inputs, and agreement with the quantized reference, in one run.

    .venv/bin/python bench/bench_hls4ml.py [--precisions "fixed<16,6>,fixed<32,16>,fixed<48,16>"] [--work DIR]

Models (QONNX, per-tensor scales, 8-bit activations; inputs: 1,000 of scikit-learn's 8x8 digits, in [0, 1]):
- MLP: the built-in example (``vaqf.examples.example_model("mlp")``: 64-64-32-10, int8 / binary / int4
  weights, trained with QAT) with its per-output-channel weight scales replaced by per-tensor ones (hls4ml
  1.3 cannot move per-channel weight scales through a MatMul: "Failed to propagate quantization scales down
  MatMul node", then an IndexError). vaqf also runs the original per-channel model (last table).
- CNN: Conv(1->8, 3x3, pad 1) ReLU MaxPool(2) Conv(8->16, 3x3, pad 1) ReLU MaxPool(2) Flatten Gemm(64->10),
  trained in float on the digits (torch, a few seconds, cached), then quantized post-training: int8 weights
  (symmetric, per tensor), unsigned 8-bit activations (scale = calibration max / 255), 8-bit input.

Reference: the QONNX model executed by qonnx's own ``execute_onnx`` (Quant/BipolarQuant semantics in float);
float reference: the same weights with every quantizer removed, in onnxruntime.

hls4ml (Vivado backend, io_parallel, ``config_from_onnx_model(granularity="name")`` with each default precision
given by --precisions): qonnx cleanup (CNN: also ConvertToChannelsLastAndClean and GemmToMatMul), convert,
write, ``_compile`` (the g++ build of ``compile()``, without its second write), ``predict`` on the 1,000 inputs.
vaqf: ``compile_model`` (import, passes, search, emission), ``vaqf.backend.csim.build`` (g++), the C-simulation
executable on the 1,000 quantized inputs, and the bit-accurate simulator on the same float inputs.
Prediction times are medians of 3 runs. Ratios compare the first hls4ml precision whose argmax agreement
with the reference is 100% (else its best) with vaqf.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import re
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import set_threads  # noqa: E402

THREADS = set_threads(sys.argv)

import numpy as np  # noqa: E402
import onnx  # noqa: E402
from benchlib import DEFAULT_WORK, float_counterpart, fmt_s, machine, ort_session, table  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

QD = "qonnx.custom_op.general"
DEFAULT_PRECISIONS = "fixed<16,6>,fixed<32,16>,fixed<48,16>"


# ---- data and models -----------------------------------------------------------------------------

def digits() -> tuple[np.ndarray, np.ndarray]:
    """All 1,797 digits as [N, 64] floats in [0, 1] and labels (the example's 360 held-out ones without sklearn)."""
    try:
        from sklearn.datasets import load_digits

        x, y = load_digits(return_X_y=True)
        return (x / 16.0).astype(np.float32), y.astype(np.int64)
    except ImportError:
        from vaqf.examples import example_inputs

        return example_inputs("mlp")


def _const(name: str, v: np.ndarray | float) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(v, dtype=np.float32), name)


def mlp_per_tensor() -> onnx.ModelProto:
    """The built-in example MLP with per-tensor weight scales (binary: mean |w|; b-bit: max |w| / (2^(b-1)-1))."""
    from vaqf.examples import example_model

    m = example_model("mlp")
    inits = {t.name: t for t in m.graph.initializer}
    for node in m.graph.node:
        if node.op_type not in ("Quant", "BipolarQuant") or node.input[0] not in inits:
            continue  # activation quantizers keep their (per-tensor) scales
        w = numpy_helper.to_array(inits[node.input[0]])
        if node.op_type == "BipolarQuant":
            s = np.abs(w).mean()
        else:
            bits = int(numpy_helper.to_array(inits[node.input[3]]))
            s = max(float(np.abs(w).max()) / (2 ** (bits - 1) - 1), 1e-8)
        inits[node.input[1]].CopyFrom(_const(node.input[1], s))
    m.graph.name = "mlp_digits_per_tensor"
    return m


def train_cnn(x: np.ndarray, y: np.ndarray, seed: int = 0, epochs: int = 15):
    import torch
    from torch import nn

    torch.set_num_threads(1)
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(8, 16, 3, padding=1),
                        nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(64, 10))
    opt = torch.optim.Adam(net.parameters(), 3e-3)
    xt, yt = torch.tensor(x.reshape(-1, 1, 8, 8)), torch.tensor(y)
    for _ in range(epochs):
        for b in torch.randperm(len(xt)).split(64):
            opt.zero_grad()
            nn.functional.cross_entropy(net(xt[b]), yt[b]).backward()
            opt.step()
    return net.eval()


def qonnx_cnn(net, calib: np.ndarray) -> onnx.ModelProto:
    """QONNX form of the trained CNN: per-tensor int8 weights, unsigned 8-bit activations and input."""
    import torch

    with torch.no_grad():
        a1 = net[1](net[0](torch.tensor(calib.reshape(-1, 1, 8, 8))))
        a2 = net[4](net[3](net[2](a1)))
    act_scales = [float(a1.max()) / 255, float(a2.max()) / 255]
    nodes = [helper.make_node("Quant", ["x", "in_scale", "zero", "bits8"], ["xq"], domain=QD, signed=0, narrow=0,
                              rounding_mode="ROUND", name="quant_in")]
    inits = [_const("zero", 0.0), _const("bits8", 8.0), _const("in_scale", 1 / 255)]
    cur = "xq"
    for i, conv in enumerate((net[0], net[3])):
        w, b = conv.weight.detach().numpy(), conv.bias.detach().numpy()
        inits += [_const(f"cw{i}", w), _const(f"cw{i}_scale", np.abs(w).max() / 127), _const(f"cb{i}", b),
                  _const(f"act{i}_scale", act_scales[i])]
        nodes += [
            helper.make_node("Quant", [f"cw{i}", f"cw{i}_scale", "zero", "bits8"], [f"cw{i}q"], domain=QD, signed=1,
                             narrow=1, rounding_mode="ROUND", name=f"wquant{i}"),
            helper.make_node("Conv", [cur, f"cw{i}q", f"cb{i}"], [f"conv{i}"], kernel_shape=[3, 3], pads=[1, 1, 1, 1],
                             strides=[1, 1], dilations=[1, 1], group=1, name=f"conv{i}"),
            helper.make_node("Relu", [f"conv{i}"], [f"relu{i}"], name=f"relu{i}"),
            helper.make_node("Quant", [f"relu{i}", f"act{i}_scale", "zero", "bits8"], [f"act{i}"], domain=QD,
                             signed=0, narrow=0, rounding_mode="ROUND", name=f"quant_act{i}"),
            helper.make_node("MaxPool", [f"act{i}"], [f"pool{i}"], kernel_shape=[2, 2], strides=[2, 2],
                             pads=[0, 0, 0, 0], name=f"pool{i}"),
        ]
        cur = f"pool{i}"
    fc = net[7]
    w, b = fc.weight.detach().numpy(), fc.bias.detach().numpy()
    inits += [_const("fw", w), _const("fw_scale", np.abs(w).max() / 127), _const("fb", b)]
    nodes += [helper.make_node("Flatten", [cur], ["flat"], axis=1, name="flatten"),
              helper.make_node("Quant", ["fw", "fw_scale", "zero", "bits8"], ["fwq"], domain=QD, signed=1, narrow=1,
                               rounding_mode="ROUND", name="wquant_fc"),
              helper.make_node("Gemm", ["flat", "fwq", "fb"], ["logits"], transB=1, name="fc")]
    graph = helper.make_graph(nodes, "cnn_digits", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                                  ["batch", 1, 8, 8])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])], inits)
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(QD, 1)],
                          producer_name="vaqf-bench")
    m.ir_version = 10
    return m


def cnn_model(work: Path, x: np.ndarray, y: np.ndarray) -> tuple[onnx.ModelProto, float]:
    path = work / "cnn_digits_qonnx.onnx"
    if path.is_file():
        return onnx.load(str(path)), float("nan")
    rng = np.random.default_rng(0)
    idx = rng.permutation(len(x))
    train = idx[360:]
    t0 = time.perf_counter()
    net = train_cnn(x[train], y[train])
    model = qonnx_cnn(net, x[train[:512]])
    work.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return model, time.perf_counter() - t0


# ---- references ----------------------------------------------------------------------------------

def qonnx_reference(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    """qonnx's own executor on the whole batch. Its per-node models get the IR version onnxruntime reads
    (onnx 1.23 writes 14, onnxruntime 1.31 reads up to 13; see docs FACTS section 3)."""
    import qonnx.core.onnx_exec as oe
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.util.cleanup import cleanup_model

    make = oe.qonnx_make_model

    def make_readable(graph, **kw):  # noqa: ANN001, ANN202
        m = make(graph, **kw)
        m.ir_version = 10
        return m

    m = copy.deepcopy(model)
    for vi in (m.graph.input[0], m.graph.output[0]):
        vi.type.tensor_type.shape.dim[0].dim_value = len(x)
    oe.qonnx_make_model = make_readable
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            mw = cleanup_model(ModelWrapper(m))
            return oe.execute_onnx(mw, {mw.graph.input[0].name: x})[mw.graph.output[0].name]
    finally:
        oe.qonnx_make_model = make


def _median_time(fn, repeat: int = 3) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def _agreement(out: np.ndarray, ref: np.ndarray, flt: np.ndarray, y: np.ndarray) -> dict:
    out = np.asarray(out, dtype=np.float64).reshape(len(ref), -1)
    return {"agree_ref": float((out.argmax(1) == ref.argmax(1)).mean()),
            "agree_float": float((out.argmax(1) == flt.argmax(1)).mean()),
            "accuracy": float((out.argmax(1) == y).mean()),
            "max_abs_err": float(np.abs(out - ref).max()), "ref_max_abs": float(np.abs(ref).max())}


# ---- hls4ml ----------------------------------------------------------------------------------------

def hls4ml_prepare(model: onnx.ModelProto, conv: bool):
    """What hls4ml's QONNX front end needs before conversion."""
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.transformation.channels_last import ConvertToChannelsLastAndClean
    from qonnx.transformation.gemm_to_matmul import GemmToMatMul
    from qonnx.util.cleanup import cleanup_model

    m = copy.deepcopy(model)
    # a graph ending in Identity converts, but the generated C++ then names no output and fails to compile:
    # let the node before it write the graph output
    for ident in [n for n in m.graph.node if n.op_type == "Identity" and n.output[0] in
                  {o.name for o in m.graph.output}]:
        for n in m.graph.node:
            n.output[:] = [ident.output[0] if o == ident.input[0] else o for o in n.output]
        m.graph.node.remove(ident)
    mw = cleanup_model(ModelWrapper(m))
    if conv:
        mw = mw.transform(ConvertToChannelsLastAndClean())
        mw = mw.transform(GemmToMatMul())
        mw = cleanup_model(mw)
    return mw


def run_hls4ml(model: onnx.ModelProto, conv: bool, x: np.ndarray, precision: str, out: Path) -> dict:
    import hls4ml

    log = io.StringIO()
    res: dict = {"tool": "hls4ml", "precision": precision}
    try:
        with contextlib.redirect_stdout(log), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            t0 = time.perf_counter()
            mw = hls4ml_prepare(model, conv)
            cfg = hls4ml.utils.config.config_from_onnx_model(mw, granularity="name", backend="Vivado",
                                                             default_precision=precision)
            hm = hls4ml.converters.convert_from_onnx_model(mw, output_dir=str(out), backend="Vivado",
                                                           io_type="io_parallel", hls_config=cfg)
            res["convert_s"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            hm.write()
            res["write_s"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            hm._compile()  # compile() = write() + _compile(): the g++ build and loading the library
            res["build_s"] = time.perf_counter() - t0
            xc = np.ascontiguousarray(x, dtype=np.float32)
            res["predict_s"], res["outputs"] = _median_time(lambda: hm.predict(xc))
    except Exception as e:  # noqa: BLE001 - a failed conversion is a result to report
        res["error"] = f"{type(e).__name__}: {str(e).strip().splitlines()[0][:160] if str(e).strip() else ''}"
    return res


# ---- vaqf ------------------------------------------------------------------------------------------

def run_vaqf(model: onnx.ModelProto, x: np.ndarray, out: Path) -> dict:
    import vaqf
    from vaqf.backend.csim import build
    from vaqf.backend.emit import read_io_file, write_io_file
    from vaqf.sim.simulator import Simulator

    res: dict = {"tool": "vaqf", "precision": "from the QONNX quantizers"}
    # how much of compile_model is the project report (plots; hls4ml writes none)
    write_report = vaqf.api._write_report
    report = {"s": 0.0}

    def timed_report(*a, **k):  # noqa: ANN002, ANN003, ANN202
        t0 = time.perf_counter()
        try:
            return write_report(*a, **k)
        finally:
            report["s"] += time.perf_counter() - t0

    vaqf.api._write_report = timed_report
    try:
        t0 = time.perf_counter()
        comp = vaqf.compile_model(model, out, force=True)
        res["convert_s"] = time.perf_counter() - t0
    finally:
        vaqf.api._write_report = write_report
    res["report_s"] = report["s"]
    res["write_s"] = 0.0  # compile_model writes the project; its time is in convert_s
    t0 = time.perf_counter()
    exe = build(comp.project)
    res["build_s"] = time.perf_counter() - t0
    graph = comp.graph
    sim = Simulator(graph)
    n = len(x)

    def csim() -> list[np.ndarray]:
        ints = sim.quantize_inputs([x])
        with tempfile.TemporaryDirectory(prefix="vaqf-bench-") as td:
            tdp = Path(td)
            write_io_file(tdp / "in.bin", ints, np.int32)
            subprocess.run([str(exe), str(comp.project / "data" / "weights.bin"), str(tdp / "in.bin"),
                            str(tdp / "out.bin"), str(n)], check=True, capture_output=True)
            return read_io_file(tdp / "out.bin", graph.outputs, n, np.int64)

    res["predict_s"], got = _median_time(csim)
    res["sim_s"], simres = _median_time(lambda: sim.run([x]))
    expected = np.asarray(simres.outputs[0], dtype=np.int64)
    got0 = np.asarray(got[0]).reshape(expected.shape)
    res["bit_exact"] = int((got0.reshape(n, -1) == expected.reshape(n, -1)).all(axis=1).sum())
    res["outputs"] = graph.outputs[0].info.dequantize(got0)
    res["sim_outputs"] = simres.dequantized[0]
    res["design_fps"] = comp.design.estimate.get("fps")
    return res


# ---- main ------------------------------------------------------------------------------------------

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--precisions", default=DEFAULT_PRECISIONS,
                    help="hls4ml default precisions to try, comma-separated")
    ap.add_argument("--inputs", type=int, default=1000)
    ap.add_argument("--work", type=Path, default=DEFAULT_WORK)
    ap.add_argument("--threads", type=int, default=1, help="BLAS (and onnxruntime) threads (default 1)")
    ap.add_argument("--models", default="mlp,cnn")
    args = ap.parse_args()
    precisions = re.findall(r"\w+<[^>]*>", args.precisions)

    print(f"# machine: {machine()}")
    print(f"# command: .venv/bin/python bench/bench_hls4ml.py {' '.join(sys.argv[1:])}".rstrip())
    x_all, y_all = digits()
    x, y = x_all[: args.inputs], y_all[: args.inputs]
    work = args.work / "hls4ml_vs_vaqf"
    work.mkdir(parents=True, exist_ok=True)

    models = {}
    for name in [m.strip() for m in args.models.split(",")]:
        if name == "mlp":
            models["MLP 64-64-32-10"] = (mlp_per_tensor(), False, x)
        elif name == "cnn":
            cnn, train_s = cnn_model(args.work, x_all, y_all)
            if train_s == train_s:  # not NaN: trained now
                print(f"# trained the CNN in {train_s:.1f} s (cached for later runs)")
            models["CNN 2xConv3x3+MaxPool, FC"] = (cnn, True, x.reshape(-1, 1, 8, 8))

    results: dict[str, list[dict]] = {}
    refs = {}
    for label, (model, conv, xin) in models.items():
        ref = qonnx_reference(model, xin)
        flt = ort_session(float_counterpart(model), 1).run(None, {"x": xin})[0]
        refs[label] = (ref, flt)
        rows = []
        for p in precisions:
            r = run_hls4ml(model, conv, xin, p, work / f"hls4ml_{label.split()[0].lower()}_{_slug(p)}")
            if "outputs" in r:
                r.update(_agreement(r.pop("outputs"), ref, flt, y))
            rows.append(r)
        v = run_vaqf(model, xin, work / f"vaqf_{label.split()[0].lower()}")
        v.update(_agreement(v.pop("outputs"), ref, flt, y))
        v["sim_agree_ref"] = _agreement(v.pop("sim_outputs"), ref, flt, y)["agree_ref"]
        rows.append(v)
        results[label] = rows

    print(f"\n## {len(x)} inputs: times (s) and agreement with the QONNX reference\n")
    out_rows = []
    for label, rows in results.items():
        for r in rows:
            if "error" in r:
                out_rows.append([label, r["tool"], r["precision"], "failed: " + r["error"]] + [""] * 8)
                continue
            pred = fmt_s(r["predict_s"])
            if r["tool"] == "vaqf":
                pred += f" (C-sim); {fmt_s(r['sim_s'])} (simulator)"
            conv = fmt_s(r["convert_s"] + r["write_s"])
            if r["tool"] == "vaqf":
                conv += f" (report {fmt_s(r['report_s'])})"
            out_rows.append([label, r["tool"], r["precision"], conv,
                             fmt_s(r["build_s"]), pred, f"{r['agree_ref']:.1%}", f"{r['agree_float']:.1%}",
                             f"{r['accuracy']:.1%}", f"{r['max_abs_err']:.3g} / {r['ref_max_abs']:.3g}",
                             f"{r['bit_exact']}/{len(x)}" if r["tool"] == "vaqf" else ""])
    print(table(["model", "tool", "precision", "convert + write", "g++ build", f"predict {len(x):,}", "argmax = ref",
                 "argmax = float", "accuracy*", "max abs err (max abs ref)", "C-sim = simulator"], out_rows))
    print("\n*accuracy on these inputs, the first digits of scikit-learn's set (most of them training data)")

    print("\n## Ratios hls4ml / vaqf (hls4ml at the first precision with 100% agreement, else its best)\n")
    ratio_rows = []
    for label, rows in results.items():
        v = rows[-1]
        ok = [r for r in rows[:-1] if "error" not in r]
        if not ok:
            ratio_rows.append([label, "hls4ml failed at every precision", "", "", "", ""])
            continue
        exact = [r for r in ok if r["agree_ref"] == 1.0]
        h = exact[0] if exact else max(ok, key=lambda r: r["agree_ref"])
        ratio_rows.append([label, h["precision"], f"{(h['convert_s'] + h['write_s']) / v['convert_s']:.2f}x",
                           f"{h['build_s'] / v['build_s']:.2f}x", f"{h['predict_s'] / v['predict_s']:.2f}x",
                           f"{h['predict_s'] / v['sim_s']:.2f}x"])
    print(table(["model", "hls4ml precision", "convert + write", "g++ build", "predict vs vaqf C-sim",
                 "predict vs vaqf simulator"], ratio_rows))

    if "mlp" in args.models:
        from vaqf.examples import example_model

        original = example_model("mlp")
        v = run_vaqf(original, x, work / "vaqf_mlp_per_channel")
        ref = qonnx_reference(original, x)
        flt = ort_session(float_counterpart(original), 1).run(None, {"x": x})[0]
        v.update(_agreement(v.pop("outputs"), ref, flt, y))
        h = run_hls4ml(original, False, x, precisions[-1], work / "hls4ml_mlp_per_channel")
        print("\n## The original example MLP (per-output-channel weight scales)\n")
        print(table(["tool", "result"], [
            ["vaqf", f"compile {fmt_s(v['convert_s'])} s, g++ {fmt_s(v['build_s'])} s, "
                     f"C-sim {fmt_s(v['predict_s'])} s, simulator {fmt_s(v['sim_s'])} s; "
                     f"argmax = ref {v['agree_ref']:.1%}, accuracy {v['accuracy']:.1%}, "
                     f"C-sim = simulator {v['bit_exact']}/{len(x)}"],
            ["hls4ml " + precisions[-1], ("failed: " + h["error"]) if "error" in h else
             f"argmax = ref {_agreement(h['outputs'], ref, flt, y)['agree_ref']:.1%}"]]))


def _slug(p: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in p).strip("_")


if __name__ == "__main__":
    main()
