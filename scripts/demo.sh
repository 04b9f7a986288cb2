#!/usr/bin/env bash
# Set up, compile the built-in QONNX MLP for a ZCU102 and check the generated C++ bit for bit.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/vaqf compile --example mlp -o out/mlp --board zcu102 --force
.venv/bin/vaqf csim out/mlp --inputs 200
