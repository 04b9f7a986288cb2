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


def ort_compatible(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``model`` with an IR version onnxruntime accepts."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    if m.ir_version > ORT_MAX_IR_VERSION:
        m.ir_version = ORT_MAX_IR_VERSION
    return m


def load_calibration(path: str | Path) -> np.ndarray:
    p = Path(path)
    if not p.is_file():
        raise VaqfError(f"calibration file {p} does not exist")
    try:
        data = np.load(p, allow_pickle=False)
    except Exception as e:
        raise VaqfError(f"calibration file {p} is not a readable .npy array: {e}") from e
    if not isinstance(data, np.ndarray) or data.dtype.kind not in "fiu":
        raise VaqfError(f"calibration file {p} must hold a numeric array")
    return data.astype(np.float32)


def collect_ranges(model: onnx.ModelProto, calib: np.ndarray, tensors: list[str],
                   batch: int = 64) -> dict[str, tuple[float, float]]:
    """(min, max) of each named tensor over the calibration set."""
    import onnxruntime as ort

    m = ort_compatible(model)
    existing = {o.name for o in m.graph.output}
    for t in tensors:
        if t not in existing:
            m.graph.output.append(onnx.helper.make_empty_tensor_value_info(t))
    if len(m.graph.input) - len({i.name for i in m.graph.initializer} & {i.name for i in m.graph.input}) != 1:
        raise VaqfError("calibration supports models with exactly one input")
    inp = m.graph.input[0]
    try:
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        sess = ort.InferenceSession(m.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    except Exception as e:
        raise VaqfError(f"onnxruntime cannot run the model for calibration: {str(e).splitlines()[0]}") from e
    dims = inp.type.tensor_type.shape.dim
    sample_rank = len(dims) - 1
    if calib.ndim == sample_rank:
        calib = calib[None]
    if calib.ndim != sample_rank + 1:
        raise VaqfError(f"calibration data has shape {list(calib.shape)}; expected [N, "
                        f"{', '.join(str(d.dim_value or '?') for d in dims[1:])}]")
    lo = {t: np.inf for t in tensors}
    hi = {t: -np.inf for t in tensors}
    fixed_batch = dims[0].dim_value if dims and dims[0].HasField("dim_value") else 0
    step = 1 if fixed_batch == 1 else batch
    for i in range(0, calib.shape[0], step):
        outs = sess.run(tensors, {inp.name: calib[i : i + step]})
        for t, o in zip(tensors, outs, strict=True):
            o = np.asarray(o)
            if o.size == 0 or o.dtype.kind != "f":
                continue  # shape arithmetic, masks: nothing to quantize
            lo[t] = min(lo[t], float(np.min(o)))
            hi[t] = max(hi[t], float(np.max(o)))
    log.info("calibrated %d tensors on %d inputs", len(tensors), calib.shape[0])
    return {t: (lo[t], hi[t]) for t in tensors}
