#!/usr/bin/env bash
# Create .venv (Python 3.11) and install vaqf with every user extra and the dev tools (pytest, ruff, ...),
# pinned by constraints.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3.11}"
command -v "$PY" >/dev/null 2>&1 || PY=python3
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -c constraints.txt -e ".[all,dev]"
# tclsh runs the generated Tcl scripts against stand-ins in the tests (tests/backend/test_bd_tcl.py);
# Debian's tcl package provides it. Skipped when tclsh is already there or apt-get is not available.
if ! command -v tclsh >/dev/null 2>&1; then
    if command -v apt-get >/dev/null 2>&1; then
        SUDO=""
        [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1 && SUDO="sudo"
        $SUDO apt-get update -qq || true
        $SUDO apt-get install -y --no-install-recommends tcl || echo "setup: could not install tcl; the Tcl script tests will be skipped" >&2
    else
        echo "setup: tclsh not found and no apt-get; install Tcl 8.6 to run the Tcl script tests" >&2
    fi
fi
