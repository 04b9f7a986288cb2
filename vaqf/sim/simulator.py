"""Bit-accurate interpreter over the IR: the oracle for the generated C++.

Shaped like torch.fx's Interpreter: ``run_node`` looks up the op's OpSpec and calls its ``reference``.
The IR describes one sample; the simulator runs many at once, so every array carries an extra leading
axis (the samples) in front of the IR shape: an IR value of shape [1, N, D] is an array [B, 1, N, D].
References therefore address axes from the end, or shift IR axes by one.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from vaqf.errors import VaqfError
from vaqf.ir import Graph, Node, Value
from vaqf.ops import get_spec
from vaqf.sim.qarith import Rounding, round_real, saturate

log = logging.getLogger(__name__)


@dataclass
class SimResult:
    outputs: list[np.ndarray]                      # integer outputs
    dequantized: list[np.ndarray]                  # real-valued outputs (scale * (q - zp))
    trace: dict[str, np.ndarray] = field(default_factory=dict)  # value name -> integers, when traced


def quantize_input(value: Value, x: np.ndarray, rounding: Rounding) -> np.ndarray:
    """Float input to the integers the accelerator takes (done by the host driver on a board)."""
    info = value.info
    a = np.asarray(x, dtype=np.float64)
    q = round_real(a / info.scale, rounding) + info.zero_point
    return saturate(q, int(info.qtype.min), int(info.qtype.max))


class Simulator:
    def __init__(self, graph: Graph) -> None:
        self.graph = graph
        self.order: list[Node] = list(graph.topo())

    def _check_inputs(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        """User arrays [B, *sample] (the IR's batch axis of 1 dropped) to simulator arrays [B, *IR shape]."""
        if len(arrays) != len(self.graph.inputs):
            raise VaqfError(f"the model takes {len(self.graph.inputs)} input(s), got {len(arrays)}")
        out = []
        for v, a in zip(self.graph.inputs, arrays, strict=True):
            a = np.asarray(a)
            want = v.info.sample_shape
            if a.shape[1:] != want:
                if a.shape == want:
                    a = a[None]
                else:
                    raise VaqfError(f"input '{v.name}' must be shaped [batch, {', '.join(map(str, want))}], "
                                    f"got {list(a.shape)}")
            out.append(a.reshape((a.shape[0],) + v.info.shape))
        return out

    @staticmethod
    def _user_shape(v: Value, a: np.ndarray) -> np.ndarray:
        """Drop the IR's leading batch axis of 1 (a value whose leading axis is not 1 keeps it)."""
        return a.reshape((a.shape[0],) + v.info.sample_shape)

    def quantize_inputs(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        """Float inputs [B, *sample] to integer inputs of the same shape."""
        arrays = self._check_inputs(arrays)
        roundings = self.graph.metadata.get("input_rounding", {})
        return [self._user_shape(v, quantize_input(v, a, Rounding(roundings.get(v.name, "HALF_EVEN"))))
                for v, a in zip(self.graph.inputs, arrays, strict=True)]

    def run_node(self, node: Node, args: list[np.ndarray]) -> list[np.ndarray]:
        return get_spec(node.op).reference(node, args)

    def run_int(self, arrays: list[np.ndarray], trace: bool = False) -> SimResult:
        """Run on integer inputs (already quantized), returning integer and real outputs."""
        arrays = self._check_inputs(arrays)
        env: dict[str, np.ndarray] = {}
        for v, a in zip(self.graph.inputs, arrays, strict=True):
            ai = np.asarray(a)
            if not np.issubdtype(ai.dtype, np.integer):
                if not np.all(np.floor(ai) == ai):
                    raise VaqfError(f"integer input '{v.name}' holds non-integer values")
            ai = ai.astype(np.int64)
            if ai.size and (ai.min() < v.info.qtype.min or ai.max() > v.info.qtype.max):
                raise VaqfError(f"input '{v.name}' has values outside {v.info.qtype}")
            env[v.name] = ai
        uses = {v.name: 0 for v in self.graph.values()}
        for n in self.order:
            for v in n.inputs:
                uses[v.name] += 1
        keep = {v.name for v in self.graph.outputs}
        for node in self.order:
            args = [env[v.name] for v in node.inputs]
            results = self.run_node(node, args)
            for v, r in zip(node.outputs, results, strict=True):
                env[v.name] = r
            if not trace:
                for v in node.inputs:
                    uses[v.name] -= 1
                    if uses[v.name] == 0 and v.name not in keep:
                        env.pop(v.name, None)
        outs = [self._user_shape(v, env[v.name]) for v in self.graph.outputs]
        deq = [v.info.dequantize(o) for v, o in zip(self.graph.outputs, outs, strict=True)]
        return SimResult(outs, deq, dict(env) if trace else {})

    def run(self, arrays: list[np.ndarray], trace: bool = False) -> SimResult:
        """Quantize float inputs as the host would, then run."""
        return self.run_int(self.quantize_inputs(arrays), trace=trace)


def simulate(graph: Graph, inputs: np.ndarray | list[np.ndarray], trace: bool = False) -> SimResult:
    arrays = [inputs] if isinstance(inputs, np.ndarray) else list(inputs)
    return Simulator(graph).run(arrays, trace=trace)
