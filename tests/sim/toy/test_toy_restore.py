"""`restoration_accuracy`: noised correct renders finished by the ODE from each level of the schedule.

Two policies with known answers drive the real sampler, renderer, detector and checker: an oracle
whose velocity points at the true render (every row must pass exactly as the clean renders do) and
a blank one that points at the empty background (every row but the last, which returns the renders
untouched, must fail as empty)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from arr_core.sim.toy_eval import restoration_accuracy
from arr_core.sim.toy_policy import ToyPolicy, images_to_latents
from arr_core.sim.world import BACKGROUND, check_spec, detect, render, sample_spec, scene_from_spec

SEED = 5


def _specs():
    rng = np.random.default_rng(0)
    return [sample_spec(rng, tag) for tag in ("single_object", "two_object", "colors") for _ in range(3)]


def _policy_towards(target: torch.Tensor) -> ToyPolicy:
    policy = ToyPolicy.random(seed=0, width=32, layers=1)

    def velocity(x, sigma, cond):  # the exact flow towards `target` (x_σ = (1−σ)·target + σ·ε)
        return (x - target[: x.shape[0]]) / sigma.view(-1, 1, 1, 1)

    policy.velocity = velocity
    return policy


def test_oracle_restores_every_level_and_blank_policy_empties_all_but_the_renders():
    specs = _specs()
    rng = np.random.default_rng(SEED)  # the renders restoration_accuracy makes with seed=SEED
    renders = [render(scene_from_spec(s, rng), size=32) for s in specs]
    x0 = images_to_latents(renders, 32)
    policy = _policy_towards(x0)
    clean = [check_spec(s, detect(im))["passed"]
             for s, im in zip(specs, policy.decode(x0), strict=True)]
    assert sum(clean) >= 7  # clean 32 px renders pass the detector's check almost always

    rows = restoration_accuracy(policy, specs, steps=4, seed=SEED)
    assert [r["start"] for r in rows] == [0, 1, 2, 3, 4]
    assert [r["sigma"] for r in rows] == [1.0, 0.75, 0.5, 0.25, 0.0]
    for r in rows:
        assert r["n"] == 9 and r["overall"] == pytest.approx(sum(clean) / 9)
        assert sum(r["failures"].values()) == 9 - sum(clean)

    blank = images_to_latents([Image.new("RGB", (32, 32), BACKGROUND)] * len(specs), 32)
    rows = restoration_accuracy(_policy_towards(blank), specs, steps=4, seed=SEED)
    for r in rows[:-1]:
        assert r["overall"] == 0.0 and r["failures"] == {"empty": 9}
        assert set(r["per_tag"]) == {"single_object", "two_object", "colors"}
    assert rows[-1]["overall"] == pytest.approx(sum(clean) / 9)  # σ = 0: the renders themselves


def test_restoration_needs_specs():
    with pytest.raises(ValueError, match="specs"):
        restoration_accuracy(ToyPolicy.random(seed=0, width=32, layers=1), [], steps=2)


def test_toy_restore_benchmark_prints_and_writes_every_level(tmp_path):
    """`benchmarks/toy_restore.py` end to end on the shipped checkpoint at a tiny size."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[3]
    out = tmp_path / "restore.json"
    cmd = [sys.executable, str(root / "benchmarks" / "toy_restore.py"), "--per-tag", "1", "--steps", "2",
           "--tags", "single_object", "colors", "--out", str(out)]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path,
                         env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    assert "shipped: 2 renders" in res.stdout
    rows = json.loads(out.read_text())["results"]["shipped"]
    assert [r["sigma"] for r in rows] == [1.0, 0.5, 0.0] and all(r["n"] == 2 for r in rows)
    assert rows[-1]["overall"] == 1.0  # σ = 0 returns the clean renders, which the detector reads
    bad = subprocess.run([sys.executable, str(root / "benchmarks" / "toy_restore.py"), "--tags", "nonsense"],
                         capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert bad.returncode == 2 and "--tags: unknown ['nonsense']" in bad.stderr
