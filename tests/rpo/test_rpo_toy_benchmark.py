"""`benchmarks/rpo_toy.py` end to end at a tiny size: both runs, the JSON it writes, the rollout tracker."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _run(tmp_path: Path, *extra: str) -> dict:
    out = tmp_path / "res.json"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "rpo_toy.py"), "--steps", "2", "--prompts-per-step", "2",
           "--rollout-batch-size", "1", "--accumulate", "2", "--group-size", "2", "--num-steps", "3",
           "--heldout-per-tag", "1", "--seeds", "0", "--eval-steps", "2", "--seed-pairs", "8",
           "--out", str(out), *extra]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600, cwd=tmp_path)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return json.loads(out.read_text())


@pytest.mark.slow
def test_rpo_toy_benchmark_runs_both_arms_and_tracks_rollouts(tmp_path):
    data = _run(tmp_path, "--reward", "checker", "--guidance", "2", "--trained-window", "0", "2",
                "--sde-steps", "trained", "--noise-block", "4")
    assert data["base"]["n"] == 6 and data["rpo"]["n"] == 6 and data["control"]["n"] == 6
    for facts in (data["rpo_train"], data["control_train"]):  # the rollout tracking reached the results
        assert {k for k in facts if k.startswith("rollout_")} == {
            "rollout_pass_first_quarter", "rollout_pass_last_quarter", "rollout_empty_first_quarter",
            "rollout_empty_last_quarter"}
    assert data["args"]["shared_noise"] is True and data["args"]["accumulate"] == "2"
    for facts in (data["rpo_train"], data["control_train"]):  # both runs trained the guided policy
        run_cfg = json.loads((Path(facts["lora_dir"]).parent / "config.json").read_text())
        assert run_cfg["policy"]["guidance_scale"] == 2.0
        assert run_cfg["trained_window"] == [0, 2]
        assert run_cfg["sde_steps"] == "trained" and run_cfg["experimental"]["noise_block"] == 4
    assert "sde" not in data["base"]  # the all-steps SDE evaluation is not this run's sampler: skipped
    for res in (data["base"], data["rpo"], data["control"]):  # every failed image has a reason
        n_failed = sum(not ok for per_prompt in res["passed"] for ok in per_prompt)
        assert sum(n for kinds in res["failures"].values() for n in kinds.values()) == n_failed


@pytest.mark.slow
def test_rpo_toy_benchmark_control_only(tmp_path):
    data = _run(tmp_path, "--reward", "checker", "--control-only", "--train-prompts", "a photo of a red circle")
    assert data["rpo"] is None and data["control"]["n"] == 6
    assert data["args"]["train_prompts"] == ["a photo of a red circle"]
    assert set(data["deltas"]) == {"control"} and set(data["deltas"]["control"]) == {"ode", "sde"}
    d = data["deltas"]["control"]["ode"]
    assert d["delta"] == pytest.approx(data["control"]["overall"] - data["base"]["overall"])
    # the paired interval, recomputed from the per-image verdicts: normal interval of per-prompt changes
    diffs = [sum(a) / len(a) - sum(b) / len(b) for a, b in zip(data["control"]["passed"], data["base"]["passed"], strict=True)]
    m = sum(diffs) / len(diffs)
    half = 1.96 * (sum((x - m) ** 2 for x in diffs) / (len(diffs) - 1) / len(diffs)) ** 0.5
    assert d["ci95"] == pytest.approx([max(-1.0, m - half), min(1.0, m + half)])


def test_train_prompts_outside_the_grammar_are_refused_by_name():
    cmd = [sys.executable, str(ROOT / "benchmarks" / "rpo_toy.py"), "--train-prompts", "a photo of a red circle",
           "a photo of a dragon"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and "a photo of a dragon" in res.stderr and "red circle" not in res.stderr.split(":")[-1]


def test_trained_fraction_and_window_exclude_each_other():
    cmd = [sys.executable, str(ROOT / "benchmarks" / "rpo_toy.py"), "--trained-fraction", "0.5",
           "--trained-window", "0", "2"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and "--trained-fraction and --trained-window exclude each other" in res.stderr


@pytest.mark.parametrize("block,message", [("0", "--noise-block must be >= 1, got 0"),
                                           ("5", "--noise-block 5 must divide the policy's image size 32")])
def test_bad_noise_block_is_refused_by_name(block, message):
    cmd = [sys.executable, str(ROOT / "benchmarks" / "rpo_toy.py"), "--noise-block", block]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert res.returncode == 2 and message in res.stderr, res.stderr[-2000:]


def test_rollout_tracker_counts_passing_and_empty_images():
    """RolloutAccuracy passes the inner outcomes through and records, per batch, the share of images
    that pass their prompt's check and the share with no detected object."""
    import asyncio

    import numpy as np
    from PIL import Image

    from arr_core.sim.rewards import FixedLatencyRewarder
    from arr_core.sim.world import render
    from arr_core.sim.world.grammar import parse_prompt
    from arr_core.sim.world.scene import scene_from_spec

    mod = _bench_module()
    prompt = "a photo of a circle"
    circle = render(scene_from_spec(parse_prompt(prompt), np.random.default_rng(0)), 64)
    empty = Image.new("RGB", circle.size, circle.getpixel((0, 0)))
    tracker = mod.RolloutAccuracy(FixedLatencyRewarder())
    outs = asyncio.run(tracker.score([prompt, prompt], [[circle, empty], [empty, empty]]))
    assert len(outs) == 2 and all(o.outcome == "win" for o in outs)
    assert tracker.batches == [0.25] and tracker.empty == [0.75]


