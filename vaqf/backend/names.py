"""Identifiers for generated C++, TCL and file names: sanitized, short and collision-free.

Raw ONNX names never reach generated code; they are mapped to ``[A-Za-z_][A-Za-z0-9_]{0,40}`` and made
unique with a numeric suffix. C++ keywords and reserved spellings are avoided.
"""

from __future__ import annotations

import re

from vaqf.ir import BinaryType, FixedType, IntType, QType

_CPP_KEYWORDS = {
    "alignas", "alignof", "and", "and_eq", "asm", "auto", "bitand", "bitor", "bool", "break", "case", "catch",
    "char", "class", "compl", "const", "constexpr", "const_cast", "continue", "decltype", "default", "delete",
    "do", "double", "dynamic_cast", "else", "enum", "explicit", "export", "extern", "false", "float", "for",
    "friend", "goto", "if", "inline", "int", "long", "mutable", "namespace", "new", "noexcept", "not",
    "not_eq", "nullptr", "operator", "or", "or_eq", "private", "protected", "public", "register",
    "reinterpret_cast", "return", "short", "signed", "sizeof", "static", "static_assert", "static_cast",
    "struct", "switch", "template", "this", "thread_local", "throw", "true", "try", "typedef", "typeid",
    "typename", "union", "unsigned", "using", "virtual", "void", "volatile", "wchar_t", "while", "xor",
    "xor_eq", "main", "vaqf", "ddr",
}
MAX_LEN = 40


def sanitize(raw: str) -> str:
    s = re.sub(r"[^A-Za-z0-9_]", "_", raw.encode("ascii", "replace").decode("ascii"))
    s = re.sub(r"_+", "_", s).strip("_")[:MAX_LEN].rstrip("_")
    if not s or not (s[0].isalpha()):
        s = "n_" + s if s else "n"
    if s.lower() in _CPP_KEYWORDS or s.startswith("__") or re.match(r"_[A-Z]", s):
        s = "n_" + s
    return s


class NameTable:
    """Maps raw names to unique sanitized identifiers, stable in insertion order."""

    def __init__(self, reserved: set[str] | None = None) -> None:
        self._map: dict[str, str] = {}
        self._taken: set[str] = set(reserved or ())

    def __call__(self, raw: str) -> str:
        if raw in self._map:
            return self._map[raw]
        base = sanitize(raw)
        ident = base
        i = 1
        while ident.lower() in self._taken:
            ident = f"{base}_{i}"
            i += 1
        self._taken.add(ident.lower())
        self._map[raw] = ident
        return ident


def cpp_type(qtype: QType) -> str:
    """C++ spelling of a QType (ap_int / ap_uint / ap_fixed)."""
    if isinstance(qtype, BinaryType):
        return "ap_uint<1>"
    if isinstance(qtype, IntType):
        return f"ap_int<{qtype.bits}>" if qtype.signed else f"ap_uint<{qtype.bits}>"
    if isinstance(qtype, FixedType):
        q = {"HALF_EVEN": "AP_RND_CONV", "HALF_CEIL": "AP_RND", "HALF_UP": "AP_RND_INF",
             "HALF_DOWN": "AP_RND_ZERO", "FLOOR": "AP_TRN", "DOWN": "AP_TRN_ZERO"}.get(qtype.rounding, "AP_TRN")
        o = {"SAT": "AP_SAT", "SAT_SYM": "AP_SAT_SYM", "WRAP": "AP_WRAP"}[qtype.overflow]
        base = "ap_fixed" if qtype.signed else "ap_ufixed"
        return f"{base}<{qtype.bits}, {qtype.int_bits}, {q}, {o}>"
    raise TypeError(qtype)
