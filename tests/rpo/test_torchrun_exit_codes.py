"""Under torchrun, a rank's project error keeps its documented exit code (2 bad input, 3 store locked, 4
endpoint failed, 5 training health): torchrun itself exits 1 whatever its workers' codes, so each rank
records its error in ``<out>/.exit/rank<k>.json`` and the launcher (``arr train --gpus N``, the pipeline's
training task) raises it again. Stale files from an earlier run never speak for a later one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from arr_core.errors import ArrError, EndpointError, InputError, TrainingHealthError
from arr_core.recipes import rpo as recipe

ROOT = Path(__file__).resolve().parents[2]


def test_the_ranks_errors_come_back_by_priority_as_their_own_class(tmp_path: Path) -> None:
    out = tmp_path / "run"
    recipe.write_exit_file(out, 0, EndpointError("endpoint http://127.0.0.1:9/v1 failed: 3/3 requests"))
    recipe.write_exit_file(out, 1, TrainingHealthError("rank 1 stopped training at step 2: a non-finite loss"))
    recipe.write_exit_file(out, 2, TrainingHealthError("rank 2: non-finite loss (nan) at training step 2"))
    err = recipe.torchrun_error(out, 3)
    # training health (5) beats the transient endpoint failure (4); the rank's own reason beats another naming it
    assert type(err) is TrainingHealthError and err.exit_code == 5
    assert str(err) == "rank 2: non-finite loss (nan) at training step 2"
    recipe.write_exit_file(out, 3, InputError("prompts.jsonl: record 4: field 'prompt': empty"))
    err = recipe.torchrun_error(out, 4)
    assert type(err) is InputError and err.exit_code == 2 and "record 4" in str(err)  # bad input beats all
    rec = json.loads((out / ".exit" / "rank3.json").read_text())
    assert rec == {"rank": 3, "exit_code": 2, "error": "InputError",
                   "message": "prompts.jsonl: record 4: field 'prompt': empty"}
    assert sorted(p.name for p in (out / ".exit").iterdir()) == [f"rank{k}.json" for k in range(4)]  # no temp files


def test_a_stale_exit_file_does_not_speak_for_a_later_failed_launch(tmp_path: Path) -> None:
    out = tmp_path / "run"
    recipe.write_exit_file(out, 0, TrainingHealthError("from an earlier run"))
    (out / ".exit" / "rank1.json").write_text("{not json")  # unreadable: never taken for a code
    with pytest.raises(ArrError) as e:  # a launch that fails without a project error (a crash): exit 1
        recipe.run_torchrun([sys.executable, "-c", "raise SystemExit(1)"], out, 2)
    assert type(e.value) is ArrError and e.value.exit_code == 1 and "see the ranks' output" in str(e.value)
    assert not list((out / ".exit").iterdir())


def _config(tmp_path: Path, name: str, lr: str) -> Path:
    from arr_core.sim.toy_policy import ToyPolicy

    folder = tmp_path / "toy"
    if not folder.exists():
        ToyPolicy.random(seed=0).save(folder)
    path = tmp_path / f"{name}.yaml"
    path.write_text(f"""
seed: 0
steps: 1
policy: {{kind: toy, folder: {folder}, device: cpu}}
prompts: {{source: world, count: 12, seed: 3}}
reward: {{rubrics: none}}
lora: {{rank: 4, alpha: 8}}
num_steps: 3
prompts_per_step: 2
rollout_batch_size: 2
lr: {lr}
sample_grid_every: 0
checkpoint_every: 0
distributed: ddp
""")
    return path


def test_arr_train_in_one_process_keeps_exit_5(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import torch

    from arr_cli import main

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        code = main(["train", "--config", str(_config(tmp_path, "bad", ".inf")), "--out", str(tmp_path / "run"),
                     "--home", str(tmp_path / "home")])
    finally:
        torch.set_num_threads(before)
    assert code == 5 and "non-finite LoRA weights" in " ".join(capsys.readouterr().err.split())
    assert not (tmp_path / "run" / ".exit").exists()  # exit files are for torchrun runs only


def _arr_train_gpus_2(tmp_path: Path, cfg: Path, out: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "arr_cli", "train", "--config", str(cfg), "--out", str(out),
                           "--gpus", "2", "--home", str(tmp_path / "home")], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=240)


@pytest.mark.slow
def test_arr_train_gpus_2_exits_5_with_the_reason_and_ignores_stale_exit_files(tmp_path: Path) -> None:
    # A successful run in a folder holding an earlier run's exit file: exit 0, the stale file is gone.
    good = tmp_path / "good"
    recipe.write_exit_file(good, 1, EndpointError("endpoint of an earlier run failed"))
    r = _arr_train_gpus_2(tmp_path, _config(tmp_path, "good", "1.0e-3"), good)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "LoRA:" in r.stdout and not list((good / ".exit").iterdir())

    # A non-finite learning rate: every rank refuses the non-finite LoRA weights (TrainingHealthError);
    # torchrun exits 1, `arr train` exits 5 and says why.
    bad = tmp_path / "bad"
    r = _arr_train_gpus_2(tmp_path, _config(tmp_path, "bad", ".inf"), bad)
    assert r.returncode == 5, r.stdout[-3000:] + r.stderr[-3000:]
    err = " ".join(r.stderr.split())
    assert "error: non-finite LoRA weights after the update of training step 1" in err
    assert "TrainingHealthError" not in r.stderr  # no worker traceback (torchrun prints its own ChildFailedError)
    assert r.stderr.strip().splitlines()[-1].startswith("error: non-finite LoRA weights")  # the last word
    assert r.stderr.count("error: non-finite") <= 2  # rank 0 (the rank that had it) and `arr train`, not rank 1
    recs = [json.loads(p.read_text()) for p in sorted((bad / ".exit").glob("rank*.json"))]
    assert recs and {(x["exit_code"], x["error"]) for x in recs} == {(5, "TrainingHealthError")}
    assert not (bad / recipe.RESULT_FILE).exists()
