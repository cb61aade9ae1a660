"""`benchmarks/rpo_step.py --tiny`: the GPU step benchmark's code path (recipe, fixed-latency judge,
FLOP count) runs on CPU and reports an exact on-policy ratio."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_tiny_step_benchmark_runs_through_the_recipe(tmp_path: Path) -> None:
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "rpo_step.py"), "--tiny", "--steps", "1"],
                       capture_output=True, text=True, timeout=300, cwd=tmp_path,
                       env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    out = json.loads(r.stdout[r.stdout.index("{"):])
    assert out["ratio_max"] == 1.0 and out["kl_step1"] == 0.0  # on-policy ratio 1, KL 0 at LoRA init
    assert "reward: fixed latency" in r.stdout
