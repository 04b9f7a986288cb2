"""Float matrix products of integer-valued operands, for the simulator's GEMMs.

The simulator multiplies integers through float BLAS where that is exact (every partial sum below 2**24 in
float32, 2**53 in float64: any summation order, with or without FMA, gives the exact integer). Large
float32 products run on onnxruntime's MLAS kernels, which on AVX-512 machines are about twice as fast as
numpy's OpenBLAS; everything else, and any machine where onnxruntime cannot be loaded, uses numpy.

Products of uint8 activations and 8-bit weights can instead run as integer GEMMs on MLAS's quantized
kernels (onnxruntime's ``MatMulInteger``, :class:`IntGemm`): no conversion of the activations to float,
int32 accumulators (exact: every product and partial sum is an integer, wrapping int32 arithmetic gives
the exact result whenever it fits int32, which the layer's accumulator bound guarantees). One caveat is
handled: on x86 CPUs without VNNI, MLAS's uint8 x int8 kernel adds pairs of products in saturating int16
(``vpmaddubsw``), which is inexact once 2 * 255 * |w| exceeds 32767; there the weights go in as uint8
with zero point 128 (the uint8 x uint8 kernel widens to int16 first, exact), unless they are small enough
(|w| <= 64) for the pair sums to fit. Whether the uint8 x int8 kernel saturates is probed once, on the
worst case (all activations 255, all weights 127 or -128).

Threads: ``VAQF_SIM_THREADS``, else ``OMP_NUM_THREADS``/``OPENBLAS_NUM_THREADS`` when set (the same cap as
numpy's BLAS), else onnxruntime's default (one per physical core); idle threads do not spin.
"""

from __future__ import annotations

import os
import threading

import numpy as np

#: multiply-accumulates from which a product goes to onnxruntime (below: numpy, whose call is cheaper)
ORT_MIN_MACS = 1 << 20

_lock = threading.Lock()
_session: list[object] = []  # [InferenceSession] or [None] when onnxruntime is unusable


