"""Lift decomposed subgraphs of an ONNX model into single ops vaqf compiles directly.

Exporters spell GELU as Erf or Tanh arithmetic and LayerNorm as ReduceMean/Sub/Pow/Sqrt/Div chains.
A candidate region is found from an anchor node (Erf, Tanh, ReduceMean), then *verified numerically*:
the region is evaluated with ONNX's reference implementation on test values and replaced only if it
matches the op it claims to be. Nothing is rewritten on a structural guess alone.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import onnx
from onnx import helper, numpy_helper

log = logging.getLogger(__name__)

LIFTED_DOMAIN = "vaqf.lifted"
MAX_REGION = 12


class _Consts(dict):
    """Constant tensors by name; initializers are decoded only when looked up."""

    def __init__(self, model: onnx.ModelProto) -> None:
        super().__init__()
        self._inits = {t.name: t for t in model.graph.initializer}

    def __contains__(self, name: object) -> bool:
        return dict.__contains__(self, name) or name in self._inits

    def __getitem__(self, name: str) -> np.ndarray:
        if not dict.__contains__(self, name):
            self[name] = numpy_helper.to_array(self._inits[name])
        return dict.__getitem__(self, name)


def _const_map(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    consts = _Consts(model)
    for n in model.graph.node:
        if n.op_type == "Constant" and n.output:
            for a in n.attribute:
                if a.name == "value":
                    consts[n.output[0]] = numpy_helper.to_array(a.t)
                elif a.name == "value_float":
                    consts[n.output[0]] = np.asarray(a.f, dtype=np.float32)
    return consts


def _producers(model: onnx.ModelProto) -> dict[str, onnx.NodeProto]:
    return {o: n for n in model.graph.node for o in n.output}


def _consumers(model: onnx.ModelProto) -> dict[str, list[onnx.NodeProto]]:
    out: dict[str, list[onnx.NodeProto]] = {}
    for n in model.graph.node:
        for i in n.input:
            out.setdefault(i, []).append(n)
    return out


def _region(model: onnx.ModelProto, x: str, y: str, consts: dict[str, np.ndarray],
            prod: dict[str, onnx.NodeProto] | None = None,
            order: dict[int, int] | None = None) -> list[onnx.NodeProto] | None:
    """Nodes computing ``y`` from ``x`` and constants only (None if anything else feeds in). ``prod`` and
    ``order`` (the producer map and node positions) are the caller's, so a scan of many anchors stays linear."""
    prod = _producers(model) if prod is None else prod
    seen: dict[int, onnx.NodeProto] = {}
    stack = [y]
    while stack:
        t = stack.pop()
        if t == x or t in consts:
            continue
        n = prod.get(t)
        if n is None or n.op_type == "Constant":
            if n is None:
                return None
            continue
        if id(n) in seen:
            continue
        seen[id(n)] = n
        if len(seen) > MAX_REGION:
            return None
        stack.extend(i for i in n.input if i)
    if order is None:
        order = {id(n): i for i, n in enumerate(model.graph.node)}
    return sorted(seen.values(), key=lambda n: order[id(n)])


def _evaluate(model: onnx.ModelProto, nodes: list[onnx.NodeProto], x: str, y: str, consts: dict[str, np.ndarray],
              value: np.ndarray) -> np.ndarray | None:
    from onnx.reference import ReferenceEvaluator

    needed = {i for n in nodes for i in n.input if i and i != x and i in consts}
    inits = [numpy_helper.from_array(np.asarray(consts[c]), c) for c in sorted(needed)]
    g = helper.make_graph(list(nodes), "region", [helper.make_tensor_value_info(x, onnx.TensorProto.FLOAT, None)],
                          [helper.make_empty_tensor_value_info(y)], inits)
    m = helper.make_model(g, opset_imports=[o for o in model.opset_import if o.domain in ("", "ai.onnx")])
    m.ir_version = model.ir_version
    try:
        return np.asarray(ReferenceEvaluator(m).run(None, {x: value})[0], dtype=np.float64)
    except Exception:
        return None


def _closed(nodes: list[onnx.NodeProto], y: str, consumers: dict[str, list[onnx.NodeProto]],
            graph_outputs: set[str]) -> bool:
    """No intermediate result of the region is used outside it."""
    ids = {id(n) for n in nodes}
    for n in nodes:
        for o in n.output:
            if o == y:
                continue
            if o in graph_outputs or any(id(c) not in ids for c in consumers.get(o, [])):
                return False
    return True


def _replace(model: onnx.ModelProto, nodes: list[onnx.NodeProto], new: onnx.NodeProto) -> None:
    ids = {id(n) for n in nodes}
    kept = [n for n in model.graph.node if id(n) not in ids]
    pos = min(i for i, n in enumerate(model.graph.node) if id(n) in ids)
    before = [n for n in list(model.graph.node)[:pos] if id(n) not in ids]
    after = [n for n in kept if n not in before]
    del model.graph.node[:]
    model.graph.node.extend(before + [new] + after)


def _gelu_ref(v: np.ndarray, approx: str) -> np.ndarray:
    if approx == "tanh":
        return 0.5 * v * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (v + 0.044715 * v**3)))
    return 0.5 * v * (1.0 + np.vectorize(math.erf)(v / math.sqrt(2.0)))


