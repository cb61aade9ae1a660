"""``arr train`` end to end on CPU: a random toy policy saved to a folder, the scene-detector reward,
2 steps, then resume; and the config errors a user sees."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from arr_core.cli import main


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
reward: {{kind: {extra.get('reward', 'checker')}}}
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
def test_arr_train_toy_checker_and_resume(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from arr_core.rpo.adapters.toy import ToyPolicy

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
    assert main(["train", "--config", str(cfg4), "--out", str(out), "--resume", str(out)]) == 0
    assert "resumed from" in capsys.readouterr().out
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
    cfg = _write_config(tmp_path, folder, reward="judge")
    assert main(["train", "--config", str(cfg), "--out", str(tmp_path / "r")]) == 2
    assert "needs --rubrics" in capsys.readouterr().err


@pytest.mark.usefixtures("one_thread")
def test_arr_train_checklist_judge_with_a_hard_theme(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from arr_core.rpo.adapters.toy import ToyPolicy

    folder = ToyPolicy.random(seed=0).save(tmp_path / "toy")
    rubrics = tmp_path / "rubrics.txt"
    rubrics.write_text("Rubric 1:\nTheme: Faithfulness\n- Tip: The image is fully faithful to the caption.\n\n"
                       "Rubric 2:\nTheme: Objects\n- Tip: All objects the caption asks for appear in the image.\n")
    home = ["--home", str(tmp_path / "home")]
    cfg = _write_config(tmp_path, folder, steps="1", reward="judge, mode: checklist, hard_themes: [Faithfulness]")
    assert main(["train", "--config", str(cfg), "--out", str(tmp_path / "run"), "--rubrics", str(rubrics)] + home) == 0
    text = capsys.readouterr().out
    assert "checklist judge scene:" in text and "hard themes ['Faithfulness']" in text
    [m] = [json.loads(ln) for ln in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert m["step"] == 1 and m["abstain_rate"] == 0.0
    # A hard theme the rubric set does not have, and checklist mode without rubrics: exit 2, named.
    cfg = _write_config(tmp_path, folder, steps="1", reward="judge, mode: checklist, hard_themes: [Colour]")
    assert main(["train", "--config", str(cfg), "--out", str(tmp_path / "r2"), "--rubrics", str(rubrics)] + home) == 2
    err = capsys.readouterr().err
    assert "reward.hard_themes" in err and "['Colour'] not in rubric set" in err and "'Objects'" in err
    cfg = _write_config(tmp_path, folder, steps="1", reward="judge, mode: checklist")
    assert main(["train", "--config", str(cfg), "--out", str(tmp_path / "r3"), "--rubrics", "none"] + home) == 2
    assert "checks rubrics" in capsys.readouterr().err


@pytest.mark.parametrize("fails", [False, True])
def test_arr_train_under_torchrun_ends_early_only_after_success(tmp_path: Path, monkeypatch, capsys, fails) -> None:
    """Under torchrun, `arr train` tears the group down (barrier only after success) and then ends the
    process with ``exit_after_distributed_run`` — after printing where the LoRA is, and never after a
    failure. The distributed pieces are recorders; tests/rpo/test_ddp.py runs the real two processes."""
    from types import SimpleNamespace

    import arr_core.cli.train as cli_train
    import arr_core.rpo.distributed as distributed

    calls: list = []
    monkeypatch.setattr(distributed, "init_from_env",
                        lambda backend=None: distributed.DistContext(rank=0, world_size=2))
    monkeypatch.setattr(distributed, "cleanup", lambda ctx, synchronize=True: calls.append(("cleanup", synchronize)))
    monkeypatch.setattr(distributed, "exit_after_distributed_run",
                        lambda code=0: calls.append(("exit", code, "LoRA:" in capsys.readouterr().out)))

    def fake_run_train(cfg, **kw):
        calls.append(("train", kw["dist_ctx"].world_size))
        if fails:
            raise RuntimeError("judge endpoint down")
        return SimpleNamespace(lora_dir=tmp_path / "run" / "lora", metrics_path=tmp_path / "run" / "metrics.jsonl")

    monkeypatch.setattr(cli_train, "run_train", fake_run_train)
    cfg = _write_config(tmp_path, tmp_path / "toy")
    cfg.write_text(cfg.read_text() + "distributed: ddp\n")
    argv = ["train", "--config", str(cfg), "--out", str(tmp_path / "run")]
    if fails:  # an unexpected error propagates (torchrun reports the rank failed); no barrier, no exit(0)
        with pytest.raises(RuntimeError, match="judge endpoint down"):
            main(argv)
        assert calls == [("train", 2), ("cleanup", False)]
    else:
        assert main(argv) == 0
        assert calls == [("train", 2), ("cleanup", True), ("exit", 0, True)]
