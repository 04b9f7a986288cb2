"""Bit-accurate interpreter over the IR: the oracle for the generated C++.

Shaped like torch.fx's Interpreter: ``run_node`` runs the op's fast path (:mod:`vaqf.sim.fast`), or its
OpSpec's ``reference`` where it has none.
The IR describes one sample; the simulator runs many at once, so every array carries an extra leading
axis (the samples) in front of the IR shape: an IR value of shape [1, N, D] is an array [B, 1, N, D].
References therefore address axes from the end, or shift IR axes by one.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from vaqf.errors import VaqfError
from vaqf.ir import Graph, Node, Value
from vaqf.ir.qarith import Rounding, round_real
from vaqf.ir.qarith import saturate as saturate_ints
from vaqf.ops import get_spec
from vaqf.sim.fast import fast_plan
from vaqf.sim.plans import Scratch, root

log = logging.getLogger(__name__)


@dataclass
class SimResult:
    """What a simulation gives: per graph output, ``outputs`` (the integers the hardware writes, int64,
    ``[N, ...]``) and ``dequantized`` (their real values ``scale * (q - zero_point)``, float64); with tracing,
    ``trace`` maps every value's name to its integers (the input of each node as the C++ sees it)."""

    outputs: list[np.ndarray]                      # integer outputs
    dequantized: list[np.ndarray]                  # real-valued outputs (scale * (q - zp))
    trace: dict[str, np.ndarray] = field(default_factory=dict)  # value name -> integers, when traced


def quantize_input(value: Value, x: np.ndarray, rounding: Rounding, saturate: bool = False) -> np.ndarray:
    """Float input to the integers the accelerator takes (done by the host driver on a board)."""
    return _quantizer(value, rounding, saturate=saturate)(x).astype(np.int64)


def check_float_input(value: Value, x: object, saturate: bool = False, clip: bool = True) -> np.ndarray:
    """A user's float input as an array the quantizer can take, or a VaqfError saying what is wrong with it.

    Only real numbers: complex, string, date, structured and object arrays are refused (they used to be cast
    or quantized to nonsense). NaN and +-inf have no integer meaning: an error, or with ``saturate`` +-inf go to
    the type's ends and NaN to zero, with a warning that counts them. Finite values beyond the type's range
    saturate, as the quantizer defines (huge ones used to wrap to the minimum in the float-to-int conversion).
    Without ``clip`` (an input the host transforms first: the bound is not in its units) values are left as
    they are, NaN set to zero where ``saturate`` allows them.
    """
    name = value.name
    if isinstance(x, np.lib.npyio.NpzFile):
        raise VaqfError(f"input '{name}' is an .npz archive; give one array saved with np.save (.npy)")
    a = np.asarray(x)
    if a.dtype.kind not in "biuf":
        raise VaqfError(f"input '{name}' holds {a.dtype} values; vaqf takes real numbers (a float or integer array)")
    if a.size == 0:
        raise VaqfError(f"input '{name}' is empty (shape {list(a.shape)}); give at least one sample")
    if not a.dtype.isnative:  # big-endian files: the compiled quantizer reads native numbers
        a = a.astype(a.dtype.newbyteorder("="))
    if a.dtype.kind != "f":
        return a
    info = value.info
    lo, hi, zp = int(info.qtype.min), int(info.qtype.max), int(info.zero_point)
    # beyond +-bound every value saturates to lo or hi (twice the reach of the range, whatever float32 rounds)
    bound = 2.0 * (max(abs(lo - zp), abs(hi - zp)) + 2) * float(np.max(info.scale))
    low, high = a.min(), a.max()
    if not (np.isfinite(low) and np.isfinite(high)):
        nan = np.isnan(a)
        n_nan, n_inf = int(np.count_nonzero(nan)), int(np.count_nonzero(np.isinf(a)))
        if not saturate:
            raise VaqfError(f"input '{name}' holds {n_nan} NaN and {n_inf} infinite values (of {a.size}); they have "
                            "no integer meaning: clean the inputs (np.nan_to_num), or saturate them (--saturate on "
                            "vaqf simulate/csim, saturate=True in the Python API)")
        log.warning("input '%s': %d NaN values set to 0 and %d infinite values saturated (of %d)", name, n_nan,
                    n_inf, a.size)
        a = np.where(nan, 0, a)
        return np.clip(a, -bound, bound) if clip else a
    if clip and (low < -bound or high > bound):
        log.info("input '%s': values up to %g saturate to the %s range", name, max(-low, high), info.qtype)
        return np.clip(a, -bound, bound)
    return a


