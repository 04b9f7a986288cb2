"""Builders shared by the tests: small IR graphs, QONNX/QDQ MLPs and float references of them.

The float references interpret the *quantized* ONNX model in float64 with the ONNX/QONNX semantics
(round half to even, saturate), reading every scale from the model itself, so they are independent of
vaqf's integer arithmetic.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from vaqf.examples import qonnx_mlp
from vaqf.frontend.ptq import f32
from vaqf.hw.board import Board
from vaqf.ir import Graph, IntType, Node, TensorInfo, Value
from vaqf.ir.serialize import graph_to_data
from vaqf.ops import get_spec
from vaqf.ops.common import requant_params
from vaqf.ops.dense import finalize_dense_attrs

OPSET = 17
ONNX_IR_VERSION = 10  # onnxruntime reads it

# ---- hand-built IR graphs ---------------------------------------------------------------------


def add_dense(g: Graph, x: Value, weight: np.ndarray, bias: np.ndarray | None = None,
              w_type: IntType | None = None, w_scale: np.ndarray | float = 0.03125, name: str = "dense") -> Node:
    """A dense node with the attributes the importer would give it (no epilogues yet)."""
    n_out = weight.shape[0]
    attrs = {"weight": np.asarray(weight, dtype=np.int8), "w_type": w_type or IntType(8, True, narrow=True),
             "w_scale": f32(np.broadcast_to(np.asarray(w_scale, dtype=np.float64), (n_out,)).copy()),
             "bias": np.zeros(n_out, np.int64) if bias is None else np.asarray(bias, dtype=np.int64),
             "relu": False, "requant": None}
    out = g.new_value(name, TensorInfo(x.info.shape[:-1] + (n_out,), IntType(32)))
    node = g.add_node("dense", [x], [out], attrs, name=name)
    finalize_dense_attrs(node, x.info)
    out.info = get_spec("dense").infer(node, [x.info])[0]
    return node


def add_relu(g: Graph, x: Value, name: str = "relu") -> Node:
    i = x.info
    out = g.new_value(name, TensorInfo(i.shape, i.qtype, i.scale, i.zero_point))
    return g.add_node("relu", [x], [out], {}, name=name)


def add_requant(g: Graph, x: Value, out_scale: float, qtype: IntType, zero_point: int = 0,
                rounding: str = "HALF_EVEN", name: str = "requant") -> Node:
    channels = x.info.shape[-1] if x.info.per_channel else 1
    rq = requant_params(x.info.scale, float(f32(out_scale)), channels, qtype, zero_point, rounding, name)
    out = g.new_value(name, TensorInfo(x.info.shape, qtype, rq["scale"], zero_point))
    return g.add_node("requant", [x], [out], rq, name=name)


def small_graph(rng: np.random.Generator, relu_first: bool = True, out_zp: int = 0) -> Graph:
    """uint8 input -> dense -> relu -> requant(uint8) -> dense (logits); or requant before relu."""
    g = Graph("small")
    x = g.add_input("x", TensorInfo((1, 12), IntType(8, signed=False), [0.0625], 0))
    d0 = add_dense(g, x, rng.integers(-7, 8, size=(16, 12)), rng.integers(-300, 300, size=16),
                   IntType(4, True, narrow=True), rng.uniform(0.01, 0.05, size=16), name="fc0")
    cur = d0.outputs[0]
    steps = ["relu", "requant"] if relu_first else ["requant", "relu"]
    for s in steps:
        if s == "relu":
            cur = add_relu(g, cur, "act0_relu").outputs[0]
        else:
            cur = add_requant(g, cur, 0.1, IntType(8, signed=False), out_zp, name="act0_q").outputs[0]
    d1 = add_dense(g, cur, rng.integers(-127, 128, size=(5, 16)), rng.integers(-1000, 1000, size=5),
                   w_scale=rng.uniform(0.001, 0.01, size=5), name="fc1")
    g.outputs.append(d1.outputs[0])
    g.verify()
    return g


def graph_data(graph: Graph) -> tuple[dict, dict[str, np.ndarray]]:
    data, arrays = graph_to_data(graph)
    data = dict(data)
    data.pop("name")
    return data, arrays


def assert_same_graph(a: Graph, b: Graph) -> None:
    """Same structure, types, attributes and constants (graph names may differ)."""
    da, aa = graph_data(a)
    db, ab = graph_data(b)
    assert da == db
    assert sorted(aa) == sorted(ab)
    for k in aa:
        np.testing.assert_array_equal(aa[k], ab[k], err_msg=k)


def ops_of(graph: Graph) -> list[str]:
    return [n.op for n in graph.topo()]


# ---- QONNX MLP ----------------------------------------------------------------------------------

QONNX_DIMS = (16, 32, 24, 10)
QONNX_WEIGHT_QUANT = ["int4", "binary", "int4"]  # 4-bit, binary, 4-bit weights; 8-bit activations


def qonnx_model(rng: np.random.Generator) -> onnx.ModelProto:
    dims = QONNX_DIMS
    weights = [rng.normal(0, 1 / np.sqrt(dims[i]), size=(dims[i], dims[i + 1])).astype(np.float32)
               for i in range(3)]
    biases = [rng.normal(0, 0.2, size=dims[i + 1]).astype(np.float32) for i in range(3)]
    return qonnx_mlp(weights, biases, QONNX_WEIGHT_QUANT, act_bits=8, in_scale=1 / 32,
                     act_scales=[0.05, 0.02], name="qonnx_test_mlp")


def _inits(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t).astype(np.float64) for t in model.graph.initializer}


ROUND_FUNCTIONS = {  # numpy spelling of each rounding mode, for float references
    "HALF_EVEN": np.rint,  # QONNX ROUND and ONNX QuantizeLinear
    "HALF_UP": lambda x: np.sign(x) * np.floor(np.abs(x) + 0.5),
    "HALF_DOWN": lambda x: np.sign(x) * np.ceil(np.abs(x) - 0.5),
    "HALF_CEIL": lambda x: np.floor(x + 0.5),
    "CEIL": np.ceil,
    "FLOOR": np.floor,
    "UP": lambda x: np.sign(x) * np.ceil(np.abs(x)),
    "DOWN": np.trunc,
}


def boundary_distance(x: np.ndarray, rounding: str) -> np.ndarray:
    """Distance from x to the nearest point where ``rounding`` changes its result."""
    if rounding.startswith("HALF"):
        return np.abs(x - (np.floor(x) + 0.5))
    return np.abs(x - np.rint(x))


def _round_clip(x: np.ndarray, lo: int, hi: int, rounding: str = "HALF_EVEN") -> np.ndarray:
    return np.clip(ROUND_FUNCTIONS[rounding](x), lo, hi)


@dataclass
class FloatLayer:
    """One layer of a quantized MLP in float: y = quant_out(act(x @ w + b))."""

    w: np.ndarray                 # [K, N] real (already quantized) weights
    b: np.ndarray                 # [N] real bias
    relu: bool
    out_scale: float | None       # None: the output is not quantized (an accumulator)
    out_zp: int = 0
    out_lo: int = 0
    out_hi: int = 255
    rounding: str = "HALF_EVEN"

    def pre_round(self, x: np.ndarray) -> np.ndarray:
        """The real value divided by the output scale, before rounding (plus the zero point)."""
        y = x @ self.w + self.b
        if self.relu:
            y = np.maximum(y, 0)
        return y if self.out_scale is None else y / self.out_scale + self.out_zp

    def quantized(self, x: np.ndarray) -> np.ndarray:
        """Output integers (for a quantized output)."""
        assert self.out_scale is not None
        return _round_clip(self.pre_round(x), self.out_lo, self.out_hi, self.rounding)

    def real(self, q: np.ndarray) -> np.ndarray:
        return q if self.out_scale is None else (q - self.out_zp) * self.out_scale


@dataclass
class FloatMLP:
    in_scale: float
    in_zp: int
    in_lo: int
    in_hi: int
    layers: list[FloatLayer]
    hidden_names: list[str]        # vaqf value names of the quantized hidden activations
    in_rounding: str = "HALF_EVEN"

    def quantize_input(self, x: np.ndarray) -> np.ndarray:
        return _round_clip(np.asarray(x, np.float64) / self.in_scale + self.in_zp, self.in_lo, self.in_hi,
                           self.in_rounding)

    def forward(self, x: np.ndarray) -> np.ndarray:
        """End-to-end float output of the quantized model."""
        a = (self.quantize_input(x) - self.in_zp) * self.in_scale
        for layer in self.layers:
            a = layer.real(layer.quantized(a)) if layer.out_scale is not None else layer.pre_round(a)
        return a


def set_quant_attrs(model: onnx.ModelProto, changes: dict[str, dict[str, str | int]]) -> onnx.ModelProto:
    """A copy of a QONNX model with attributes (``rounding_mode``, ``narrow``) of named Quant nodes changed."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    for n in m.graph.node:
        for a in n.attribute:
            if a.name in changes.get(n.name, {}):
                value = changes[n.name][a.name]
                if isinstance(value, str):
                    a.s = value.encode()
                else:
                    a.i = int(value)
    return m


