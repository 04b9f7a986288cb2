"""QONNX and QDQ MLPs: import, simulator vs a float reference, onnxruntime, C-simulation, external data."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from tests.helpers import (
    QDQ_DIMS,
    FloatMLP,
    assert_same_graph,
    boundary_distance,
    qdq_float_mlp,
    qdq_model,
    qonnx_float_mlp,
    qonnx_model,
    set_quant_attrs,
)
from vaqf.api import CompileResult, compile_model, load_model, simulate
from vaqf.backend.csim import run_csim
from vaqf.backend.emit import random_int_inputs
from vaqf.errors import ModelError
from vaqf.frontend.onnx_import import import_onnx
from vaqf.ir import BinaryType, Graph, IntType
from vaqf.sim.simulator import Simulator

N_INPUTS = 500


@dataclass
class Case:
    name: str
    model: onnx.ModelProto
    ref: FloatMLP
    graph: Graph
    x: np.ndarray  # float inputs, a little beyond the input range so saturation is exercised


def _make_case(name: str) -> Case:
    rng = np.random.default_rng(sum(map(ord, name)))
    if name.startswith("qonnx"):
        model = qonnx_model(rng)
        if name == "qonnx_modes":  # non-default rounding on the input and both hidden quantizers; narrow ranges
            model = set_quant_attrs(model, {"quant_in": {"rounding_mode": "HALF_UP", "narrow": 1},
                                            "quant_act0": {"rounding_mode": "FLOOR"},
                                            "quant_act1": {"rounding_mode": "HALF_DOWN", "narrow": 1}})
        ref = qonnx_float_mlp(model)
        x = rng.uniform(-0.5, 8.5, size=(N_INPUTS, 16))
        x[:40] = np.round(x[:40] * 64) / 64  # exact ties of the 1/32 input step
    else:
        model = qdq_model(rng)
        ref = qdq_float_mlp(model)
        x = rng.uniform(-1.1, 1.1, size=(N_INPUTS, QDQ_DIMS[0]))
    return Case(name, model, ref, load_model(model), x.astype(np.float32))


CASE_NAMES = ["qonnx", "qonnx_modes", "qdq"]
_CASES: dict[str, Case] = {}


@pytest.fixture(scope="module", params=CASE_NAMES)
def case(request: pytest.FixtureRequest) -> Case:
    if request.param not in _CASES:
        _CASES[request.param] = _make_case(request.param)
    return _CASES[request.param]


# ---- what the importer builds ---------------------------------------------------------------


def test_qonnx_import_types() -> None:
    c = _make_case("qonnx")
    g = c.graph
    assert g.metadata["format"] == "qonnx"
    assert [n.op for n in g.topo()] == ["dense", "dense", "dense"]
    (x,) = g.inputs
    assert x.info.qtype == IntType(8, signed=False) and x.info.zero_point == 0
    assert float(x.info.scale[0]) == 1 / 32
    fc0, fc1, fc2 = g.topo()
    assert fc0.attrs["w_type"] == IntType(4, True, narrow=True) or fc0.attrs["w_type"].bits <= 4
    assert isinstance(fc1.attrs["w_type"], BinaryType)
    assert fc2.attrs["w_type"].bits <= 4
    assert np.abs(fc0.attrs["weight"]).max() <= 7 and set(np.unique(fc1.attrs["weight"])) <= {-1, 1}
    for fc, scale in ((fc0, 0.05), (fc1, 0.02)):
        assert fc.attrs["relu"] and fc.attrs["requant"] is not None
        info = fc.outputs[0].info
        assert info.qtype == IntType(8, signed=False) and float(info.scale[0]) == np.float32(scale)
    assert not fc2.attrs["relu"] and fc2.attrs["requant"] is None
    assert g.outputs[0].info.per_channel  # the logits are an accumulator with per-channel scale


def test_qonnx_without_its_domain_import_imports_the_same() -> None:
    """A QONNX file whose custom-op domain has no opset import (as some tools write them) is accepted, as
    qonnx accepts it, into the same graph; the caller's model is left as it was."""
    model = qonnx_model(np.random.default_rng(sum(map(ord, "qonnx"))))
    bare = onnx.ModelProto()
    bare.CopyFrom(model)
    kept = [o for o in bare.opset_import if o.domain == ""]
    del bare.opset_import[:]
    bare.opset_import.extend(kept)
    assert {n.domain for n in bare.graph.node} - {o.domain for o in bare.opset_import} - {""}
    assert_same_graph(import_onnx(bare), import_onnx(model))
    assert [o.domain for o in bare.opset_import] == [""]


