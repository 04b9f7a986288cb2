"""One escaping rule per output language, registered once as Jinja2 filters.

Every template renders user text (board name, part and description, model and node names, file names)
through the filter of the language it lands in; identifiers never come from user text at all (they are
made by :mod:`vaqf.backend.names`, and ``cpp_ident`` only checks that). The rules:

``cpp_comment``  one line of printable ASCII inside ``//`` or ``/* */``: no newline to end the comment, no
                 ``*/`` to close it, no trailing backslash or ``??/`` trigraph to splice the next line in
``cpp_string``   the inside of a ``"..."`` literal (octal escapes: they cannot swallow a following digit
                 the way ``\\x`` escapes do)
``tcl``          one whole Tcl word, double-quoted with every ``[ $ { } ; " \\`` and whitespace inert
``tcl_quoted``   the same, for text inside a double-quoted word the template already opened
``tcl_comment``  one line after ``#`` with no backslash (continuation) and no brace (which counts even in
                 comments inside a braced body)
``cfg``          one ``key=value`` value of the Vitis cfg: printable ASCII without ``# ;``, never a newline
``make_text``    text in a Makefile comment or in a double-quoted ``echo`` of a recipe: letters, digits and
                 a few harmless punctuation marks; anything else becomes ``_``
``py_text``      inside a Python docstring or comment: printable ASCII without quotes or backslashes
``md``           Markdown text: control and bidi characters shown escaped, markup characters backslashed
``md_code``      a whole Markdown code span (a fence longer than any backtick run; ``|`` escaped for tables)
``term``         a line for the terminal: control, format (bidi) and separator characters shown escaped

HTML is escaped by Jinja2's autoescape, which :func:`environment` turns on for every template whose name
has ``.html``/``.htm``/``.xml``/``.svg`` among its suffixes (``report.html.j2`` included), not only at the end.

An escaped character is shown as ``\\xNN``, ``\\uNNNN`` or ``\\UNNNNNNNN`` (its code point), so a reader
can still tell names apart; nothing in any output language gives those a meaning where they are used.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from pathlib import PurePosixPath

import jinja2

from vaqf.errors import VaqfError

#: Unicode categories a terminal or editor does not show as a glyph: controls, format characters (the
#: bidi overrides and isolates, zero-width joiners), line/paragraph separators, surrogates, private use,
#: unassigned
_INVISIBLE = {"Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn"}
_HTML_SUFFIXES = {".html", ".htm", ".xhtml", ".xml", ".svg"}


def _code(c: str) -> str:
    o = ord(c)
    if o < 0x100:
        return f"\\x{o:02x}"
    if o < 0x10000:
        return f"\\u{o:04x}"
    return f"\\U{o:08x}"


def _ascii_escaped(text: object, special: str) -> str:
    """``text`` as printable ASCII: every character outside 0x20..0x7e, and those in ``special``, as its code."""
    return "".join(c if " " <= c <= "~" and c not in special else _code(c) for c in str(text))


def cpp_comment(text: object) -> str:
    s = _ascii_escaped(text, "\\?")  # a backslash before the newline splices lines; ?? starts trigraphs
    return s.replace("*/", "*\\x2f").replace("/*", "/\\x2a")  # neither closes nor (a warning) nests a comment


def cpp_string(text: object) -> str:
    out = []
    for c in str(text):
        if " " <= c <= "~" and c not in '"\\?':
            out.append(c)
        else:
            out.extend(f"\\{b:03o}" for b in c.encode("utf-8"))
    return "".join(out)


_CPP_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def cpp_ident(text: object) -> str:
    """An identifier made by vaqf.backend.names, checked: a name that is not one never reaches C++."""
    s = str(text)
    if not _CPP_IDENT.fullmatch(s):
        raise VaqfError(f"internal error: {s!r} reached a C++ identifier position unsanitized; please report it")
    return s


_TCL_NAMED = {"\n": "\\n", "\t": "\\t", "\r": "\\r"}


def tcl_quoted(text: object) -> str:
    out = []
    for c in str(text):
        if c in _TCL_NAMED:
            out.append(_TCL_NAMED[c])
        elif c in '[]${};"\\ #':
            out.append("\\" + c)
        elif " " <= c <= "~":
            out.append(c)
        else:  # Tcl 8.6 reads at most 4 (\u) or 8 (\U) hex digits; all are written, so none is taken from the
            # text that follows (8.6 holds only the BMP: a character beyond it reads back as U+FFFD, still inert)
            o = ord(c)
            out.append(f"\\u{o:04x}" if o < 0x10000 else f"\\U{o:08x}")
    return "".join(out)


def tcl(text: object) -> str:
    return f'"{tcl_quoted(text)}"'


def tcl_comment(text: object) -> str:
    return _ascii_escaped(text, "\\{}")


def cfg(text: object) -> str:
    return _ascii_escaped(text, "#;\\")


_MAKE_SAFE = re.compile(r"[^A-Za-z0-9 _.,:+/()@-]")


def make_text(text: object) -> str:
    return _MAKE_SAFE.sub("_", str(text))


def py_text(text: object) -> str:
    return _ascii_escaped(text, "\\\"'")


def terminal(text: object) -> str:
    """Printable text as is (non-ASCII letters included); what a terminal would act on or hide, escaped."""
    return "".join(_code(c) if unicodedata.category(c) in _INVISIBLE else c for c in str(text))


_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]<>#!|&~])")


def md(text: object) -> str:
    return _MD_SPECIAL.sub(r"\\\1", terminal(text))


def md_code(text: object) -> str:
    s = terminal(text).replace("|", "\\|")  # GFM splits table cells on | even inside a code span
    runs = [len(r) for r in re.findall(r"`+", s)]
    fence = "`" * (max(runs, default=0) + 1)
    pad = " " if s.startswith("`") or s.endswith("`") or not s.strip() else ""
    return f"{fence}{pad}{s}{pad}{fence}"


FILTERS: dict[str, Callable[[object], str]] = {
    "cpp_comment": cpp_comment, "cpp_string": cpp_string, "cpp_ident": cpp_ident, "tcl": tcl,
    "tcl_quoted": tcl_quoted, "tcl_comment": tcl_comment, "cfg": cfg, "make_text": make_text, "py_text": py_text,
    "md": md, "md_code": md_code, "term": terminal,
}


def is_html(template_name: str | None) -> bool:
    """Autoescape for HTML (and XML) templates, whatever else the file name carries (``x.html.j2``)."""
    if template_name is None:
        return True  # a template from a string: escaping is the safe default
    return any(s.lower() in _HTML_SUFFIXES for s in PurePosixPath(template_name).suffixes)


def environment(loader: jinja2.BaseLoader) -> jinja2.Environment:
    """The one Jinja2 environment shape every vaqf output is rendered with: strict, HTML autoescaped by
    :func:`is_html`, the escaping filters registered."""
    env = jinja2.Environment(loader=loader, undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
                             trim_blocks=False, lstrip_blocks=False, autoescape=is_html)
    env.filters.update(FILTERS)
    return env
