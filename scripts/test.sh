#!/usr/bin/env bash
# The test command: installs what it needs, then runs the offline CPU suite.
#   bash scripts/test.sh              # the quick tier (-m "not slow", <= 5 min on 2 cores)
#   bash scripts/test.sh -m slow      # the slow tier (end-to-end flows, torchrun, benchmarks); CI runs both
#   bash scripts/test.sh -m ""        # everything; other arguments go to pytest as they are
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 DO_NOT_TRACK=true MLFLOW_DISABLE_TELEMETRY=true
marker=(-m "not slow")
for arg in "$@"; do
  case "$arg" in -m|-m*) marker=() ;; esac
done
exec "$PY" -m pytest -q "${marker[@]}" "$@"