def test_qonnx_narrow_unsigned_quantizers_stop_at_254() -> None:
    """QONNX narrow=1 with signed=0 drops the top code: the input and act1 saturate at 254, act0 at 255."""
    g = _make_case("qonnx_modes").graph
    assert g.inputs[0].info.qtype == IntType(8, signed=False, narrow=True)
    fc0, fc1, _ = g.topo()
    assert fc0.outputs[0].info.qtype == IntType(8, signed=False)
    assert fc1.outputs[0].info.qtype == IntType(8, signed=False, narrow=True)
    assert g.metadata["input_rounding"]["x"] == "HALF_UP"
    sim = Simulator(g)
    np.testing.assert_array_equal(sim.quantize_inputs([np.full((1, 16), 1e3, np.float32)])[0], 254)
    big = sim.run_int([np.full((1, 16), 254)], trace=True).trace  # drives every hidden unit high
    assert big["act1"].max() <= 254


def test_qdq_import_types() -> None:
    g = _make_case("qdq").graph
    assert g.metadata["format"] == "qdq"
    assert [n.op for n in g.topo()] == ["dense", "dense", "dense"]
    (x,) = g.inputs
    assert x.info.qtype == IntType(8, signed=False) and x.info.zero_point == 128
    fcs = list(g.topo())
    for fc in fcs:
        wt = fc.attrs["w_type"]
        assert isinstance(wt, IntType) and wt.signed and wt.bits <= 8
        assert fc.attrs["w_scale"].shape == (fc.attrs["weight"].shape[0],)  # per output channel
    assert fcs[0].attrs["zp_in"] == 128
    assert [fc.outputs[0].info.qtype for fc in fcs] == [IntType(8, False), IntType(8, False), IntType(8, True)]
    assert g.outputs[0].info.zero_point == 3


def test_qdq_gemm_and_matmul_spellings_import_the_same_graph() -> None:
    a = import_onnx(qdq_model(np.random.default_rng(5), use_gemm=True))
    b = import_onnx(qdq_model(np.random.default_rng(5), use_gemm=False))
    assert [n.op for n in a.topo()] == [n.op for n in b.topo()]
    for na, nb in zip(a.topo(), b.topo(), strict=True):
        if na.op != "dense":
            continue
        np.testing.assert_array_equal(na.attrs["weight"], nb.attrs["weight"])
        np.testing.assert_array_equal(na.attrs["bias"], nb.attrs["bias"])
        np.testing.assert_array_equal(na.attrs["w_scale"], nb.attrs["w_scale"])


# ---- simulator vs the float reference of the quantized model --------------------------------