def _bench_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("rpo_toy_bench", ROOT / "benchmarks" / "rpo_toy.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_judge_mapping_reaches_the_judge_and_is_refused_for_the_checker(tmp_path):
    mod = _bench_module()
    rewarder, desc, facts = mod.build_rewarder("judge", tmp_path, 8, 0, "paper")
    assert rewarder.mapping == "paper" and desc.endswith("swap order, paper rank rewards")
    assert facts["seed_pairs"] == 8
    default, desc, _ = mod.build_rewarder("judge", tmp_path / "d", 8, 0)
    assert default.mapping is None and "rank rewards" not in desc
    cmd = [sys.executable, str(ROOT / "benchmarks" / "rpo_toy.py"), "--reward", "checker", "--judge-mapping", "paper"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and "--judge-mapping applies to --reward judge only" in res.stderr


def test_checklist_judge_mode_reaches_the_rewarder(tmp_path):
    from arr_core.judge.checklist import ChecklistRewarder

    mod = _bench_module()
    rewarder, desc, facts = mod.build_rewarder("judge", tmp_path, 8, 0, None, "checklist")
    assert isinstance(rewarder, ChecklistRewarder) and not any(rewarder.hard)
    assert "checklist judge" in desc and facts["rubric_block"]
    theme = rewarder.rubric_set.themes[0].theme
    gated, desc, _ = mod.build_rewarder("judge", tmp_path / "g", 8, 0, None, "checklist", [theme])
    n_hard = len(rewarder.rubric_set.themes[0].tips)
    assert gated.hard == [True] * n_hard + [False] * (len(gated.hard) - n_hard) and theme in desc
    only, desc, _ = mod.build_rewarder("judge", tmp_path / "w", 8, 0, None, "checklist", [theme], True)
    assert only.hard_only and f"['{theme}'] only" in desc
    with pytest.raises(ValueError, match=r"\['Nope'\] not in rubric set"):
        mod.build_rewarder("judge", tmp_path / "n", 8, 0, None, "checklist", ["Nope"])
    cmd = [sys.executable, str(ROOT / "benchmarks" / "rpo_toy.py"), "--hard-theme", "X"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and "--hard-theme applies to --judge-mode checklist only" in res.stderr
    cmd = [sys.executable, str(ROOT / "benchmarks" / "rpo_toy.py"), "--judge-mode", "checklist", "--hard-only"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and "--hard-only scores images by the --hard-theme themes alone" in res.stderr
