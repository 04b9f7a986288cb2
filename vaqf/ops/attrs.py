"""Typed attribute records: what each op's ``node.attrs`` holds, checked by ``Graph.verify()`` after every pass.

``node.attrs`` stays a plain dict (passes, units and the emitter read it by key); the record of an op
(``OpSpec.attributes``, a tuple of :class:`Attr`) says which keys may be there, of which type, which must be,
and which are *derived*: cached from the input's type by the op's finalize function (a dense layer's
``acc_bits``, ``rows``), which ``verify()`` recomputes and compares, so a pass that retypes an input without
re-deriving them fails at once instead of sizing an accumulator wrong. An unknown key is an error too: the
record is the complete documentation of the op's attributes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from vaqf.ir import IntType, QType, TensorInfo
from vaqf.ir.qarith import Rounding

#: a check of one attribute value: None when it is well formed, else what is wrong ("must be ...")
Check = Callable[[Any], str | None]


@dataclass(frozen=True)
class Attr:
    """One attribute of an op: its key, its type (a check), whether it must be present, whether it is derived
    from the input's type (recomputed by verify), and what it means."""

    name: str
    check: Check
    doc: str
    required: bool = True
    derived: bool = False


def _is_int(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def integer(lo: int | None = None, hi: int | None = None) -> Check:
    def check(v: Any) -> str | None:
        if not _is_int(v):
            return "must be an integer"
        if (lo is not None and v < lo) or (hi is not None and v > hi):
            return f"must lie in [{lo if lo is not None else '-inf'}, {hi if hi is not None else 'inf'}]"
        return None
    return check


def real(positive: bool = False) -> Check:
    def check(v: Any) -> str | None:
        if not isinstance(v, (int, float, np.integer, np.floating)) or isinstance(v, (bool, np.bool_)):
            return "must be a real number"
        if not np.isfinite(v) or (positive and not v > 0):
            return "must be a finite positive number" if positive else "must be finite"
        return None
    return check


def boolean(v: Any) -> str | None:
    return None if isinstance(v, (bool, np.bool_)) else "must be True or False"


def choice(*options: str) -> Check:
    def check(v: Any) -> str | None:
        return None if isinstance(v, str) and v in options else f"must be one of {', '.join(options)}"
    return check


def rounding(v: Any) -> str | None:
    return None if isinstance(v, str) and v in Rounding.__members__ else \
        f"must name a rounding mode ({', '.join(Rounding.__members__)})"


def qtype(kind: type = QType) -> Check:  # type: ignore[assignment]
    def check(v: Any) -> str | None:
        return None if isinstance(v, kind) else f"must be a {getattr(kind, '__name__', 'QType')}"
    return check


def tensor_info(v: Any) -> str | None:
    return None if isinstance(v, TensorInfo) else "must be a TensorInfo"


def array(kind: str, ndim: int | None = None) -> Check:
    """A numpy array of integers (``kind`` "int"), reals ("float") or booleans ("bool"), of ``ndim`` axes."""
    kinds = {"int": "iu", "float": "f", "bool": "b"}[kind]

    def check(v: Any) -> str | None:
        if not isinstance(v, np.ndarray) or v.dtype.kind not in kinds:
            return f"must be a numpy array of {kind}s"
        if ndim is not None and v.ndim != ndim:
            return f"must have {ndim} axes, has {v.ndim}"
        return None
    return check


def int_list(length: int | None = None, lo: int | None = None) -> Check:
    """A list (or tuple, or 1-D integer array) of integers."""
    def check(v: Any) -> str | None:
        if isinstance(v, np.ndarray):
            ok = v.ndim == 1 and v.dtype.kind in "iu"
            items = v.tolist() if ok else []
        else:
            ok = isinstance(v, (list, tuple)) and all(_is_int(x) for x in v)
            items = list(v) if ok else []
        if not ok:
            return "must be a list of integers"
        if length is not None and len(items) != length:
            return f"must hold {length} integers, holds {len(items)}"
        if lo is not None and any(x < lo for x in items):
            return f"must hold integers of at least {lo}"
        return None
    return check


def maybe(check: Check) -> Check:
    """None, or a value passing ``check``."""
    def inner(v: Any) -> str | None:
        if v is None:
            return None
        why = check(v)
        return None if why is None else f"{why} (or None)"
    return inner


def record(*fields: Attr) -> Check:
    """A dict holding the fields (nested records: a requantization, a strided view, a block table)."""
    def check(v: Any) -> str | None:
        if not isinstance(v, dict):
            return "must be a dict"
        why = check_record(v, fields)
        return None if why is None else why
    return check


def check_record(values: dict[str, Any], fields: tuple[Attr, ...]) -> str | None:
    """The first problem of ``values`` against ``fields`` (unknown, missing or ill-typed key), or None."""
    known = {f.name: f for f in fields}
    for key in values:
        if key not in known:
            return f"attribute '{key}' is not one of this op's ({', '.join(known) or 'none'})"
    for f in fields:
        if f.name not in values:
            if f.required:
                return f"attribute '{f.name}' is missing ({f.doc})"
            continue
        why = f.check(values[f.name])
        if why is not None:
            return f"attribute '{f.name}' {why}, got {_show(values[f.name])}"
    return None


def _show(v: Any) -> str:
    if isinstance(v, np.ndarray):
        return f"array {v.dtype}{list(v.shape)}"
    text = repr(v)
    return f"{type(v).__name__} {text[:60]}"


# ---- records shared by several ops -----------------------------------------------------------------

def requant_fields() -> tuple[Attr, ...]:
    """A requantization ``saturate(round((x - zp_x) * mantissa / 2**shift) + zero_point)`` to ``qtype``."""
    return (
        Attr("mantissa", array("int", 1), "per-channel multipliers (one, or one per output channel), < 2**31"),
        Attr("shift", array("int", 1), "per-channel right shifts, as many as mantissas"),
        Attr("zero_point", integer(), "the output's zero point, inside qtype"),
        Attr("qtype", qtype(IntType), "the output's integer type"),
        Attr("scale", array("float", 1), "the output's real scale, [1]"),
        Attr("rounding", rounding, "how the shift rounds (a vaqf.ir.qarith.Rounding name)"),
        Attr("bipolar", boolean, "a bipolar output (QONNX BipolarQuant): +1 where the input is at least its zero "
             "point, else -1, as saturate(2 * x + 1) into [-1, 1] (mantissa 2, shift 0, zero_point 1); the "
             "output's zero point is 0", required=False),
        Attr("offset", array("int", 1), "[C] per-channel offsets added to the product before the shift: a bias "
             "finer than one input step (BatchNormalization folded ahead of a multi-level quantizer), "
             "|offset| < 2**24", required=False),
    )


REQUANT = record(*requant_fields())

VIEW = record(
    Attr("shape", int_list(lo=1), "the operand's shape as the product reads it"),
    Attr("strides", int_list(), "element strides over the input's flat elements, one per axis"),
    Attr("base", integer(lo=0), "the flat index of element [0, ..., 0]"),
    Attr("factor", real(positive=True), "a scale factor the view also applies (a folded rescale)",
         required=False),
)