def _attr(model: onnx.ModelProto, node_name: str, attr: str):
    n = next(n for n in model.graph.node if n.name == node_name)
    return helper.get_attribute_value(next(a for a in n.attribute if a.name == attr))


def _rounding_of(model: onnx.ModelProto, node_name: str) -> str:
    mode = _attr(model, node_name, "rounding_mode").decode().upper()
    return "HALF_EVEN" if mode == "ROUND" else mode


def _top(model: onnx.ModelProto, node_name: str) -> int:
    """Largest integer of an unsigned 8-bit Quant: QONNX's narrow range drops 255."""
    return 255 - int(_attr(model, node_name, "narrow"))


def qonnx_float_mlp(model: onnx.ModelProto) -> FloatMLP:
    t = _inits(model)
    layers = []
    for i, wq in enumerate(QONNX_WEIGHT_QUANT):
        w, s = t[f"w{i}"], t[f"w{i}_scale"]
        if wq == "binary":
            wr = np.where(w >= 0, 1.0, -1.0) * s
        else:
            top = 2 ** (int(wq[3:]) - 1) - 1
            wr = _round_clip(w / s, -top, top) * s
        last = i == len(QONNX_WEIGHT_QUANT) - 1
        layers.append(FloatLayer(wr, t[f"b{i}"], relu=not last,
                                 out_scale=None if last else float(t[f"act{i}_scale"]), out_lo=0,
                                 out_hi=255 if last else _top(model, f"quant_act{i}"),
                                 rounding="HALF_EVEN" if last else _rounding_of(model, f"quant_act{i}")))
    return FloatMLP(float(t["in_scale"]), 0, 0, _top(model, "quant_in"), layers, ["act0", "act1"],
                    _rounding_of(model, "quant_in"))


