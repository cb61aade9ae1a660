#!/usr/bin/env bash
# The main job: install, then run the whole pipeline on the embedded defaults (`arr demo`).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
bash scripts/setup.sh
exec "$PY" -m arr_cli demo "$@"
