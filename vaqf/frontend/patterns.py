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


def _bn_affine(bn: onnx.NodeProto, consts: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray] | None:
    """A BatchNormalization in inference form with constant float parameters as y = a * x + b per channel."""
    if len(bn.input) < 5 or len(bn.output) != 1 or not all(i in consts for i in bn.input[1:5]):
        return None
    if any(a.name == "training_mode" and a.i for a in bn.attribute):
        return None
    gamma, beta, mean, var = (np.asarray(consts[i], dtype=np.float64).reshape(-1) for i in bn.input[1:5])
    eps = next((a.f for a in bn.attribute if a.name == "epsilon"), 1e-5)
    k = gamma / np.sqrt(var + eps)
    b = beta - mean * k
    if not (np.all(np.isfinite(k)) and np.all(np.isfinite(b))):
        return None
    return k, b


def _float_const(consts: dict[str, np.ndarray], name: str) -> np.ndarray | None:
    return np.asarray(consts[name], dtype=np.float64) if name in consts and \
        np.asarray(consts[name]).dtype.kind == "f" else None


def fold_batchnorm_forward(model: onnx.ModelProto) -> int:
    """A BatchNormalization no convolution precedes (after a Relu, on the input: Keras puts them there),
    with constant statistics, rewritten exactly where it costs nothing: on a graph input, as a per-channel
    ``Mul`` and ``Add`` (the host applies them before the input quantizer); read only by a ``Gemm``/``MatMul``
    with a float constant weight (rank-2 input) or an unpadded ungrouped ``Conv`` with float weights, folded
    into that layer: W' = W * a along its input channels, and the shift W . b added to its bias. Others are
    left for the importer to refuse by name."""
    consts = _const_map(model)
    inputs = {i.name for i in model.graph.input}
    count = 0
    for bn in [n for n in model.graph.node if n.op_type == "BatchNormalization"]:
        ab = _bn_affine(bn, consts)
        if ab is None:
            continue
        k, b = ab
        cons = _consumers(model).get(bn.output[0], [])
        outputs = {o.name for o in model.graph.output}
        nodes = list(model.graph.node)
        at = nodes.index(bn)
        if bn.input[0] in inputs:
            rank = next((len(i.type.tensor_type.shape.dim) for i in model.graph.input if i.name == bn.input[0]), 0)
            if rank < 2:
                continue
            shape = (1, k.size) + (1,) * (rank - 2)
            kn, bname = f"{bn.output[0]}__scale", f"{bn.output[0]}__shift"
            model.graph.initializer.extend([numpy_helper.from_array(k.reshape(shape).astype(np.float32), kn),
                                            numpy_helper.from_array(b.reshape(shape).astype(np.float32), bname)])
            mul = helper.make_node("Mul", [bn.input[0], kn], [f"{bn.output[0]}__scaled"], name=f"{bn.name}_mul")
            add = helper.make_node("Add", [mul.output[0], bname], [bn.output[0]], name=f"{bn.name}_add")
            model.graph.node.remove(bn)
            model.graph.node.insert(at, add)
            model.graph.node.insert(at, mul)
            count += 1
            continue
        if len(cons) != 1 or bn.output[0] in outputs:
            continue
        nxt = cons[0]
        if not _fold_into_next(model, bn, nxt, k, b, consts):
            continue
        nxt_inputs = list(nxt.input)
        nxt_inputs[0] = bn.input[0]
        del nxt.input[:]
        nxt.input.extend(nxt_inputs)
        model.graph.node.remove(bn)
        count += 1
    if count:
        log.info("folded %d BatchNormalization nodes into the layers after them or the input", count)
    return count


