"""``arr train`` end to end on CPU: a random toy policy saved to a folder, the offline scene VLM judge,
2 steps, then resume; ``--gpus 2`` under torchrun (gloo); and the config errors a user sees."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from arr_cli import main


@pytest.fixture()
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _write_config(tmp_path: Path, folder: Path, **extra: str) -> Path:
    body = f"""
seed: 0
steps: {extra.get('steps', 2)}
policy: {{kind: toy, folder: {folder}, device: cpu}}
prompts: {{source: world, count: 12, seed: 3}}
reward: {{{extra.get('reward', 'rubrics: none')}}}
lora: {{rank: 4, alpha: 8}}
num_steps: 3
prompts_per_step: 2
rollout_batch_size: 2
lr: 1.0e-3
sample_grid_every: 1
checkpoint_every: 1
"""
    path = tmp_path / "train.yaml"
    path.write_text(body)
    return path


@pytest.mark.usefixtures("one_thread")
def test_arr_train_toy_judge_and_resume(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from arr_core.sim.toy_policy import ToyPolicy

    folder = ToyPolicy.random(seed=0).save(tmp_path / "toy")
    cfg = _write_config(tmp_path, folder)
    out = tmp_path / "run"
    assert main(["train", "--config", str(cfg), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "step 2/2" in text and "LoRA:" in text
    assert (out / "lora" / "pytorch_lora_weights.safetensors").is_file()
    assert (out / "samples" / "step_000002.png").is_file()
    metrics = [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [1, 2]

    cfg4 = _write_config(tmp_path, folder, steps="3")
    # a run folder with checkpoints is resumed or started over on purpose, never silently restarted
    assert main(["train", "--config", str(cfg4), "--out", str(out)]) == 2
    assert "already has checkpoints (newest step_000002)" in " ".join(capsys.readouterr().err.split())
    assert main(["train", "--config", str(cfg4), "--out", str(out), "--resume", str(out)]) == 0
    assert "resumed from" in capsys.readouterr().out
    assert [json.loads(ln)["step"] for ln in (out / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3]
    assert main(["train", "--config", str(cfg4), "--out", str(out), "--fresh"]) == 0
    assert "removed the checkpoints" in capsys.readouterr().out
    assert [json.loads(ln)["step"] for ln in (out / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3]


def test_arr_train_config_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("policy: {kind: toy}\nprompts: {source: world}\nlearning_rate: 0.1\n")
    assert main(["train", "--config", str(bad)]) == 2
    assert "learning_rate" in capsys.readouterr().err
    bad.write_text("policy: {kind: flux}\nprompts: {source: world}\n")
    assert main(["train", "--config", str(bad)]) == 2
    assert "policy.folder is required" in capsys.readouterr().err
    bad.write_text("policy: {kind: toy}\nprompts: {source: world}\nprompts_per_step: 3\nrollout_batch_size: 2\n")
    assert main(["train", "--config", str(bad)]) == 2
    assert "multiple of" in capsys.readouterr().err
    # The judge needs rubrics (or 'none'); say so instead of failing later.
    folder = tmp_path / "nowhere"
    cfg = _write_config(tmp_path, folder, reward="mode: rank")
    assert main(["train", "--config", str(cfg), "--out", str(tmp_path / "r")]) == 2
    assert "needs --rubrics" in capsys.readouterr().err


@pytest.mark.usefixtures("one_thread")
def test_arr_train_checklist_judge_with_a_hard_theme(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from arr_core.sim.toy_policy import ToyPolicy

    folder = ToyPolicy.random(seed=0).save(tmp_path / "toy")
    rubrics = tmp_path / "rubrics.txt"
    rubrics.write_text("Rubric 1:\nTheme: Faithfulness\n- Tip: The image is fully faithful to the caption.\n\n"
                       "Rubric 2:\nTheme: Objects\n- Tip: All objects the caption asks for appear in the image.\n")
    home = ["--home", str(tmp_path / "home")]
    cfg = _write_config(tmp_path, folder, steps="1", reward="mode: checklist, hard_themes: [Faithfulness]")
    assert main(["train", "--config", str(cfg), "--out", str(tmp_path / "run"), "--rubrics", str(rubrics)] + home) == 0
    text = capsys.readouterr().out
    assert "checklist judge scene:" in text and "hard themes ['Faithfulness']" in text
    [m] = [json.loads(ln) for ln in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert m["step"] == 1 and m["abstain_rate"] == 0.0
    # A hard theme the rubric set does not have, and checklist mode without rubrics: exit 2, named.
    cfg = _write_config(tmp_path, folder, steps="1", reward="mode: checklist, hard_themes: [Colour]")
    assert main(["train", "--config", str(cfg), "--out", str(tmp_path / "r2"), "--rubrics", str(rubrics)] + home) == 2
    err = capsys.readouterr().err
    assert "reward.hard_themes" in err and "['Colour'] not in rubric set" in err and "'Objects'" in err
    cfg = _write_config(tmp_path, folder, steps="1", reward="mode: checklist")
    assert main(["train", "--config", str(cfg), "--out", str(tmp_path / "r3"), "--rubrics", "none"] + home) == 2
    assert "checks rubrics" in capsys.readouterr().err


def test_arr_train_refuses_torchrun_over_the_cli_and_gpus_without_a_mode(tmp_path: Path, monkeypatch,
                                                                         capsys) -> None:
    cfg = _write_config(tmp_path, tmp_path / "toy")
    assert main(["train", "--config", str(cfg), "--gpus", "2"]) == 2
    assert "needs distributed: ddp or fsdp" in capsys.readouterr().err
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(["train", "--config", str(cfg)]) == 2
    assert "starts torchrun itself" in capsys.readouterr().err


@pytest.mark.slow
def test_arr_train_gpus_2_runs_the_recipe_entry_under_torchrun(tmp_path: Path) -> None:
    """Two gloo processes on CPU through the single torchrun entry point (python -m arr_core.recipes.rpo)."""
    import os
    import subprocess
    import sys

    from arr_core.sim.toy_policy import ToyPolicy

    folder = ToyPolicy.random(seed=0).save(tmp_path / "toy")
    cfg = _write_config(tmp_path, folder, steps="1")
    cfg.write_text(cfg.read_text().replace("sample_grid_every: 1", "sample_grid_every: 0") + "distributed: ddp\n")
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    r = subprocess.run([sys.executable, "-m", "arr_cli", "train", "--config", str(cfg), "--out", str(out),
                        "--gpus", "2", "--home", str(tmp_path / "home")], capture_output=True, text=True,
                       env=env, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "LoRA:" in r.stdout and (out / "lora" / "pytorch_lora_weights.safetensors").is_file()
    assert json.loads((out / "rank0_result.json").read_text())["steps"] == 1
    assert (out / "inputs" / "train_config.json").is_file()
