"""Reading an ONNX file safely (sizes and external data checked before anything is decoded), ONNX's
structural checks, and the model's format."""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path

import onnx
from onnx import numpy_helper

from vaqf.errors import ModelError

log = logging.getLogger(__name__)

QONNX_DOMAINS = {"qonnx.custom_op.general", "finn.custom_op.general", "onnx.brevitas", "finn"}
MAX_MODEL_BYTES = 4 * 2**30
#: the largest tensor vaqf decodes or folds (2**28 elements: 1 GiB of float32); DeiT-base's largest is 2.4M
MAX_TENSOR_ELEMENTS = 2**28
#: external data read in all (the same cap as the model file itself)
MAX_EXTERNAL_BYTES = 4 * 2**30
MAX_EXTERNAL_NAME = 1024




# ---- loading ----------------------------------------------------------------------------------
def load_model(path: str | Path) -> onnx.ModelProto:
    """Read an ONNX file, with external data from the model's own folder only."""
    p = Path(path)
    if not p.exists():
        raise ModelError(f"model file {p} does not exist")
    if not p.is_file():
        raise ModelError(f"{p} is not a file")
    if p.stat().st_size > MAX_MODEL_BYTES:
        raise ModelError(f"{p} is larger than {MAX_MODEL_BYTES >> 30} GiB")
    try:
        model = onnx.load(str(p), load_external_data=False)
    except Exception as e:
        first = str(e).splitlines()[0] if str(e) else ""
        raise ModelError(f"{p} is not a valid ONNX file ({type(e).__name__}: {first})") \
            from e
    if not model.HasField("graph") or not model.graph.node:
        raise ModelError(f"{p} holds no ONNX graph")
    base = p.resolve().parent
    total = 0
    for t in _all_tensors(model):
        if t.data_location == onnx.TensorProto.EXTERNAL:
            total += _check_external(t, p, base)
            if total > MAX_EXTERNAL_BYTES:
                raise ModelError(f"the external data of {p.name} adds up to more than {MAX_EXTERNAL_BYTES >> 30} GiB; "
                                 "refusing to read it")
        else:
            _check_elements(t)
    try:
        onnx.load_external_data_for_model(model, str(base))
    except MemoryError:
        raise ModelError(f"ran out of memory reading the external data of {p.name}") from None
    except Exception as e:
        raise ModelError(f"cannot read the external data of {p}: {_one_line(e)}") from e
    return model


