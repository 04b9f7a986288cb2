"""Bit-accurate interpreter over the IR: the oracle for the generated C++.

Shaped like torch.fx's Interpreter: ``run_node`` looks up the op's OpSpec and calls its ``reference``.
The IR describes one sample; the simulator runs many at once, so every array carries an extra leading
axis (the samples) in front of the IR shape: an IR value of shape [1, N, D] is an array [B, 1, N, D].
References therefore address axes from the end, or shift IR axes by one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from vaqf.errors import VaqfError
from vaqf.ir import Graph, Node, Value
from vaqf.ops import get_spec
from vaqf.sim.plans import Scratch, root
from vaqf.sim.qarith import Rounding, round_real, saturate

log = logging.getLogger(__name__)


@dataclass
class SimResult:
    outputs: list[np.ndarray]                      # integer outputs
    dequantized: list[np.ndarray]                  # real-valued outputs (scale * (q - zp))
    trace: dict[str, np.ndarray] = field(default_factory=dict)  # value name -> integers, when traced


def quantize_input(value: Value, x: np.ndarray, rounding: Rounding) -> np.ndarray:
    """Float input to the integers the accelerator takes (done by the host driver on a board)."""
    return _quantizer(value, rounding)(x)


def _quantizer(value: Value, rounding: Rounding) -> Callable[[np.ndarray], np.ndarray]:
    info = value.info
    lo, hi, zp = int(info.qtype.min), int(info.qtype.max), int(info.zero_point)
    if rounding is Rounding.HALF_EVEN and info.scale.size == 1:  # the usual case: one compiled pass
        from vaqf.sim.kernels import quantize_half_even
        from vaqf.sim.plans import storage_dtype

        dt, scale = storage_dtype(info.qtype), float(info.scale[0])

        def fast(x: np.ndarray) -> np.ndarray:
            a = np.asarray(x)
            if a.dtype != np.float32 and a.dtype != np.float64:
                a = a.astype(np.float64)
            a = np.ascontiguousarray(a)
            out = np.empty(a.shape, dt)
            quantize_half_even(a.reshape(-1), scale, zp, lo, hi, out.reshape(-1))
            return out

        return fast

    def general(x: np.ndarray) -> np.ndarray:
        q = round_real(np.asarray(x, dtype=np.float64) / info.scale, rounding) + info.zero_point
        return saturate(q, lo, hi)

    return general


class Simulator:
    """Runs a graph on batches of inputs. Each node runs through a plan built once per simulator (the op's
    ``sim_plan``, see vaqf.sim.plans; ops without one run their ``reference``); values between nodes are
    held in their narrowest integer dtype, results and traces are int64."""

    def __init__(self, graph: Graph) -> None:
        self.graph = graph
        self.order: list[Node] = list(graph.topo())
        self._plans: dict[str, Callable[[list[np.ndarray]], list[np.ndarray]]] = {}
        self._scratch = Scratch()
        self._last_batch = -1
        uses = {v.name: 0 for v in graph.values()}
        for n in self.order:
            for v in n.inputs:
                uses[v.name] += 1
        keep = {v.name for v in graph.outputs}
        # after each node, the values nothing later reads (freed while running, unless tracing)
        self._dead: list[list[str]] = []
        for n in self.order:
            dead = []
            for v in n.inputs:
                uses[v.name] -= 1
                if uses[v.name] == 0 and v.name not in keep and v.name not in dead:
                    dead.append(v.name)
            self._dead.append(dead)
        self._in_names = [v.name for v in graph.inputs]
        self._quantizers: list[Callable[[np.ndarray], np.ndarray]] | None = None
        self._in_shapes = [(v.info.sample_shape, v.info.shape) for v in graph.inputs]

    def _check_inputs(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        """User arrays [B, *sample] (the IR's batch axis of 1 dropped) to simulator arrays [B, *IR shape]."""
        if len(arrays) != len(self.graph.inputs):
            raise VaqfError(f"the model takes {len(self.graph.inputs)} input(s), got {len(arrays)}")
        out = []
        for v, a, (want, ir_shape) in zip(self.graph.inputs, arrays, self._in_shapes, strict=True):
            a = np.asarray(a)
            if a.shape[1:] != want:
                if a.shape == want:
                    a = a[None]
                else:
                    raise VaqfError(f"input '{v.name}' must be shaped [batch, {', '.join(map(str, want))}], "
                                    f"got {list(a.shape)}")
            out.append(a.reshape((a.shape[0],) + ir_shape))
        return out

    @staticmethod
    def _user_shape(v: Value, a: np.ndarray) -> np.ndarray:
        """Drop the IR's leading batch axis of 1 (a value whose leading axis is not 1 keeps it)."""
        return a.reshape((a.shape[0],) + v.info.sample_shape)

    def quantize_inputs(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        """Float inputs [B, *sample] to integer inputs of the same shape (int64)."""
        return [self._user_shape(v, q.astype(np.int64))
                for v, q in zip(self.graph.inputs, self._quantize(self._check_inputs(arrays)), strict=True)]

    def _quantize(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        """Simulator arrays [B, *IR shape] of floats to integers of the same shape (storage dtypes)."""
        if self._quantizers is None:
            roundings = self.graph.metadata.get("input_rounding", {})
            self._quantizers = [_quantizer(v, Rounding(roundings.get(v.name, "HALF_EVEN"))) for v in self.graph.inputs]
        return [q(a) for q, a in zip(self._quantizers, arrays, strict=True)]

    def plan(self, node: Node) -> Callable[[list[np.ndarray]], list[np.ndarray]]:
        """The function that runs ``node`` on a batch (built on first use, then kept)."""
        p = self._plans.get(node.name)
        if p is None:
            spec = get_spec(node.op)
            make = getattr(spec, "sim_plan", None)
            if make is not None:
                p = make(node, self._scratch)
            else:
                p = lambda args, spec=spec, node=node: spec.reference(node, args)  # noqa: E731
            self._plans[node.name] = p
        return p

    def run_node(self, node: Node, args: list[np.ndarray]) -> list[np.ndarray]:
        return self.plan(node)(args)

    def run_int(self, arrays: list[np.ndarray], trace: bool = False) -> SimResult:
        """Run on integer inputs (already quantized), returning integer and real outputs."""
        arrays = self._check_inputs(arrays)
        checked = []
        for v, a in zip(self.graph.inputs, arrays, strict=True):
            ai = np.asarray(a)
            if not np.issubdtype(ai.dtype, np.integer):
                if not np.all(np.floor(ai) == ai):
                    raise VaqfError(f"integer input '{v.name}' holds non-integer values")
            ai = ai.astype(np.int64)
            if ai.size and (ai.min() < v.info.qtype.min or ai.max() > v.info.qtype.max):
                raise VaqfError(f"input '{v.name}' has values outside {v.info.qtype}")
            checked.append(ai)
        return self._execute(checked, trace)

    def _execute(self, arrays: list[np.ndarray], trace: bool) -> SimResult:
        env: dict[str, np.ndarray] = dict(zip(self._in_names, arrays, strict=True))
        batch = arrays[0].shape[0] if arrays else 0
        scratch = self._scratch
        if batch != self._last_batch:
            scratch.reset()
            self._last_batch = batch
        owned = scratch.owned
        live: dict[int, int] = {}  # pooled buffer -> values held in env that use it
        run_node = self.run_node
        for node, dead in zip(self.order, self._dead, strict=True):
            results = run_node(node, [env[v.name] for v in node.inputs])
            for v, r in zip(node.outputs, results, strict=True):
                env[v.name] = r
                if owned:
                    k = id(root(r))
                    if k in owned:
                        live[k] = live.get(k, 0) + 1
            if trace:
                continue
            for name in dead:
                a = env.pop(name)
                if owned:
                    k = id(root(a))
                    if k in live:
                        live[k] -= 1
                        if not live[k]:
                            del live[k]
                            scratch.release(owned[k]())
        outs = [self._user_shape(v, env[v.name]).astype(np.int64) for v in self.graph.outputs]
        deq = [v.info.dequantize(o) for v, o in zip(self.graph.outputs, outs, strict=True)]
        if trace:  # the trace keeps its arrays: none goes back to the pool
            scratch.reset()
            return SimResult(outs, deq, {k: a.astype(np.int64) for k, a in env.items()})
        for k in live:
            scratch.release(owned[k]())
        return SimResult(outs, deq, {})

    def run(self, arrays: list[np.ndarray], trace: bool = False) -> SimResult:
        """Quantize float inputs as the host would, then run."""
        return self._execute(self._quantize(self._check_inputs(arrays)), trace)


def simulate(graph: Graph, inputs: np.ndarray | list[np.ndarray], trace: bool = False) -> SimResult:
    arrays = [inputs] if isinstance(inputs, np.ndarray) else list(inputs)
    return Simulator(graph).run(arrays, trace=trace)
