"""Activation ranges of a float ONNX model on calibration inputs, computed with onnxruntime."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnx

from vaqf.errors import VaqfError

log = logging.getLogger(__name__)

#: newest ONNX IR version the onnxruntime we support reads
ORT_MAX_IR_VERSION = 13


#: operator domains onnxruntime runs (the float model's ops; QONNX's quantizers are not among them)
ORT_DOMAINS = ("", "ai.onnx", "ai.onnx.ml", "com.microsoft")


def float_session(model: onnx.ModelProto):  # noqa: ANN201 - an onnxruntime.InferenceSession
    """An onnxruntime session of the float model whose results do not depend on the machine's core count.

    onnxruntime splits reductions (GEMM, Conv) over its intra-op threads, one per core by default, so the last
    bits of a float result differ between a 2-core and a 16-core machine; calibration scales computed from them
    would differ too, and with them every integer constant of the project. One intra-op thread and sequential
    execution fix the order of every sum: the same model and inputs give the same project and report anywhere."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


#: what ort_compatible's error advises: calibration of a QONNX model's tensors is not needed
LEAVE_OUT_CALIB = "a QONNX model sets its own quantization (leave out --calib)"
#: what a comparison's warning says instead: the calibration data may be needed (a float input's quantizer)
OWN_QUANTIZERS = "the design follows the model's own quantizers (calibration sets only those it lacks)"


def ort_compatible(model: onnx.ModelProto, advice: str = LEAVE_OUT_CALIB) -> onnx.ModelProto:
    """A copy of ``model`` with an IR version onnxruntime accepts; a VaqfError if it has ops onnxruntime cannot
    run (QONNX's Quant, custom domains), instead of onnxruntime's internal message, ending with ``advice``."""
    custom = sorted({f"{n.domain}.{n.op_type}" for n in model.graph.node if n.domain not in ORT_DOMAINS})
    if custom:
        shown = ", ".join(custom[:3]) + (f" and {len(custom) - 3} more" if len(custom) > 3 else "")
        raise VaqfError(f"onnxruntime cannot run this model's {shown} nodes, so vaqf cannot compare it with a float "
                        f"run on calibration data; {advice}")
    m = onnx.ModelProto()
    m.CopyFrom(model)
    if m.ir_version > ORT_MAX_IR_VERSION:
        m.ir_version = ORT_MAX_IR_VERSION
    return m


def check_calibration(data: object, what: str = "calibration data") -> np.ndarray:
    """Calibration inputs as float32, or a VaqfError: real numbers only, not empty, all finite."""
    if not isinstance(data, np.ndarray):
        raise VaqfError(f"{what} must be one numeric array (a .npy file), got {type(data).__name__}")
    if data.dtype.kind not in "biuf":
        raise VaqfError(f"{what} holds {data.dtype} values; give real numbers (a float or integer array)")
    if data.size == 0:
        raise VaqfError(f"{what} is empty (shape {list(data.shape)})")
    out = data.astype(np.float32)
    if not np.all(np.isfinite(out)):
        bad = int(np.count_nonzero(~np.isfinite(out)))
        raise VaqfError(f"{what} holds {bad} NaN or infinite values (or values beyond float32); clean them "
                        "(np.nan_to_num) before calibrating")
    return out


def load_calibration(path: str | Path) -> np.ndarray:
    p = Path(path)
    if not p.is_file():
        raise VaqfError(f"calibration file {p} does not exist")
    try:
        data = np.load(p, allow_pickle=False)
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise VaqfError(f"calibration file {p} is not a readable .npy array: {first}") from e
    if isinstance(data, np.lib.npyio.NpzFile):
        data.close()
        raise VaqfError(f"calibration file {p} is an .npz archive; give one array saved with np.save (.npy)")
    return check_calibration(data, f"calibration file {p}")


def _shaped_calibration(inp: onnx.ValueInfoProto, calib: np.ndarray) -> tuple[np.ndarray, str]:
    """The checked calibration array for the model input ``inp`` and the shape it takes, in words."""
    dims = inp.type.tensor_type.shape.dim
    calib = check_calibration(calib)
    want = [d.dim_value if d.HasField("dim_value") else None for d in dims[1:]]
    expected = f"[N, {', '.join(str(d) if d else '?' for d in want)}]" if want else "[N]"
    # one sample without its batch axis is refused: for a 1-D model input it cannot be told from N scalars
    if calib.ndim != len(dims) or any(w and w != c for w, c in zip(want, calib.shape[1:], strict=False)):
        raise VaqfError(f"calibration data has shape {list(calib.shape)}; the model's input '{inp.name}' takes "
                        f"{expected} (N samples)")
    return calib, expected


def input_range(model: onnx.ModelProto, name: str, calib: np.ndarray) -> tuple[float, float]:
    """(min, max) of the model input ``name`` over the calibration set: the data itself, no model run (a QONNX
    model whose float input feeds its first layer directly, which onnxruntime cannot run)."""
    inp = next(i for i in model.graph.input if i.name == name)
    data, _ = _shaped_calibration(inp, calib)
    return float(np.min(data)), float(np.max(data))


def collect_ranges(model: onnx.ModelProto, calib: np.ndarray, tensors: list[str],
                   batch: int = 64) -> dict[str, tuple[float, float]]:
    """(min, max) of each named tensor over the calibration set."""
    m = ort_compatible(model)
    existing = {o.name for o in m.graph.output}
    for t in tensors:
        if t not in existing:
            m.graph.output.append(onnx.helper.make_empty_tensor_value_info(t))
    if len(m.graph.input) - len({i.name for i in m.graph.initializer} & {i.name for i in m.graph.input}) != 1:
        raise VaqfError("calibration supports models with exactly one input")
    inp = m.graph.input[0]
    try:
        sess = float_session(m)
    except Exception as e:
        raise VaqfError(f"onnxruntime cannot run the model for calibration: {str(e).splitlines()[0]}") from e
    dims = inp.type.tensor_type.shape.dim
    calib, expected = _shaped_calibration(inp, calib)
    lo = {t: np.inf for t in tensors}
    hi = {t: -np.inf for t in tensors}
    fixed_batch = dims[0].dim_value if dims and dims[0].HasField("dim_value") else 0
    # one sample a run where the batch is fixed at 1, or where the graph mixes the batch into other axes
    # (a Flatten with axis 0, as Keras exports it)
    step = 1 if fixed_batch == 1 or any(n.op_type == "Flatten" and any(a.name == "axis" and a.i == 0
                                                                       for a in n.attribute)
                                        for n in m.graph.node) else batch
    for i in range(0, calib.shape[0], step):
        try:
            outs = sess.run(tensors, {inp.name: calib[i : i + step]})
        except Exception as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise VaqfError(f"onnxruntime cannot run the model on the calibration data of shape "
                            f"{list(calib.shape)} (expected {expected}): {first[:200]}") from None
        for t, o in zip(tensors, outs, strict=True):
            o = np.asarray(o)
            if o.size == 0 or o.dtype.kind != "f":
                continue  # shape arithmetic, masks: nothing to quantize
            lo[t] = min(lo[t], float(np.min(o)))
            hi[t] = max(hi[t], float(np.max(o)))
    log.info("calibrated %d tensors on %d inputs", len(tensors), calib.shape[0])
    return {t: (lo[t], hi[t]) for t in tensors}
