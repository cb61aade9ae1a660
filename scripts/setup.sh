#!/usr/bin/env bash
# Install arr-pipeline and its dependencies into the current Python environment.
# - Prefers an already installed torch; where none is present it installs the 2.13.0 CPU build
#   (a bare `pip install torch` would pull a multi-GB CUDA build).
# - Idempotent: a second run only checks that everything is satisfied.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
export PIP_DISABLE_PIP_VERSION_CHECK=1

if "$PY" -c "import torch" >/dev/null 2>&1; then
  echo "setup: using installed torch $("$PY" -c 'import torch; print(torch.__version__)')"
else
  echo "setup: no torch found; installing the CPU build torch==2.13.0"
  "$PY" -m pip install -q "torch==2.13.0"
fi

extras="dev,ui"
echo "setup: installing arr-pipeline[$extras] (editable) and its dependencies"
"$PY" -m pip install -q -e ".[$extras]" 2>&1 | grep -vE "^(WARNING: Running pip as the 'root' user|$)" || true
"$PY" -c "import arr_core, prefect, mlflow, duckdb, diffusers, peft" \
  || { echo "setup: import check failed" >&2; exit 1; }
echo "setup: ok"