def _threads() -> int:
    for var in ("VAQF_SIM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        v = os.environ.get(var, "").strip()
        if v.isdigit() and int(v) > 0:
            return int(v)
    return 0


def _one_node_session(op: str, inputs: list[tuple[str, int, list | None]], out_type: int) -> object | None:
    """An onnxruntime session running one ``op`` node over ``inputs`` (name, element type, shape) into
    ``y``: single-threaded as configured (:func:`_threads`), no spinning; None where onnxruntime cannot."""
    try:
        import onnxruntime as ort
        from onnx import helper
    except Exception:  # noqa: BLE001 - any import problem: numpy serves every product
        return None
    graph = helper.make_graph(
        [helper.make_node(op, [name for name, _, _ in inputs], ["y"])], f"vaqf_sim_{op.lower()}",
        [helper.make_tensor_value_info(name, et, shape) for name, et, shape in inputs],
        [helper.make_tensor_value_info("y", out_type, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    so = ort.SessionOptions()
    so.intra_op_num_threads = _threads()
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    except Exception:  # noqa: BLE001
        return None


def _make_session() -> object | None:
    from onnx import TensorProto

    return _one_node_session("MatMul", [("a", TensorProto.FLOAT, None), ("b", TensorProto.FLOAT, None)],
                             TensorProto.FLOAT)


def _ort() -> object | None:
    if not _session:
        with _lock:
            if not _session:
                _session.append(_make_session())
    return _session[0]


#: multiply-accumulates from which a dense layer on uint8 activations runs as an integer GEMM (IntGemm)
INT_MIN_MACS = 1 << 18
#: integer GEMMs on (False: the float products above serve every dense layer; tests compare the two)
INT_GEMM = True
_int_sessions: dict[str, object] = {}  # "u8s8" / "u8u8" -> InferenceSession or None
_u8s8_exact: list[bool] = []


def _int_session(kind: str) -> object | None:
    """A MatMulInteger session: y[int32] = (a[uint8] - az) @ (b - bz), b int8 ("u8s8") or uint8 ("u8u8")."""
    if kind not in _int_sessions:
        with _lock:
            if kind not in _int_sessions:
                _int_sessions[kind] = _make_int_session(kind)
    return _int_sessions[kind]


def _make_int_session(kind: str) -> object | None:
    from onnx import TensorProto

    bt = TensorProto.INT8 if kind == "u8s8" else TensorProto.UINT8
    return _one_node_session("MatMulInteger", [("a", TensorProto.UINT8, None), ("b", bt, None),
                                               ("az", TensorProto.UINT8, []), ("bz", bt, [])], TensorProto.INT32)


def _run_int(sess: object, a: np.ndarray, az: np.ndarray, b: np.ndarray, bz: np.ndarray, out: np.ndarray) -> None:
    io = sess.io_binding()
    io.bind_cpu_input("a", a)
    io.bind_cpu_input("b", b)
    io.bind_cpu_input("az", az)
    io.bind_cpu_input("bz", bz)
    io.bind_output("y", "cpu", 0, np.int32, list(out.shape), out.ctypes.data)
    sess.run_with_iobinding(io)


def u8s8_exact() -> bool:
    """Whether MLAS's uint8 x int8 GEMM is exact for any operands on this machine (no int16 saturation of
    pair sums): checked on the worst cases, all activations 255 times all weights 127, then -128, on a few
    shapes (row counts 1 and many, odd and even depths)."""
    if not _u8s8_exact:
        sess = _int_session("u8s8")
        ok = sess is not None
        try:
            for m, k, n in ((1, 64, 16), (37, 129, 33), (256, 256, 64)):
                a = np.full((m, k), 255, np.uint8)
                for w in (127, -128):
                    out = np.empty((m, n), np.int32)
                    if ok:
                        _run_int(sess, a, np.array(0, np.uint8), np.full((k, n), w, np.int8), np.array(0, np.int8),
                                 out)
                        ok = bool(np.all(out == 255 * w * k))
        except Exception:  # noqa: BLE001 - onnxruntime refused: no integer GEMMs of that kind
            ok = False
        _u8s8_exact.append(ok)
    return _u8s8_exact[0]


class IntGemm:
    """``acc = (x - zp) @ w.T`` in int32 through MLAS's integer kernels, for uint8 activations x [M, K] and
    integer weights w [N, K] in [-128, 127], when onnxruntime is available and the result is exact (see the
    module notes): build with :meth:`make`, which returns None where this does not apply."""

    def __init__(self, sess: object, b: np.ndarray, bz: np.ndarray, zp: int) -> None:
        self.sess, self.b, self.bz, self.az = sess, b, bz, np.array(zp, np.uint8)

    @classmethod
    def make(cls, weight: np.ndarray, zp: int, bound: int, kind: str | None = None) -> IntGemm | None:
        """For weights [N, K], input zero point ``zp`` and accumulator bound ``bound`` (|acc| <= bound).
        ``kind`` ("u8s8" or "u8u8") forces the kernel (tests); by default u8s8 where it is exact."""
        n, k = weight.shape
        if not (0 <= zp <= 255) or bound >= 2**31 or k * 255 * 255 >= 2**31 or weight.size == 0:
            return None
        w = np.asarray(weight)
        lo, hi = int(w.min()), int(w.max())
        if lo < -128 or hi > 127:
            return None
        if kind is None:  # u8s8 where pair sums 2 * 255 * |w| fit int16, or the kernel has no int16 step
            kind = "u8s8" if max(-lo, hi) <= 64 or u8s8_exact() else "u8u8"
        if kind == "u8s8":
            sess, b, bz = _int_session("u8s8"), np.ascontiguousarray(w.T.astype(np.int8)), np.array(0, np.int8)
        else:
            sess, b = _int_session("u8u8"), np.ascontiguousarray((w.T.astype(np.int16) + 128).astype(np.uint8))
            bz = np.array(128, np.uint8)
        return None if sess is None else cls(sess, b, bz, zp)

    def __call__(self, x: np.ndarray, out: np.ndarray) -> np.ndarray:
        """x [M, K] uint8 (made contiguous if needed), out [M, N] int32 C-contiguous."""
        _run_int(self.sess, np.ascontiguousarray(x), self.az, self.b, self.bz, out)
        return out


def matmul_into(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> np.ndarray:
    """``np.matmul(a, b, out=out)`` for integer-valued float operands whose products are exact (see above).

    ``a`` [..., M, K] and ``out`` C-contiguous; ``b`` [..., K, N] (any layout: made contiguous when it goes to
    onnxruntime). Leading axes must be equal (no broadcasting) for the onnxruntime path.
    """
    macs = out.size * a.shape[-1]
    if (a.dtype == np.float32 and b.dtype == np.float32 and out.dtype == np.float32 and macs >= ORT_MIN_MACS
            and a.shape[:-2] == b.shape[:-2] and out.flags.c_contiguous):
        sess = _ort()
        if sess is not None:
            io = sess.io_binding()
            io.bind_cpu_input("a", np.ascontiguousarray(a))
            io.bind_cpu_input("b", np.ascontiguousarray(b))
            io.bind_output("y", "cpu", 0, np.float32, list(out.shape), out.ctypes.data)
            sess.run_with_iobinding(io)
            return out
    return np.matmul(a, b, out=out)
