#!/usr/bin/env bash
# Set up and run the whole test suite (C++ builds included), then lint.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/python -m pytest -q -n 2 "$@"
.venv/bin/ruff check vaqf tests examples bench
