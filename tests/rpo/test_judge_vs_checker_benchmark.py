"""`benchmarks/judge_vs_checker.py`: the group statistics, and the script end to end at a tiny size."""

from __future__ import annotations

import importlib.util
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "judge_vs_checker.py"


def _module():
    spec = importlib.util.spec_from_file_location("judge_vs_checker", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_separation_measures_pass_fail_gap_and_spread():
    sep = _module().separation
    passed = [[True, False, False], [False, False, False]]
    # group 1: the passing image on top; group 2: no passing image, rewards spread anyway
    got = sep([[1.0, 0.45, -0.1], [1.0, 0.45, -0.1]], passed)
    assert got["pass_mean"] == pytest.approx(1.0)
    assert got["fail_mean"] == pytest.approx((0.45 - 0.1 + 1.0 + 0.45 - 0.1) / 5)
    assert got["gap"] == pytest.approx(1.0 - 0.175) and got["mixed_groups"] == 1
    assert got["within_sd"] == pytest.approx(0.449073, abs=1e-6)  # population s.d. of (1, 0.45, -0.1)
    tied = sep([[1.0, 0.175, 0.175], [0.0, 0.0, 0.0]], passed)  # same gap, failing images tied
    assert tied["gap"] == pytest.approx(got["gap"]) and tied["within_sd"] < got["within_sd"]
    none = sep([[0.0, 0.0]], [[False, False]])
    assert none["pass_mean"] is None and none["gap"] is None and none["mixed_groups"] == 0
    with pytest.raises(ValueError, match="same groups"):
        sep([[1.0, 0.0]], [[True]])


@pytest.mark.slow
def test_judge_vs_checker_runs_and_writes_both_rewards(tmp_path):
    out = tmp_path / "res.json"
    cmd = [sys.executable, str(SCRIPT), "--groups", "2", "--group-size", "3", "--num-steps", "2",
           "--seed-pairs", "8", "--prompt", "a photo of a red circle", "--out", str(out)]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path,
                         env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    data = json.loads(out.read_text())
    assert data["images"] == 6 and len(data["passed"]) == 2
    assert data["passing"] == sum(map(sum, data["passed"]))
    for name in ("judge", "checklist", "checker"):
        rewards = data["rewards"][name]
        assert [len(r) for r in rewards] == [3, 3]
        assert sum(data["outcomes"][name].values()) == 2
        # the reported spread is that of the reported rewards (population s.d. per group, averaged)
        assert data[name]["within_sd"] == pytest.approx(
            statistics.fmean(statistics.pstdev(r) for r in rewards))
    assert "judge:" in res.stdout and "checklist:" in res.stdout and "checker:" in res.stdout


def test_prompt_outside_the_grammar_is_refused_by_name():
    res = subprocess.run([sys.executable, str(SCRIPT), "--prompt", "a photo of a dragon"],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and "--prompt" in res.stderr and "dragon" in res.stderr