def _tensor_bytes(t: onnx.TensorProto) -> int:
    """Bytes the tensor's data takes, from its declared shape and type (before anything is read)."""
    n = _check_elements(t)
    try:
        dtype = onnx.helper.tensor_dtype_to_np_dtype(t.data_type)
    except Exception:
        raise ModelError(f"tensor '{_short(t.name)}' has an unknown data type {t.data_type}") from None
    if dtype.kind in "OSU":
        raise ModelError(f"tensor '{_short(t.name)}' holds strings; vaqf reads numeric tensors only")
    bits = {onnx.TensorProto.INT4: 4, onnx.TensorProto.UINT4: 4}.get(t.data_type, dtype.itemsize * 8)
    return -(-n * bits // 8)


def _check_elements(t: onnx.TensorProto) -> int:
    """The element count the tensor declares, refused above MAX_TENSOR_ELEMENTS before anything is decoded."""
    if any(d < 0 for d in t.dims):
        raise ModelError(f"tensor '{_short(t.name)}' has a negative dimension {list(t.dims)}")
    n = math.prod(int(d) for d in t.dims)
    if n > MAX_TENSOR_ELEMENTS:
        raise ModelError(f"tensor '{_short(t.name)}' declares {n} elements (more than {MAX_TENSOR_ELEMENTS}); "
                         "refusing absurd sizes")
    return n


def _check_external(t: onnx.TensorProto, p: Path, base: Path) -> int:
    """Check one external tensor before its data is read: its file lies inside the model's folder and holds
    exactly the bytes the tensor's shape and type need (without a ``length``, ONNX would read the file to its
    end, however large). Returns the bytes to be read."""
    entries = {e.key: e.value for e in t.external_data}
    loc = entries.get("location", "")
    name = _short(t.name)
    if not loc or "\0" in loc or len(loc) > MAX_EXTERNAL_NAME or any(ord(c) < 32 for c in loc):
        raise ModelError(f"tensor '{name}' of {p.name} has an external data location that is empty, too long or "
                         "holds control characters; refusing it")
    try:
        target = (base / loc).resolve()
        inside = not os.path.isabs(loc) and base in target.parents
        is_file = inside and target.is_file()
        size = target.stat().st_size if is_file else 0
    except (OSError, ValueError, RuntimeError) as e:
        raise ModelError(f"tensor '{name}' of {p.name} points at external data '{_short(loc)}' that cannot be "
                         f"opened ({type(e).__name__})") from None
    if not inside:
        raise ModelError(f"tensor '{name}' of {p.name} points at external data '{_short(loc)}' outside the "
                         "model's folder; refusing to read it")
    if not is_file:
        raise ModelError(f"external data file '{_short(loc)}' of tensor '{name}' is missing next to {p.name}")
    need = _tensor_bytes(t)
    try:
        offset = int(entries.get("offset", 0))
        length = int(entries["length"]) if "length" in entries else None
    except ValueError:
        raise ModelError(f"tensor '{name}' of {p.name} has a non-integer external data offset or length") from None
    if offset < 0 or offset > size:
        raise ModelError(f"tensor '{name}' of {p.name}: external data offset {offset} lies outside "
                         f"'{_short(loc)}' ({size} bytes)")
    if length is None:
        if size - offset != need:
            raise ModelError(f"tensor '{name}' of {p.name} has external data without a length, and "
                             f"'{_short(loc)}' holds {size - offset} bytes after offset {offset} where the tensor "
                             f"needs {need}; refusing to read it (export the model with lengths, e.g. "
                             "onnx.save(..., save_as_external_data=True))")
    elif length != need or offset + length > size:
        raise ModelError(f"tensor '{name}' of {p.name}: external data length {length} at offset {offset} does not "
                         f"match the {need} bytes its shape needs within '{_short(loc)}' ({size} bytes)")
    return need


def _short(text: str, limit: int = 80) -> str:
    """A name as messages show it: control characters escaped, long names cut."""
    shown = text.encode("unicode_escape").decode("ascii") if not text.isprintable() else text
    return shown if len(shown) <= limit else shown[:limit] + "..."


def _all_tensors(model: onnx.ModelProto) -> list[onnx.TensorProto]:
    out = list(model.graph.initializer)
    for n in model.graph.node:
        for a in n.attribute:
            if a.type == onnx.AttributeProto.TENSOR:
                out.append(a.t)
    return out


def model_format(model: onnx.ModelProto) -> str:
    ops = {(n.domain, n.op_type) for n in model.graph.node}
    if any(d in QONNX_DOMAINS for d, _ in ops):
        return "qonnx"
    if any(t in ("QuantizeLinear", "DequantizeLinear") for _, t in ops):
        return "qdq"
    return "onnx"


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return text[:300] + ("..." if len(text) > 300 else "")


def missing_qonnx_imports(model: onnx.ModelProto) -> list[str]:
    """The QONNX custom-op domains the nodes use that the model does not import (files some tools write)."""
    imported = {o.domain for o in model.opset_import}
    return sorted({n.domain for n in model.graph.node} & QONNX_DOMAINS - imported)


def check_structure(model: onnx.ModelProto, name: str) -> None:
    """ONNX's own structural checks (SSA names, known ops of the default domain, attribute types). A QONNX
    domain the nodes use but the model does not import is imported first, at version 1, as qonnx's own
    loader does (its ops are vaqf's to decode, not ONNX's): the caller passes a model it may change."""
    for domain in missing_qonnx_imports(model):
        model.opset_import.append(onnx.helper.make_opsetid(domain, 1))
    if not model.HasField("graph") or not model.graph.node:
        raise ModelError(f"{name} holds no ONNX graph")
    try:
        onnx.checker.check_model(model, full_check=False)
    except (onnx.checker.ValidationError, Exception) as e:
        raise ModelError(f"{name} is not a valid ONNX model: {_one_line(e)}") from e


def fixed_batch(model: onnx.ModelProto) -> int:
    """The fixed leading dimension (> 1) every runtime input declares, or 0: a dataset size or a training batch
    baked into the export (Keras does this), which vaqf reads as the batch axis."""
    inits = {t.name for t in model.graph.initializer}
    lead = set()
    for i in model.graph.input:
        if i.name in inits:
            continue
        dims = i.type.tensor_type.shape.dim if i.type.tensor_type.HasField("shape") else []
        if not dims or not dims[0].HasField("dim_value") or dims[0].dim_value <= 1:
            return 0
        lead.add(int(dims[0].dim_value))
    return lead.pop() if len(lead) == 1 else 0


def free_fixed_batch(model: onnx.ModelProto) -> int:
    """Read a fixed leading dimension N > 1 of the inputs as the batch axis, in place: the inputs' and outputs'
    leading dimension becomes symbolic and a constant Reshape target that starts with N starts with -1 (so
    onnxruntime runs the calibration on any number of samples); said in the log. Returns N, or 0."""
    n = fixed_batch(model)
    if not n:
        return 0
    for v in list(model.graph.input) + list(model.graph.output):
        dims = v.type.tensor_type.shape.dim if v.type.tensor_type.HasField("shape") else []
        if dims and dims[0].HasField("dim_value") and dims[0].dim_value == n:
            dims[0].dim_param = "batch"
    del model.graph.value_info[:]  # shapes inferred for the fixed batch
    targets = {nd.input[1] for nd in model.graph.node if nd.op_type == "Reshape" and len(nd.input) > 1}
    for t in model.graph.initializer:
        if t.name in targets:
            a = numpy_helper.to_array(t)
            if a.ndim == 1 and a.size and int(a[0]) == n:
                a = a.copy()
                a[0] = -1
                t.CopyFrom(numpy_helper.from_array(a, t.name))
    log.warning("the model's inputs have a fixed leading dimension of %d: read as the batch axis (the accelerator "
                "runs one sample at a time; give any number of samples)", n)
    return n