def lift_gelu(model: onnx.ModelProto) -> int:
    """Erf- or Tanh-based GELU arithmetic to one ``Gelu`` node (domain vaqf.lifted)."""
    count = 0
    test = np.linspace(-6, 6, 97).astype(np.float32)
    for anchor_op, approx in (("Erf", "none"), ("Tanh", "tanh")):
        while True:
            consts = _const_map(model)
            cons = _consumers(model)
            prod = _producers(model)
            outs = {o.name for o in model.graph.output}
            order = {id(n): i for i, n in enumerate(model.graph.node)}
            done = False
            for anchor in [n for n in model.graph.node if n.op_type == anchor_op]:
                # x: the non-constant input reached by walking up from the anchor through arithmetic
                # candidate x: every tensor met walking up from the anchor through arithmetic (nearest first)
                cands_x: list[str] = []
                stack = [anchor.input[0]]
                while stack and len(cands_x) < 8:
                    t = stack.pop(0)
                    if t in consts or t in cands_x:
                        continue
                    cands_x.append(t)
                    p = prod.get(t)
                    if p is not None and p.op_type in ("Mul", "Div", "Add", "Pow"):
                        stack.extend(i for i in p.input if i not in consts)
                for x in cands_x:
                    frontier, seen_y = [anchor.output[0]], []
                    for _ in range(5):
                        nxt = []
                        for t in frontier:
                            for c in cons.get(t, []):
                                if c.op_type in ("Mul", "Add", "Div"):
                                    seen_y.append(c.output[0])
                                    nxt.append(c.output[0])
                        frontier = nxt
                    for y in seen_y:
                        nodes = _region(model, x, y, consts, prod, order)
                        if not nodes or not _closed(nodes, y, cons, outs):
                            continue
                        got = _evaluate(model, nodes, x, y, consts, test)
                        if got is None or got.shape != test.shape:
                            continue
                        if np.allclose(got, _gelu_ref(test.astype(np.float64), approx), atol=1e-4, rtol=1e-4):
                            _replace(model, nodes, helper.make_node("Gelu", [x], [y], domain=LIFTED_DOMAIN,
                                                                    approximate=approx, name=f"gelu_{y}"))
                            count += 1
                            done = True
                            break
                    if done:
                        break
                if done:
                    break
            if not done:
                break
    if count:
        log.info("lifted %d GELU subgraphs", count)
    return count


def fold_batchnorm(model: onnx.ModelProto) -> int:
    """Conv(W, b) -> BatchNormalization(gamma, beta, mean, var, eps) with constant float weights and
    statistics becomes one Conv with W' = W * gamma / sqrt(var + eps) per output channel and
    b' = (b - mean) * gamma / sqrt(var + eps) + beta."""
    inits = {t.name: t for t in model.graph.initializer}
    for n in model.graph.node:  # exporters share equal tensors through Identity nodes
        if n.op_type == "Identity" and n.input and n.input[0] in inits:
            inits[n.output[0]] = inits[n.input[0]]
    cons = _consumers(model)
    prod = _producers(model)
    count = 0
    for bn in [n for n in model.graph.node if n.op_type == "BatchNormalization"]:
        conv = prod.get(bn.input[0])
        if conv is None or conv.op_type != "Conv" or len(cons.get(conv.output[0], [])) != 1:
            continue
        conv_bias = [conv.input[2]] if len(conv.input) > 2 and conv.input[2] else []
        names = [conv.input[1]] + list(bn.input[1:5]) + conv_bias
        if not all(n in inits for n in names) or len(bn.output) != 1:
            continue
        w = numpy_helper.to_array(inits[conv.input[1]]).astype(np.float64)
        if w.dtype.kind != "f" and numpy_helper.to_array(inits[conv.input[1]]).dtype.kind != "f":
            continue
        gamma, beta, mean, var = (numpy_helper.to_array(inits[n]).astype(np.float64) for n in bn.input[1:5])
        eps = next((a.f for a in bn.attribute if a.name == "epsilon"), 1e-5)
        b = numpy_helper.to_array(inits[conv.input[2]]).astype(np.float64) if len(names) == 6 else np.zeros(w.shape[0])
        k = gamma / np.sqrt(var + eps)
        w_new = (w * k.reshape(-1, *([1] * (w.ndim - 1)))).astype(np.float32)
        b_new = ((b - mean) * k + beta).astype(np.float32)
        wn, bname = f"{conv.input[1]}__bnfold", f"{bn.output[0]}__bias"
        model.graph.initializer.extend([numpy_helper.from_array(w_new, wn), numpy_helper.from_array(b_new, bname)])
        conv.input[1] = wn
        if len(conv.input) > 2:
            conv.input[2] = bname
        else:
            conv.input.append(bname)
        conv.output[0] = bn.output[0]
        model.graph.node.remove(bn)
        count += 1
    if count:
        log.info("folded %d BatchNormalization nodes into convolutions", count)
    return count


def lift_patterns(model: onnx.ModelProto) -> onnx.ModelProto:
    m = onnx.ModelProto()
    m.CopyFrom(model)
    fold_batchnorm(m)
    lift_gelu(m)
    return m
