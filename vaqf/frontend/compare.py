"""Per-tensor quantization error of the simulator against the float model (onnxruntime)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx

from vaqf.frontend.calibrate import OWN_QUANTIZERS, float_session, ort_compatible
from vaqf.ir import Graph
from vaqf.sim.simulator import Simulator

#: ONNX ops a producer may have absorbed into its epilogue (importer or FuseEpilogues): when such an op is
#: the sole consumer of a tensor and its own output is no IR value, the IR value named after the tensor holds
#: the value after it (a conv followed by Relu is one GEMM whose output is post-ReLU)
EPILOGUE_OPS = {"Relu", "Clip", "Quant", "BipolarQuant", "QuantizeLinear", "DequantizeLinear"}


@dataclass
class TensorError:
    value: str       # IR value (named after the ONNX tensor it computes)
    op: str          # producing op
    rel_l2: float    # ||sim - float|| / ||float||
    max_abs: float
    scale: float     # the value's quantization step (first channel)
    reference: str = ""  # the ONNX tensor compared with: ``value``, or the output of its fused epilogue

    def to_json(self) -> dict:
        return {"value": self.value, "op": self.op, "rel_l2": self.rel_l2, "max_abs": self.max_abs,
                "scale": self.scale, "reference": self.reference or self.value}


def float_counterparts(graph: Graph, model: onnx.ModelProto) -> dict[str, str]:
    """Per IR value named after an ONNX tensor, the ONNX tensor at the same point of the computation: the
    tensor itself, or, where the producer absorbed the ops after it (``EPILOGUE_OPS``), the last of their
    outputs. Comparing the pre-ReLU float conv output with the fused post-ReLU value would report the ReLU's
    effect as quantization error."""
    ir = {v.name for v in graph.values()}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for n in model.graph.node:
        for t in n.input:
            consumers.setdefault(t, []).append(n)
    graph_outputs = {o.name for o in model.graph.output}
    out: dict[str, str] = {}
    for name in ir:
        t = name
        while t not in graph_outputs:
            users = consumers.get(t, [])
            if len(users) != 1 or users[0].op_type not in EPILOGUE_OPS or not users[0].output:
                break
            nxt = users[0].output[0]
            if nxt in ir:  # the IR computes that op as a value of its own: this value is before it
                break
            t = nxt
        out[name] = t
    return out


def layer_errors(graph: Graph, model: onnx.ModelProto, x: np.ndarray) -> list[TensorError]:
    """Compare every IR value that has an ONNX tensor of the same name and shape with onnxruntime's value
    at the same point (after any epilogue the IR fused into the value's producer: ``float_counterparts``)."""
    res = Simulator(graph).run([x], trace=True)
    m = ort_compatible(model, OWN_QUANTIZERS)
    produced = {o for n in m.graph.node for o in n.output}
    names = [v.name for v in graph.values() if v.name in produced and v.name in res.trace]
    refs = float_counterparts(graph, m)
    fetch = sorted({refs[t] for t in names})
    existing = {o.name for o in m.graph.output}
    for t in fetch:
        if t not in existing:
            m.graph.output.append(onnx.helper.make_empty_tensor_value_info(t))
    sess = float_session(m)
    inp = m.graph.input[0].name
    outs = [dict(zip(fetch, sess.run(fetch, {inp: x[i : i + 1]}), strict=True)) for i in range(x.shape[0])]
    errors = []
    for t in names:
        ref = np.concatenate([np.asarray(o[refs[t]], dtype=np.float64) for o in outs])
        v = graph.value(t)
        got = v.info.dequantize(res.trace[t])
        if got.size != ref.size:
            continue
        got = got.reshape(ref.shape)
        denom = np.linalg.norm(ref)
        producer = graph.producer(v)
        errors.append(TensorError(t, producer.op if producer else "input",
                                  float(np.linalg.norm(got - ref) / denom) if denom else 0.0,
                                  float(np.max(np.abs(got - ref))), float(v.info.scale[0]), refs[t]))
    return errors