def _quantizer(value: Value, rounding: Rounding,
               new: Callable[[tuple[int, ...], np.dtype], np.ndarray] = np.empty,
               saturate: bool = False, transform: dict | None = None) -> Callable[[np.ndarray], np.ndarray]:
    """A function quantizing float arrays for ``value`` into arrays from ``new`` (storage dtype); every array
    is first checked by ``check_float_input``. A ``transform`` (:mod:`vaqf.ir.host`) applies the model's float
    ops first and, for a bipolar input, takes the sign instead of rounding."""
    info = value.info
    lo, hi, zp = int(info.qtype.min), int(info.qtype.max), int(info.zero_point)
    if transform:
        from vaqf.ir import host

        def transformed(x: np.ndarray) -> np.ndarray:
            a = host.apply_ops(check_float_input(value, x, saturate, clip=False), transform.get("ops", []))
            if transform.get("bipolar"):
                return host.bipolar(a)
            a = np.nan_to_num(a.astype(np.float64) / info.scale, nan=0.0)
            q = round_real(np.clip(a, lo - zp - 1, hi - zp + 1), rounding) + zp
            return saturate_ints(q, lo, hi)

        return transformed
    if rounding is Rounding.HALF_EVEN and info.scale.size == 1:  # the usual case: one compiled pass
        from vaqf.sim.loops import quantize_half_even
        from vaqf.sim.plans import storage_dtype

        dt, scale = storage_dtype(info.qtype), float(info.scale[0])
        small = Scratch.POOL_MIN_BYTES // dt.itemsize

        def fast(x: np.ndarray) -> np.ndarray:
            a = check_float_input(value, x, saturate)
            if a.dtype.char not in "fd":
                a = a.astype(np.float64)
            if not a.flags.c_contiguous:
                a = np.ascontiguousarray(a)
            out = np.empty(a.shape, dt) if a.size < small else new(a.shape, dt)
            quantize_half_even(a, scale, zp, lo, hi, out)
            return out

        return fast

    def general(x: np.ndarray) -> np.ndarray:
        a = check_float_input(value, x, saturate)
        q = round_real(np.asarray(a, dtype=np.float64) / info.scale, rounding) + info.zero_point
        return saturate_ints(q, lo, hi)

    return general


