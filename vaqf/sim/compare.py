"""Per-tensor quantization error of the simulator against the float model (onnxruntime)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx

from vaqf.frontend.calibrate import ort_compatible
from vaqf.ir import Graph
from vaqf.sim.simulator import Simulator


@dataclass
class TensorError:
    value: str       # IR value (named after the ONNX tensor it computes)
    op: str          # producing op
    rel_l2: float    # ||sim - float|| / ||float||
    max_abs: float
    scale: float     # the value's quantization step (first channel)

    def to_json(self) -> dict:
        return {"value": self.value, "op": self.op, "rel_l2": self.rel_l2, "max_abs": self.max_abs,
                "scale": self.scale}


def layer_errors(graph: Graph, model: onnx.ModelProto, x: np.ndarray) -> list[TensorError]:
    """Compare every IR value that has an ONNX tensor of the same name and shape with onnxruntime's."""
    import onnxruntime as ort

    res = Simulator(graph).run([x], trace=True)
    m = ort_compatible(model)
    produced = {o for n in m.graph.node for o in n.output}
    names = [v.name for v in graph.values() if v.name in produced and v.name in res.trace]
    existing = {o.name for o in m.graph.output}
    for t in names:
        if t not in existing:
            m.graph.output.append(onnx.helper.make_empty_tensor_value_info(t))
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    inp = m.graph.input[0].name
    outs = [sess.run(names, {inp: x[i : i + 1]}) for i in range(x.shape[0])]
    errors = []
    for j, t in enumerate(names):
        ref = np.concatenate([np.asarray(o[j], dtype=np.float64) for o in outs])
        v = graph.value(t)
        got = v.info.dequantize(res.trace[t])
        if got.size != ref.size:
            continue
        got = got.reshape(ref.shape)
        denom = np.linalg.norm(ref)
        producer = graph.producer(v)
        errors.append(TensorError(t, producer.op if producer else "input",
                                  float(np.linalg.norm(got - ref) / denom) if denom else 0.0,
                                  float(np.max(np.abs(got - ref))), float(v.info.scale[0])))
    return errors