def _fold_into_next(model: onnx.ModelProto, bn: onnx.NodeProto, nxt: onnx.NodeProto, k: np.ndarray,
                    b: np.ndarray, consts: dict[str, np.ndarray]) -> bool:
    """Fold y = k * x + b (per channel: axis 1) into ``nxt``, which reads y as its first input; new constants
    are added to the model. False when ``nxt`` is not a layer this applies to (nothing changed)."""
    attrs = {a.name: helper.get_attribute_value(a) for a in nxt.attribute}
    if nxt.input[0] != bn.output[0] or len(nxt.input) < 2:
        return False
    w = _float_const(consts, nxt.input[1])
    if w is None:
        return False
    tag = f"{bn.output[0]}__into_{nxt.output[0]}"
    if nxt.op_type in ("Gemm", "MatMul"):
        if w.ndim != 2 or attrs.get("transA", 0) or w.shape[1 if attrs.get("transB", 0) else 0] != k.size:
            return False
        wkm = w.T if attrs.get("transB", 0) else w  # [K, M]
        alpha = float(attrs.get("alpha", 1.0)) if nxt.op_type == "Gemm" else 1.0
        shift = alpha * (b @ wkm)
        w_new = (wkm * k[:, None]).T if attrs.get("transB", 0) else wkm * k[:, None]
        model.graph.initializer.append(numpy_helper.from_array(w_new.astype(np.float32), f"{tag}__w"))
        nxt.input[1] = f"{tag}__w"
        if nxt.op_type == "Gemm":
            beta = float(attrs.get("beta", 1.0))
            c = _float_const(consts, nxt.input[2]) if len(nxt.input) > 2 and nxt.input[2] else None
            if len(nxt.input) > 2 and nxt.input[2] and c is None:
                return False
            c_new = (np.zeros(shift.shape) if c is None else np.broadcast_to(c, shift.shape) * beta) + shift
            model.graph.initializer.append(numpy_helper.from_array(c_new.astype(np.float32), f"{tag}__c"))
            if len(nxt.input) > 2:
                nxt.input[2] = f"{tag}__c"
            else:
                nxt.input.append(f"{tag}__c")
            for a in nxt.attribute:
                if a.name == "beta":
                    a.f = 1.0
            return True
        # MatMul: the shift as an Add after it, the MatMul's output renamed
        out = nxt.output[0]
        nxt.output[0] = f"{tag}__mm"
        model.graph.initializer.append(numpy_helper.from_array(shift.astype(np.float32), f"{tag}__c"))
        nodes = list(model.graph.node)
        model.graph.node.insert(nodes.index(nxt) + 1,
                                helper.make_node("Add", [nxt.output[0], f"{tag}__c"], [out], name=f"{tag}_add"))
        return True
    if nxt.op_type == "Conv":
        if any(int(p) for p in attrs.get("pads", [])) or int(attrs.get("group", 1)) != 1 or w.ndim < 3 \
                or w.shape[1] != k.size or attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
            return False  # padding reads zeros where the shift is not: no exact fold
        bias = _float_const(consts, nxt.input[2]) if len(nxt.input) > 2 and nxt.input[2] else np.zeros(w.shape[0])
        if bias is None:
            return False
        shift = (w * b.reshape((1, -1) + (1,) * (w.ndim - 2))).reshape(w.shape[0], -1).sum(axis=1)
        w_new = w * k.reshape((1, -1) + (1,) * (w.ndim - 2))
        model.graph.initializer.extend([numpy_helper.from_array(w_new.astype(np.float32), f"{tag}__w"),
                                        numpy_helper.from_array((bias + shift).astype(np.float32), f"{tag}__b")])
        nxt.input[1] = f"{tag}__w"
        if len(nxt.input) > 2:
            nxt.input[2] = f"{tag}__b"
        else:
            nxt.input.append(f"{tag}__b")
        return True
    return False


def lift_patterns(model: onnx.ModelProto) -> onnx.ModelProto:
    m = onnx.ModelProto()
    m.CopyFrom(model)
    fold_batchnorm(m)
    fold_batchnorm_forward(m)
    lift_gelu(m)
    return m