# ---- QDQ MLP, built node by node --------------------------------------------------------------

QDQ_DIMS = (16, 32, 24, 10)


def _t(name: str, a: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(a, name)


def qdq_model(rng: np.random.Generator, use_gemm: bool = True) -> onnx.ModelProto:
    """A QDQ MLP 16-32-24-10 as a quantization tool would write it.

    Activations: QuantizeLinear/DequantizeLinear pairs (uint8 input with zero point 128, uint8 hidden
    activations, int8 logits with a non-zero zero point). Weights: int8 initializers with per-output-
    channel scales through DequantizeLinear (axis 1 for MatMul's [K, N], axis 0 for Gemm's transB [N, K]).
    Biases: int32 at scale in_scale * w_scale through DequantizeLinear. Layers 0 and 2 use MatMul + Add,
    layer 1 Gemm (or MatMul + Add when ``use_gemm`` is False).
    """
    d = QDQ_DIMS
    nodes: list[onnx.NodeProto] = []
    inits: list[onnx.TensorProto] = []
    in_scale, in_zp = np.float32(2.0 / 255), np.uint8(128)
    act_scales = [np.float32(0.00706), np.float32(0.00667)]  # ~1% of the hidden values saturate
    out_scale, out_zp = np.float32(0.00806), np.int8(3)
    inits += [_t("x_scale", in_scale), _t("x_zp", in_zp)]
    nodes.append(helper.make_node("QuantizeLinear", ["x", "x_scale", "x_zp"], ["x_q"], name="quant_x"))
    nodes.append(helper.make_node("DequantizeLinear", ["x_q", "x_scale", "x_zp"], ["x_dq"], name="dequant_x"))
    cur, cur_scale = "x_dq", in_scale
    for i in range(3):
        k, n = d[i], d[i + 1]
        w_real = rng.normal(0, 1 / np.sqrt(k), size=(k, n))
        w_scale = (np.abs(w_real).max(axis=0) / 127).astype(np.float32)
        w_int = np.clip(np.rint(w_real / w_scale), -127, 127).astype(np.int8)  # [K, N]
        bias_scale = (cur_scale * w_scale).astype(np.float32)
        b_int = np.rint(rng.normal(0, 0.3, size=n) / bias_scale).astype(np.int32)
        gemm = use_gemm and i == 1
        if gemm:
            inits += [_t(f"w{i}", np.ascontiguousarray(w_int.T)), _t(f"w{i}_scale", w_scale),
                      _t(f"w{i}_zp", np.zeros(n, np.int8))]
            nodes.append(helper.make_node("DequantizeLinear", [f"w{i}", f"w{i}_scale", f"w{i}_zp"], [f"w{i}_dq"],
                                          axis=0, name=f"dequant_w{i}"))
        else:
            inits += [_t(f"w{i}", w_int), _t(f"w{i}_scale", w_scale), _t(f"w{i}_zp", np.zeros(n, np.int8))]
            nodes.append(helper.make_node("DequantizeLinear", [f"w{i}", f"w{i}_scale", f"w{i}_zp"], [f"w{i}_dq"],
                                          axis=1, name=f"dequant_w{i}"))
        inits += [_t(f"b{i}", b_int), _t(f"b{i}_scale", bias_scale)]
        nodes.append(helper.make_node("DequantizeLinear", [f"b{i}", f"b{i}_scale"], [f"b{i}_dq"], axis=0,
                                      name=f"dequant_b{i}"))
        if gemm:
            nodes.append(helper.make_node("Gemm", [cur, f"w{i}_dq", f"b{i}_dq"], [f"fc{i}"], transB=1,
                                          name=f"gemm{i}"))
        else:
            nodes.append(helper.make_node("MatMul", [cur, f"w{i}_dq"], [f"mm{i}"], name=f"matmul{i}"))
            nodes.append(helper.make_node("Add", [f"mm{i}", f"b{i}_dq"], [f"fc{i}"], name=f"bias{i}"))
        if i < 2:
            nodes.append(helper.make_node("Relu", [f"fc{i}"], [f"relu{i}"], name=f"relu{i}"))
            inits += [_t(f"h{i}_scale", act_scales[i]), _t(f"h{i}_zp", np.uint8(0))]
            nodes.append(helper.make_node("QuantizeLinear", [f"relu{i}", f"h{i}_scale", f"h{i}_zp"], [f"h{i}q"],
                                          name=f"quant_h{i}"))
            nodes.append(helper.make_node("DequantizeLinear", [f"h{i}q", f"h{i}_scale", f"h{i}_zp"],
                                          [f"h{i}_dq"], name=f"dequant_h{i}"))
            cur, cur_scale = f"h{i}_dq", act_scales[i]
        else:
            inits += [_t("y_scale", out_scale), _t("y_zp", out_zp)]
            nodes.append(helper.make_node("QuantizeLinear", ["fc2", "y_scale", "y_zp"], ["yq"], name="quant_y"))
            nodes.append(helper.make_node("DequantizeLinear", ["yq", "y_scale", "y_zp"], ["y"], name="dequant_y"))
    graph = helper.make_graph(nodes, "qdq_test_mlp",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", d[0]])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", d[-1]])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="vaqf-tests")
    model.ir_version = ONNX_IR_VERSION
    onnx.checker.check_model(model)
    return model


