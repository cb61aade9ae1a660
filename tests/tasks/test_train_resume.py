"""A pipeline rerun after a failure mid-training resumes from the newest checkpoint of the same
training key (issue 20, item 4), bit-exact on CPU against an uninterrupted run."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file


@pytest.mark.slow
def test_training_task_resumes_from_the_checkpoint_a_failed_attempt_left(tmp_path: Path, monkeypatch) -> None:
    from arr_core.recipes import rpo as recipe
    from arr_core.rpo.config import TrainConfig
    from tasks import train as train_task
    from tasks._env import apply_defaults

    monkeypatch.setenv("ARR_HOME", str(tmp_path / "home"))
    apply_defaults(tmp_path / "home")
    torch.set_num_threads(1)
    base = {"policy": {"kind": "toy", "device": "cpu"}, "prompts": {"source": "world", "count": 16},
            "num_steps": 3, "prompts_per_step": 2, "rollout_batch_size": 2, "lr": 1e-3, "sample_grid_every": 0,
            "checkpoint_every": 1, "lora": {"rank": 2, "alpha": 4}, "reward": {"vlm": {"backend": "scene"}}}
    full = TrainConfig.model_validate({**base, "steps": 4})
    cfg_file = tmp_path / "train_config.json"
    cfg_file.write_text(full.model_dump_json())
    straight = recipe.run(full, tmp_path / "straight", progress=None)

    # The failed attempt: the same training (same folder) stopped after 2 of its 4 steps.
    out = tmp_path / "exchange" / "tr-x" / "run"
    recipe.run(TrainConfig.model_validate({**base, "steps": 2}), out, progress=None)
    lines: list[str] = []
    monkeypatch.setattr(train_task, "_progress", lines.append)
    res = train_task.run_rpo.fn("tr-x", str(cfg_file), None, {"backend": "scene"}, str(out), "arr-test", None)
    assert res["steps"] == 4 and any("resuming training tr-x" in ln for ln in lines)
    assert any("resumed from" in ln and "step_000002" in ln for ln in lines)
    a = load_file(straight.lora_dir / "pytorch_lora_weights.safetensors")
    b = load_file(Path(res["lora_uri"]) / "pytorch_lora_weights.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
