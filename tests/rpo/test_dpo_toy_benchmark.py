"""`benchmarks/dpo_toy.py` end to end at a tiny size (slow: a subprocess with rubric induction): both
runs, the pair counts, the label check against the detector and the paired intervals in its JSON."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_dpo_toy_benchmark_runs_dpo_and_control(tmp_path: Path) -> None:
    out = tmp_path / "res.json"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "dpo_toy.py"), "--pairs", "8", "--sample-steps", "2",
           "--steps", "2", "--pairs-per-step", "2", "--micro-batch", "2", "--heldout-per-tag", "1",
           "--seeds", "0", "--eval-steps", "2", "--seed-pairs", "8", "--out", str(out)]
    res = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"},
                         timeout=600, cwd=tmp_path)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    data = json.loads(out.read_text())
    p = data["pairs"]
    assert p["candidates"] == 8 and p["kept"] + p["tie"] + p["abstain"] == 8
    acc = data["label_accuracy"]
    assert acc["agree"] + acc["disagree"] + acc["equal"] == p["kept"]
    assert 0 <= data["control_flips"] <= p["kept"]
    for key in ("dpo", "control", "dpo_minus_control"):
        b = data["bootstrap"][key]
        assert b["ci95"][0] <= b["delta"] <= b["ci95"][1] and b["n_prompts"] == 6
    assert data["dpo_train"]["loss_first_quarter"] == pytest.approx(0.6931472, abs=1e-6)
    assert "DPO - control:" in res.stdout


def test_control_flips_labels_of_the_same_pairs() -> None:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from dpo_toy import flipped, paired_bootstrap
    from PIL import Image

    from arr_core.rpo.dpo import DPOPair

    ims = [Image.new("RGB", (4, 4), (k, 0, 0)) for k in range(40)]
    pairs = [DPOPair(f"p{k}", ims[2 * k], ims[2 * k + 1], margin=0.5) for k in range(20)]
    ctl = flipped(pairs, seed=0)
    assert flipped(pairs, seed=0)[3].winner is ctl[3].winner  # seeded
    flips = [c.winner is p.loser and c.loser is p.winner and c.margin == -0.5 for c, p in zip(ctl, pairs, strict=True)]
    kept = [c.winner is p.winner and c.margin == 0.5 for c, p in zip(ctl, pairs, strict=True)]
    assert all(f or k for f, k in zip(flips, kept, strict=True)) and 0 < sum(flips) < 20
    before = {"passed": [[False, False], [True, False], [False, False]]}
    after = {"passed": [[True, False], [True, True], [False, False]]}
    b = paired_bootstrap(before, after)
    assert b["delta"] == pytest.approx(1 / 3) and b["ci95"][0] <= b["delta"] <= b["ci95"][1] and b["n_prompts"] == 3