def qdq_float_mlp(model: onnx.ModelProto) -> FloatMLP:
    t = _inits(model)
    layers = []
    for i in range(3):
        w = t[f"w{i}"] if t[f"w{i}"].shape[0] == QDQ_DIMS[i] else t[f"w{i}"].T  # Gemm stores [N, K]
        wr = w * t[f"w{i}_scale"][None, :]
        br = t[f"b{i}"] * t[f"b{i}_scale"]
        if i < 2:
            layers.append(FloatLayer(wr, br, relu=True, out_scale=float(t[f"h{i}_scale"]),
                                     out_zp=int(t[f"h{i}_zp"]), out_lo=0, out_hi=255))
        else:
            layers.append(FloatLayer(wr, br, relu=False, out_scale=float(t["y_scale"]), out_zp=int(t["y_zp"]),
                                     out_lo=-128, out_hi=127))
    return FloatMLP(float(t["x_scale"]), int(t["x_zp"]), 0, 255, layers, ["h0q", "h1q"])


# ---- other small models ---------------------------------------------------------------------------


def float_mlp_model(rng: np.random.Generator, dims: tuple[int, ...] = (8, 12, 4)) -> onnx.ModelProto:
    """A plain float ONNX MLP (Gemm + Relu), as an exporter writes it before quantization."""
    nodes, inits = [], []
    cur = "x"
    for i in range(len(dims) - 1):
        inits += [_t(f"w{i}", rng.normal(0, 0.5, size=(dims[i + 1], dims[i])).astype(np.float32)),
                  _t(f"b{i}", rng.normal(0, 0.1, size=dims[i + 1]).astype(np.float32))]
        nodes.append(helper.make_node("Gemm", [cur, f"w{i}", f"b{i}"], [f"g{i}"], transB=1, name=f"gemm{i}"))
        cur = f"g{i}"
        if i < len(dims) - 2:
            nodes.append(helper.make_node("Relu", [cur], [f"r{i}"], name=f"relu{i}"))
            cur = f"r{i}"
    nodes.append(helper.make_node("Identity", [cur], ["y"], name="out"))
    graph = helper.make_graph(nodes, "float_mlp",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", dims[0]])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", dims[-1]])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = ONNX_IR_VERSION
    return model