def test_simulator_matches_float_reference(case: Case) -> None:
    """Each layer, fed the simulator's own input to that layer, is within one quantization step of the
    float64 reference; where they differ the exact value lies on a rounding boundary up to the error the
    integer pipeline may make (bias rounded to the accumulator scale: half an accumulator step; the
    24-bit dyadic multiplier: 2**-24 relative)."""
    g, ref, x = case.graph, case.ref, case.x
    n = len(x)
    sim = Simulator(g)
    res = sim.run([x], trace=True)
    xq = sim.quantize_inputs([x])[0].reshape(n, -1)
    np.testing.assert_array_equal(xq, ref.quantize_input(x))
    assert xq.max() == ref.in_hi and xq.min() == ref.in_lo
    prev = (xq - ref.in_zp) * ref.in_scale
    denses = list(g.topo())
    names = ref.hidden_names + [g.outputs[0].name]
    assert [d.outputs[0].name for d in denses] == names
    mismatches, budget = 0, 0.0
    for node, name, layer in zip(denses, names, ref.layers, strict=True):
        got = res.trace[name].reshape(n, -1)
        acc_step = node.inputs[0].info.scale[0] * node.attrs["w_scale"]
        pre = layer.pre_round(prev)
        if layer.out_scale is not None:
            want = layer.quantized(prev)
            diff = got - want
            assert np.abs(diff).max() <= 1, name
            eps = 0.5 * acc_step / layer.out_scale + 2.0**-22 * (np.abs(pre) + 1)
            near = boundary_distance(pre, layer.rounding) <= eps
            assert np.all(near[diff != 0]), f"{name}: differs away from a rounding boundary"
            mismatches += int(np.count_nonzero(diff))
            # values within eps of a boundary, if fractional parts are spread evenly: 2 * eps of them
            budget += float(np.sum(np.minimum(1.0, 2 * np.broadcast_to(eps, pre.shape))))
            assert got.min() >= layer.out_lo and got.max() <= layer.out_hi
            assert np.any(got == layer.out_hi) and np.any(got == layer.out_lo)  # saturation is exercised
            prev = layer.real(got)
        else:  # accumulator output: only the bias rounding separates it from the float value
            real = g.outputs[0].info.dequantize(got)
            assert np.all(np.abs(real - pre) <= 0.5 * acc_step * (1 + 1e-9) + 1e-12), name
    assert mismatches <= 2 * budget + 20, (mismatches, budget)
    # and end to end, the dequantized outputs are the real values of the output integers
    np.testing.assert_array_equal(res.dequantized[0], g.outputs[0].info.dequantize(res.outputs[0]))
    assert res.outputs[0].shape == (n, ref.layers[-1].w.shape[1])


def test_api_simulate_equals_simulator(case: Case) -> None:
    res = simulate(case.model, case.x[:50])
    want = Simulator(case.graph).run([case.x[:50]])
    np.testing.assert_array_equal(res.outputs[0], want.outputs[0])


def test_onnxruntime_agrees_with_qdq(tmp_path: Path) -> None:
    c = _make_case("qdq")
    model = onnx.ModelProto()
    model.CopyFrom(c.model)
    for name in c.ref.hidden_names + ["yq"]:  # expose the integer tensors as well
        model.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
    assert model.ir_version <= 10
    path = tmp_path / "qdq.onnx"
    onnx.save(model, str(path))
    # the graph as ONNX defines it: onnxruntime 1.32's fused QDQ kernels (graph optimizations on) give
    # hidden activations up to 108 steps off the operators' definition on this model
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    y, h0, h1, yq = sess.run(None, {"x": c.x})
    res = Simulator(c.graph).run([c.x], trace=True)
    n = len(c.x)
    step = c.ref.layers[-1].out_scale
    # dequantized outputs within one output quantization step (float32 rounding of ORT's DequantizeLinear
    # is far below a step)
    assert np.abs(res.dequantized[0] - y).max() <= step * (1 + 1e-6)
    # the same statement on integers: ORT's int8 output against vaqf's
    assert np.abs(res.outputs[0] - yq.astype(np.int64)).max() <= 1
    for name, h in zip(c.ref.hidden_names, (h0, h1), strict=True):
        assert np.abs(res.trace[name].reshape(n, -1) - h.astype(np.int64)).max() <= 1
    # ORT rounds float32 sums, vaqf is exact: they may only part ways where a value lies within float32
    # error of a rounding boundary, which is rare (none at all on the machines this was written on)
    assert np.count_nonzero(res.outputs[0] != yq) <= 0.01 * yq.size


# ---- C-simulation ---------------------------------------------------------------------------

_PROJECTS: dict[str, CompileResult] = {}


@pytest.fixture(scope="module")
def project(case: Case, tmp_path_factory: pytest.TempPathFactory) -> CompileResult:
    if case.name not in _PROJECTS:
        out = tmp_path_factory.mktemp(f"proj_{case.name}") / "project"
        _PROJECTS[case.name] = compile_model(case.model, out, board="zcu102")
    return _PROJECTS[case.name]


def test_compiled_project_layout(project: CompileResult) -> None:
    p = project.project
    for rel in ("src/vaqf_top.cpp", "src/vaqf_top.h", "src/vaqf/dense.h", "tb/testbench.cpp", "data/weights.bin",
                "graph.json", "graph.npz", "design.json", "scripts/build_vivado_hls.tcl", ".vaqf-project"):
        assert (p / rel).is_file(), rel
    assert (p / "data" / "weights.bin").stat().st_size % 16 == 0  # whole 128-bit words


