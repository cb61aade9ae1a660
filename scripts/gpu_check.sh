#!/usr/bin/env bash
# The GPU check in one command (issue 22): on a machine with a CUDA GPU and no network,
#   1. install only the packages that are missing, from wheels the caller brings in .whl/,
#   2. run the `gpu` test tier (tests/rpo/test_gpu.py: ratio 1 in bf16, KL 0 at init, LoRA loading,
#      compile on/off, exact resume, FSDP on 2 GPUs),
#   3. run benchmarks/rpo_step.py (defaults vs the released code's pattern, MFU two ways; the default
#      configuration with rollout_batch_size auto, so the size chosen from free memory is reported),
# and write JSON under $OUT (else benchmarks/results/gpu_check_<date>/). Sized for ≤ 8 minutes on
# one H200; the stage time limits below can be lowered or raised through the environment.
#
# Bring the wheels (on a machine with network, in the checkout; see NOTES "The GPU machine"):
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux2014_x86_64 -d .whl diffusers==0.42.1 pydantic==2.14.4 \
#     pydantic-core==2.50.5 annotated-types typing-inspection importlib_metadata typing_extensions
# (add pytest, pluggy, iniconfig if the machine has no pytest). Then:
#   bash scripts/gpu_check.sh                 # or OUT=/some/folder bash scripts/gpu_check.sh
#
# Environment: OUT (results folder), WHEELS (default .whl), SITE_DIR (install target, default a
# scratch folder), PYTHON, TESTS_TIMEOUT (s, default 180), BENCH_TIMEOUT (s, default 300),
# BENCH_STEPS (training steps per benchmark configuration, default 2; the first is not timed),
# BENCH_ROLLOUT_BATCH (the default configuration's rollout batch: a number or auto, default auto).
# Exit codes: 0 all stages passed; 1 a stage failed (see gpu_check.json); 2 no CUDA device;
# 3 a required package is missing and no wheel for it was brought.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON="${PYTHON:-$(command -v python || command -v python3 || echo python)}"
WHEELS="${WHEELS:-.whl}"
TESTS_TIMEOUT="${TESTS_TIMEOUT:-180}"
BENCH_TIMEOUT="${BENCH_TIMEOUT:-300}"
BENCH_STEPS="${BENCH_STEPS:-2}"
BENCH_ROLLOUT_BATCH="${BENCH_ROLLOUT_BATCH:-auto}"
START=$(date +%s)

say() { echo "gpu_check: $*" >&2; }

# --- 0. a CUDA device, before anything is written --------------------------------------------
if ! "$PYTHON" -c "import torch" 2>/dev/null; then
  say "PyTorch is not importable with $PYTHON: nothing to check"
  exit 2
fi
if ! "$PYTHON" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
  say "no CUDA device is present (torch.cuda.is_available() is False with $PYTHON): nothing to check;" \
      "run this on a machine with an NVIDIA GPU"
  exit 2
fi

OUT_DIR="${OUT:-benchmarks/results/gpu_check_$(date -u +%Y%m%d_%H%M%S)}"
mkdir -p "$OUT_DIR"
OUT_DIR="$(cd "$OUT_DIR" && pwd)"
say "results in $OUT_DIR"

# --- 1. install only what is missing ------------------------------------------------------------
SITE_DIR="${SITE_DIR:-${TMPDIR:-/tmp}/arr_gpu_check_site}"
TO_INSTALL=()
if [ -d "$WHEELS" ]; then
  while IFS= read -r whl; do TO_INSTALL+=("$whl"); done < <("$PYTHON" - "$WHEELS" <<'EOF'
import importlib.metadata as md
import pathlib
import sys

for whl in sorted(pathlib.Path(sys.argv[1]).glob("*.whl")):
    dist = whl.name.split("-")[0]
    try:
        md.version(dist)  # installed (wheel names use underscores; metadata lookup normalises)
    except md.PackageNotFoundError:
        print(whl)
EOF
  )
fi
if [ "${#TO_INSTALL[@]}" -gt 0 ]; then
  say "installing ${#TO_INSTALL[@]} missing wheel(s) into $SITE_DIR"
  "$PYTHON" -m pip install --no-index --no-deps --quiet --target "$SITE_DIR" "${TO_INSTALL[@]}"