def with_node_after_first_layer(model: onnx.ModelProto, op_type: str, name: str, domain: str = "") -> onnx.ModelProto:
    """Insert an elementwise ``op_type`` node on the output of the first Relu of a QONNX MLP."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    for n in m.graph.node:
        if n.op_type == "Relu":
            src = n.output[0]
            new_out = f"{src}_{op_type.lower()}"
            for other in m.graph.node:
                other.input[:] = [new_out if i == src else i for i in other.input]
            idx = list(m.graph.node).index(n)
            m.graph.node.insert(idx + 1, helper.make_node(op_type, [src], [new_out], name=name, domain=domain))
            return m
    raise AssertionError("no Relu in the model")


# ---- exhaustive design enumeration (the search's oracle) -------------------------------------------

RES = ("lut", "ff", "dsp", "bram18", "uram")


def bulk_designs(graph: Graph, board: Board):
    """Every design's cycles and resources (columns RES), for spaces too large to estimate one by one, and
    a function giving design i's knobs. Designs come lane count by lane count (the search's
    ``graph_lane_choices``); within one, every unit's lane knob is that count and the first unit's other
    knobs vary slowest; each unit's options are costed with ``unit_cost`` and summed with the shell, the
    activation buffers and their sharing multiplexers of that lane count (the rule of
    ``vaqf.hw.model.estimate``; tests/dse checks a sample against it)."""
    from vaqf.dse.search import graph_lane_choices
    from vaqf.hw.memory import plan_buffers
    from vaqf.hw.model import SHELL, buffers_cost, io_cycles, unit_cost, unit_knob_space, units_of

    all_cycles, all_res, segments = [], [], []
    for lanes in graph_lane_choices(graph):
        opts = []
        for u, nodes in units_of(graph).items():
            space = unit_knob_space(nodes)
            for lane_key in ("simd", "lanes"):
                if lane_key in space:
                    space[lane_key] = [lanes]
            names = sorted(space)
            rows = []
            for c in itertools.product(*(space[k] for k in names)):
                kn = dict(zip(names, c, strict=True))
                cyc, hw, _ = unit_cost(nodes, kn, board)
                rows.append((u, kn, cyc, [getattr(hw, r) for r in RES]))
            opts.append(rows)
        buf = buffers_cost(plan_buffers(graph, lanes), graph)
        cycles = np.array([io_cycles(graph, lanes, board.axi_bits)], dtype=np.int64)
        res = np.array([[getattr(SHELL, r) + getattr(buf, r) for r in RES]], dtype=np.int64)
        for rows in opts:  # outer sums, the first unit varying slowest
            cycles = (cycles[:, None] + np.array([r[2] for r in rows])[None, :]).ravel()
            res = (res[:, None, :] + np.array([r[3] for r in rows])[None, :, :]).reshape(-1, len(RES))
        segments.append((sum(c.size for c in all_cycles), [len(r) for r in opts], opts))
        all_cycles.append(cycles)
        all_res.append(res)

    def knobs_at(i: int) -> dict[str, dict[str, int]]:
        start, sizes, opts = next(s for s in reversed(segments) if s[0] <= i)
        picks = np.unravel_index(int(i) - start, sizes)
        return {opts[u][j][0]: opts[u][j][1] for u, j in enumerate(picks)}

    return np.concatenate(all_cycles), np.concatenate(all_res), knobs_at


def assert_equals_reference(project, res, seed: int = 0) -> None:
    """The C++ outputs of a C-simulation run (``res``, on ``run_csim``'s random inputs of ``seed``) equal every
    op's readable reference run node by node (the simulator without its fast paths), not only the simulator."""
    from vaqf.backend.emit import random_int_inputs
    from vaqf.ir.serialize import load_graph
    from vaqf.sim.simulator import Simulator

    graph = load_graph(project)
    ints = random_int_inputs(graph, res.inputs, seed)
    want = Simulator(graph, fast=False).run_int(ints).outputs
    for got, ref in zip(res.outputs, want, strict=True):
        np.testing.assert_array_equal(np.asarray(got).reshape(ref.shape), ref)


def assert_cycles_match(project, tol: float = 0.03, inputs: int = 1):
    """Run the project's C-simulation with cycle counters and check every layer's counted cycles, and the
    frame's, against the estimate in design.json within ``tol``; return the run's CsimResult (bit-exact)."""
    from vaqf.backend.csim import run_csim

    res = run_csim(project, count=inputs, cycles=True)
    assert res.bit_exact == res.inputs, f"{res.mismatched_values} values differ from the simulator"
    assert_equals_reference(project, res)
    bad = [c.to_json() for c in res.cycles if abs(c.measured - c.estimated) > tol * max(c.estimated, 1)]
    assert not bad, f"layers whose counted cycles miss the estimate by more than {tol:.0%}: {bad}"
    m, e = res.total_cycles()
    assert abs(m - e) <= tol * e, (m, e)
    return res


QONNX_DOMAIN = "qonnx.custom_op.general"


def relu_chain(n: int) -> onnx.ModelProto:
    """Quant, then ``n`` Relu nodes in a row."""
    inits = [numpy_helper.from_array(np.array(v, np.float32), k) for k, v in (("s", 0.05), ("z", 0.0), ("b", 8.0))]
    nodes = [helper.make_node("Quant", ["x", "s", "z", "b"], ["t0"], domain=QONNX_DOMAIN, signed=1, narrow=0,
                              rounding_mode="ROUND", name="q")]
    nodes += [helper.make_node("Relu", [f"t{i}"], [f"t{i + 1}"], name=f"r{i}") for i in range(n)]
    g = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16])],
                          [helper.make_tensor_value_info(f"t{n}", TensorProto.FLOAT, [1, 16])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(QONNX_DOMAIN, 1)])