@pytest.mark.cxx
def test_csim_bit_exact_on_random_integers(case: Case, project: CompileResult) -> None:
    res = run_csim(project.project, count=200, seed=11)
    assert res.inputs == 200
    assert res.bit_exact == res.inputs
    assert res.mismatched_values == 0
    # the project's saved graph is the compiled graph: compare with a simulation of the in-memory one
    ints = random_int_inputs(project.graph, 200, seed=11)
    want = Simulator(project.graph).run_int(ints).outputs
    np.testing.assert_array_equal(res.outputs[0].reshape(200, -1), np.asarray(want[0]).reshape(200, -1))


@pytest.mark.cxx
def test_csim_bit_exact_on_real_inputs(case: Case, project: CompileResult) -> None:
    ints = Simulator(project.graph).quantize_inputs([case.x[:250]])
    res = run_csim(project.project, ints, graph=project.graph)
    assert res.inputs == 250 and res.bit_exact == 250


# ---- external data --------------------------------------------------------------------------


def _save_external(model: onnx.ModelProto, folder: Path, location: str = "weights.bin") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    m = onnx.ModelProto()
    m.CopyFrom(model)
    path = folder / "model.onnx"
    onnx.save_model(m, str(path), save_as_external_data=True, all_tensors_to_one_file=True, location=location,
                    size_threshold=0)
    return path


@pytest.mark.parametrize("name", ["qonnx", "qdq"])
def test_external_data_imports_identically(name: str, tmp_path: Path) -> None:
    c = _make_case(name)
    path = _save_external(c.model, tmp_path / "ext")
    assert (tmp_path / "ext" / "weights.bin").stat().st_size > 0
    raw = onnx.load(str(path), load_external_data=False)
    assert all(t.data_location == onnx.TensorProto.EXTERNAL for t in raw.graph.initializer)
    plain = tmp_path / "plain" / "model.onnx"
    plain.parent.mkdir()
    onnx.save(c.model, str(plain))
    a, b = load_model(plain), load_model(path)
    assert_same_graph(a, b)
    ints = random_int_inputs(a, 100, seed=4)
    np.testing.assert_array_equal(Simulator(a).run_int(ints).outputs[0], Simulator(b).run_int(ints).outputs[0])


def _point_external_data_at(path: Path, location: str) -> None:
    m = onnx.load(str(path), load_external_data=False)
    for t in m.graph.initializer:
        for e in t.external_data:
            if e.key == "location":
                e.value = location
    path.write_bytes(m.SerializeToString())


def test_external_data_outside_the_model_folder_is_refused(tmp_path: Path) -> None:
    c = _make_case("qdq")
    path = _save_external(c.model, tmp_path / "ext")
    secret = tmp_path / "secret.bin"
    secret.write_bytes((tmp_path / "ext" / "weights.bin").read_bytes())  # readable, valid data
    _point_external_data_at(path, "../secret.bin")
    with pytest.raises(ModelError, match="outside") as e:
        load_model(path)
    assert "../secret.bin" in str(e.value)
    _point_external_data_at(path, str(secret))  # absolute
    with pytest.raises(ModelError, match="outside"):
        load_model(path)
    _point_external_data_at(path, "sub/../../secret.bin")
    with pytest.raises(ModelError, match="outside"):
        load_model(path)


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="needs symlinks")
def test_external_data_symlink_escaping_the_folder_is_refused(tmp_path: Path) -> None:
    c = _make_case("qdq")
    path = _save_external(c.model, tmp_path / "ext")
    secret = tmp_path / "secret.bin"
    (tmp_path / "ext" / "weights.bin").rename(secret)
    (tmp_path / "ext" / "weights.bin").symlink_to(secret)
    with pytest.raises(ModelError, match="outside"):
        load_model(path)


def test_missing_external_data_file(tmp_path: Path) -> None:
    path = _save_external(_make_case("qdq").model, tmp_path / "ext")
    (tmp_path / "ext" / "weights.bin").unlink()
    with pytest.raises(ModelError, match="missing"):
        load_model(path)