fi
if [ -d "$SITE_DIR" ]; then
  export PYTHONPATH="$SITE_DIR${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
MISSING=$("$PYTHON" - <<'EOF'
import importlib

need = ["diffusers", "transformers", "peft", "pydantic", "yaml", "PIL", "numpy", "safetensors", "pytest"]
missing = []
for mod in need:
    try:
        importlib.import_module(mod)
    except Exception:
        missing.append(mod)
print(" ".join(missing))
EOF
)
if [ -n "$MISSING" ]; then
  say "missing and no wheel brought for: $MISSING (put their wheels in $WHEELS/)"
  exit 3
fi

# --- 2. the gpu test tier, 3. the step benchmark -------------------------------------------------
stage() {  # name, timeout, command...: runs it, logs to $OUT_DIR/<name>.log, records rc and seconds
  local name=$1 limit=$2
  shift 2
  local t0 rc=0
  t0=$(date +%s)
  say "$name (limit ${limit}s)"
  timeout --kill-after=15 "$limit" "$@" 2>&1 | tee "$OUT_DIR/$name.log" || rc=$?
  echo "$name $rc $(( $(date +%s) - t0 ))" >> "$OUT_DIR/stages.txt"
}
: > "$OUT_DIR/stages.txt"
stage gpu_tests "$TESTS_TIMEOUT" "$PYTHON" -m pytest -m gpu -q -rs -p no:cacheprovider tests/rpo/test_gpu.py \
  --junitxml "$OUT_DIR/gpu_tests.xml"
stage rpo_step "$BENCH_TIMEOUT" "$PYTHON" benchmarks/rpo_step.py --steps "$BENCH_STEPS" \
  --rollout-batch-size "$BENCH_ROLLOUT_BATCH" --json-out "$OUT_DIR/rpo_step.json"

# --- 4. the JSON summary ------------------------------------------------------------------------
"$PYTHON" - "$OUT_DIR" "$START" "${#TO_INSTALL[@]}" <<'EOF'
import importlib.metadata as md
import json
import pathlib
import sys
import time
import xml.etree.ElementTree as ET

import torch

out, start, n_installed = pathlib.Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
stages = {}
for line in (out / "stages.txt").read_text().splitlines():
    name, rc, secs = line.split()
    stages[name] = {"exit_code": int(rc), "seconds": int(secs), "timed_out": rc in ("124", "137")}
tests = []
if (out / "gpu_tests.xml").is_file():
    for case in ET.parse(out / "gpu_tests.xml").getroot().iter("testcase"):
        outcome, detail = "passed", None
        for tag in ("failure", "error", "skipped"):
            node = case.find(tag)
            if node is not None:
                outcome, detail = tag, node.get("message")
                break
        tests.append({"test": f"{case.get('classname')}::{case.get('name')}", "outcome": outcome,
                      "seconds": float(case.get("time", 0)), "detail": detail})
    (out / "gpu_tests.json").write_text(json.dumps(tests, indent=1) + "\n")


def version(dist):
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return None


bench = {}
if (out / "rpo_step.json").is_file():
    bench = json.loads((out / "rpo_step.json").read_text()).get("configs", {}).get("default", {})
summary = {
    "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    "devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
    "torch": torch.__version__, "cuda": torch.version.cuda,
    "versions": {d: version(d) for d in ("diffusers", "transformers", "peft", "pydantic", "accelerate")},
    "wheels_installed": n_installed, "stages": stages,
    "tests": {k: sum(t["outcome"] == k for t in tests) for k in ("passed", "failure", "error", "skipped")},
    "rollout_batch": {k: bench.get(k) for k in ("rollout_batch_setting", "rollout_batch_size", "rollout_batch_choice")},
    "total_seconds": int(time.time()) - start,
    "files": sorted(p.name for p in out.iterdir()),
}
(out / "gpu_check.json").write_text(json.dumps(summary, indent=1) + "\n")
print(json.dumps(summary, indent=1))
sys.exit(0 if all(s["exit_code"] == 0 for s in stages.values()) else 1)
EOF