def _finisher(value: Value) -> Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """For a graph output: its integers [B, *IR shape] (any integer dtype) to the user's int64 integers and
    ``value.info.dequantize`` of them (scale * (float64(q) - zp), scale per tensor or on the last axis),
    both [B, *sample shape], in one compiled pass: the same float operations, so the same results."""
    from vaqf.sim.loops import finish_output

    info = value.info
    sample = info.sample_shape
    scale = np.ascontiguousarray(np.asarray(info.scale, dtype=np.float64).reshape(-1))
    zp = float(info.zero_point)
    if scale.size != 1 and (not info.shape or scale.size != info.shape[-1]):
        def general(q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            ints = q.reshape((q.shape[0],) + sample).astype(np.int64)
            return ints, info.dequantize(ints)

        return general
    if scale.size > 1:  # per channel: tiled to 64 values or more, so that the kernel's inner loop vectorizes
        scale = np.tile(scale, -(-64 // scale.size))

    def run(q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        shape = (q.shape[0],) + sample
        ints = np.empty(shape, np.int64)
        real = np.empty(shape, np.float64)
        finish_output(q if q.flags.c_contiguous else np.ascontiguousarray(q), scale, zp, ints, real)
        return ints, real

    return run


class Simulator:
    """Runs a graph on batches of inputs.

    Each node runs through a plan built once per simulator (the op's fast path, :mod:`vaqf.sim.fast`; ops
    without one, and every op when ``fast`` is False, run their ``reference``). Values between nodes are held
    in their narrowest integer dtype and, when large, in buffers recycled once no later node reads them;
    results and traces are int64. A simulator keeps those buffers between runs of the same batch size; it is
    not thread-safe (one per thread).
    """

    def __init__(self, graph: Graph, saturate: bool = False, fast: bool = True) -> None:
        self.graph = graph
        self._saturate = saturate
        # False: every node runs its op's readable reference (slow; the oracle the fast paths are held to)
        self.fast = fast
        self.order: list[Node] = list(graph.topo())
        self._plans: dict[str, Callable[[list[np.ndarray]], list[np.ndarray]]] = {}
        self._scratch = Scratch()
        self._last_batch = -1
        uses = {v.name: 0 for v in graph.values()}
        for n in self.order:
            for v in n.inputs:
                uses[v.name] += 1
        keep = {v.name for v in graph.outputs}
        # per node: input names, output names, and the values nothing later reads (freed unless tracing)
        self._steps: list[tuple[Node, list[str], list[str], list[str]]] = []
        for n in self.order:
            dead = []
            for v in n.inputs:
                uses[v.name] -= 1
                if uses[v.name] == 0 and v.name not in keep and v.name not in dead:
                    dead.append(v.name)
            self._steps.append((n, [v.name for v in n.inputs], [v.name for v in n.outputs], dead))
        self._in_names = [v.name for v in graph.inputs]
        self._in_shapes = [(v.info.sample_shape, v.info.shape) for v in graph.inputs]
        self._out_shapes = [v.info.sample_shape for v in graph.outputs]
        self._quantizers: list[Callable[[np.ndarray], np.ndarray]] | None = None
        self._finishers: list[Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]] | None = None
        self._planned: list[Callable[[list[np.ndarray]], list[np.ndarray]]] | None = None
        self._forward: tuple[Callable, Callable] | None = None
        self._last_env: dict[str, np.ndarray] = {}
        # the smallest batch at which some value outgrows Scratch.POOL_MIN_BYTES (8 bytes per element at most)
        biggest = max((8 * math.prod(v.info.shape) for v in graph.values()), default=0)
        self._pooled_batch = max(1, Scratch.POOL_MIN_BYTES // max(biggest, 1))

    @property
    def saturate(self) -> bool:
        """NaN/inf float inputs: an error (False), or set to 0 / saturated with a warning that counts them."""
        return self._saturate

    @saturate.setter
    def saturate(self, value: bool) -> None:
        if value != self._saturate:
            self._saturate = value
            self._quantizers = None  # they hold the flag

    def _check_inputs(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        """User arrays [B, *sample] (the IR's batch axis of 1 dropped) to simulator arrays [B, *IR shape]."""
        if len(arrays) != len(self._in_names):
            raise VaqfError(f"the model takes {len(self._in_names)} input(s), got {len(arrays)}")
        out = []
        for name, a, (want, ir_shape) in zip(self._in_names, arrays, self._in_shapes, strict=True):
            if isinstance(a, np.lib.npyio.NpzFile):
                raise VaqfError(f"input '{name}' is an .npz archive; give one array saved with np.save (.npy)")
            a = np.asarray(a)
            if a.dtype.kind not in "biuf":
                raise VaqfError(f"input '{name}' holds {a.dtype} values; vaqf takes real numbers (a float or "
                                "integer array)")
            if a.shape[1:] != want:
                if a.shape == want:
                    a = a[None]
                else:
                    raise VaqfError(f"input '{name}' must be shaped [batch, {', '.join(map(str, want))}], "
                                    f"got {list(a.shape)}")
            out.append(a.reshape((a.shape[0],) + ir_shape))
        return out

    @staticmethod
    def _user_shape(v: Value, a: np.ndarray) -> np.ndarray:
        """Drop the IR's leading batch axis of 1 (a value whose leading axis is not 1 keeps it)."""
        return a.reshape((a.shape[0],) + v.info.sample_shape)

    def _batch(self, arrays: list[np.ndarray]) -> None:
        """Drop the recycled buffers when the batch size changes (so that memory does not pile up); batches
        too small to recycle anything leave them alone."""
        batch = arrays[0].shape[0] if arrays else 0
        if batch != self._last_batch and batch >= self._pooled_batch:
            self._scratch.reset()
            self._last_batch = batch

    def quantize_inputs(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        """Float inputs [B, *sample] to integer inputs of the same shape (int64)."""
        return [self._user_shape(v, q.astype(np.int64))
                for v, q in zip(self.graph.inputs, self._quantize(self._check_inputs(arrays)), strict=True)]

    def _quantize(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        """Simulator arrays [B, *IR shape] of floats to integers of the same shape (storage dtypes)."""
        if self._quantizers is None:
            roundings = self.graph.metadata.get("input_rounding", {})
            transforms = self.graph.metadata.get("input_transform", {})
            self._quantizers = [_quantizer(v, Rounding(roundings.get(v.name, "HALF_EVEN")), self._scratch.new,
                                           self.saturate, transforms.get(v.name)) for v in self.graph.inputs]
        return [q(a) for q, a in zip(self._quantizers, arrays, strict=True)]

    def plan(self, node: Node) -> Callable[[list[np.ndarray]], list[np.ndarray]]:
        """The function that runs ``node`` on a batch (built on first use, then kept)."""
        p = self._plans.get(node.name)
        if p is None:
            p = fast_plan(node, self._scratch) if self.fast else None
            if p is None:
                spec = get_spec(node.op)
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
        self._batch(checked)
        return self._execute(checked, trace)

    def run(self, arrays: list[np.ndarray], trace: bool = False) -> SimResult:
        """Quantize float inputs as the host would, then run."""
        if self._quantizers is not None and len(arrays) == 1 and isinstance(arrays[0], np.ndarray):
            a = arrays[0]  # the common case, with little Python in the way
            want, ir_shape = self._in_shapes[0]
            if a.ndim == len(want) + 1 and a.shape[1:] == want:
                if a.shape[0] != self._last_batch:
                    self._batch([a])
                return self._execute([self._quantizers[0](a.reshape((a.shape[0],) + ir_shape))], trace)
        arrays = self._check_inputs(arrays)
        self._batch(arrays)
        return self._execute(self._quantize(arrays), trace)

    def _execute(self, arrays: list[np.ndarray], trace: bool) -> SimResult:
        if trace or "run_node" in self.__dict__:  # traced, or run_node replaced on the instance (timing nodes)
            results = self._interpret(arrays, trace)
        else:
            if self._forward is None:
                self._forward = self._generate()
            plans = [self.plan(node) for node in self.order] if self._planned is None else self._planned
            self._planned = plans
            scratch = self._scratch
            if self._pooled_batch <= arrays[0].shape[0] if arrays else False:  # large values: recycle buffers
                owned = scratch.owned
                live: dict[int, int] = {}

                def hold(a: np.ndarray) -> None:
                    k = id(root(a))
                    if k in owned:
                        live[k] = live.get(k, 0) + 1

                def free(a: np.ndarray) -> None:
                    k = id(root(a))
                    if k in live:
                        live[k] -= 1
                        if not live[k]:
                            del live[k]
                            scratch.release(owned[k]())

                results = self._forward[1](arrays, plans, hold, free)
                for k in live:
                    scratch.release(owned[k]())
            else:
                results = self._forward[0](arrays, plans, None, None)
        if self._finishers is None:
            self._finishers = [_finisher(v) for v in self.graph.outputs]
        if len(results) == 1:
            i, r = self._finishers[0](results[0])
            outs, deq = [i], [r]
        else:
            both = [f(r) for f, r in zip(self._finishers, results, strict=True)]
            outs, deq = [b[0] for b in both], [b[1] for b in both]
        if trace:
            return SimResult(outs, deq, {k: a.astype(np.int64) for k, a in self._last_env.items()})
        return SimResult(outs, deq, {})

    def _interpret(self, arrays: list[np.ndarray], trace: bool) -> list[np.ndarray]:
        """The plain interpreter loop (values in a dict, each node through ``run_node``); no buffer recycling."""
        env: dict[str, np.ndarray] = dict(zip(self._in_names, arrays, strict=True))
        for node, ins, outs, dead in self._steps:
            results = self.run_node(node, [env[n] for n in ins])
            for name, r in zip(outs, results, strict=True):
                env[name] = r
            if not trace:
                for name in dead:
                    del env[name]
        self._scratch.reset()  # whatever was handed out stays with the values
        self._last_env = env if trace else {}
        return [env[v.name] for v in self.graph.outputs]

    def _generate(self) -> tuple[Callable, Callable]:
        """The graph as straight-line Python (like torch.fx's generated forward): values in local variables,
        each node one call of its plan, dead values dropped at once. Two versions: plain, and one that tells
        ``hold``/``free`` when a value appears and when it dies (to recycle large buffers)."""
        local = {name: f"v{i}" for i, name in enumerate(self._in_names)}
        for _, _, outs, _ in self._steps:
            for name in outs:
                local.setdefault(name, f"v{len(local)}")
        sources = []
        for pooled in (False, True):
            lines = ["def forward(inputs, plans, hold, free):"]
            ins = [local[n] for n in self._in_names]
            if ins:
                lines.append(f"    {', '.join(ins)}, = inputs")
            if pooled:
                lines += [f"    hold({v})" for v in ins]
            for i, (_, args, outs, dead) in enumerate(self._steps):
                targets = ", ".join(local[n] for n in outs) + ","
                lines.append(f"    {targets} = plans[{i}]([{', '.join(local[n] for n in args)}])")
                if pooled:
                    lines += [f"    hold({local[n]})" for n in outs]
                    lines += [f"    free({local[n]})" for n in dead]
                if dead:
                    lines.append(f"    del {', '.join(local[n] for n in dead)}")
            lines.append(f"    return [{', '.join(local[v.name] for v in self.graph.outputs)}]")
            sources.append("\n".join(lines))
        fns = []
        for src in sources:
            ns: dict[str, object] = {}
            exec(compile(src, f"<vaqf simulator: {self.graph.name if hasattr(self.graph, 'name') else 'graph'}>",
                         "exec"), ns)  # noqa: S102 - code generated above from value indices only
            fns.append(ns["forward"])
        return fns[0], fns[1]


def simulate(graph: Graph, inputs: np.ndarray | list[np.ndarray], trace: bool = False) -> SimResult:
    arrays = [inputs] if isinstance(inputs, np.ndarray) else list(inputs)
    return Simulator(graph).run(arrays, trace=trace)
