"""`benchmarks/rpo_step.py --tiny`: the GPU step benchmark's code path (recipe, fixed-latency judge,
FLOP count, the default and the reference-pattern configuration side by side) runs on CPU and reports
an exact on-policy ratio for both."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_tiny_step_benchmark_runs_both_configurations_through_the_recipe(tmp_path: Path) -> None:
    out_file = tmp_path / "res" / "rpo_step.json"
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "rpo_step.py"), "--tiny", "--steps", "1",
                        "--judge-latency", "0.5", "--json-out", str(out_file)],
                       capture_output=True, text=True, timeout=300, cwd=tmp_path,
                       env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    out = json.loads(r.stdout[r.stdout.index("\n{") + 1:])
    assert json.loads(out_file.read_text()) == out
    assert set(out["configs"]) == {"default", "reference"}
    default, ref = out["configs"]["default"], out["configs"]["reference"]
    for run in (default, ref):
        assert run["ratio_max"] == 1.0 and run["kl_step1"] == 0.0  # on-policy ratio 1, KL 0 at LoRA init
        assert run["mfu_datasheet"] is None and run["mfu_matmul"] is None  # not applicable on CPU
        assert run["attention_backend"] == "auto" and run["model_flops_per_step"] > 0
    # The reference pattern: no compile, blocking judge per pair, one prompt per forward.
    assert (ref["compile"], ref["max_inflight_judge_batches"], ref["rollout_batch_size"]) == (False, 0, 1)
    assert (default["compile"], default["max_inflight_judge_batches"], default["rollout_batch_size"]) == (False, 2, 2)
    # 4 blocking judge calls of 0.5 s against 2 overlapped ones: the defaults are faster.
    assert ref["time_judge_s"] >= 4 * 0.5 * 0.95 and out["speedup_images_per_s"] > 1.5, out
    assert out["matmul_ceiling_tflops"] is None and out["peak_tflops_datasheet"] is None
    assert "reward: fixed latency" in r.stdout and "speed-up (img/s, default / reference)" in r.stdout
    assert "MFU vs matmul ceiling (n/a TFLOP/s)" in r.stdout
