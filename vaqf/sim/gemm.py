"""Float matrix products of integer-valued operands, for the simulator's GEMMs.

The simulator multiplies integers through float BLAS where that is exact (every partial sum below 2**24 in
float32, 2**53 in float64: any summation order, with or without FMA, gives the exact integer). Large
float32 products run on onnxruntime's MLAS kernels, which on AVX-512 machines are about twice as fast as
numpy's OpenBLAS; everything else, and any machine where onnxruntime cannot be loaded, uses numpy.

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


def _make_session() -> object | None:
    try:
        import onnxruntime as ort
        from onnx import TensorProto, helper
    except Exception:  # noqa: BLE001 - any import problem: numpy serves every product
        return None
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["a", "b"], ["y"])], "vaqf_sim_matmul",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, None),
         helper.make_tensor_value_info("b", TensorProto.FLOAT, None)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
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


def _ort() -> object | None:
    if not _session:
        with _lock:
            if not _session:
                _session.append(_make_session())
    return _session[0]


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
