"""Training health (issue 20, item 8): divergence stops training and nothing non-finite is saved; a step
whose groups all abstain updates nothing and two in a row stop the run; checkpoints are complete or
ignored; identical runs write byte-identical LoRA files."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from rpo_train_helper import train

from arr_core.errors import TrainingHealthError
from arr_core.rewards import CallableRewarder, GroupOutcome
from arr_core.rpo.checkpoint import LORA_WEIGHT_NAME, MANIFEST, find_checkpoint
from arr_core.rpo.config import TrainConfig

pytestmark = pytest.mark.usefixtures("one_thread")


def _cfg(**kw: Any) -> TrainConfig:
    base: dict[str, Any] = dict(policy={"kind": "toy"}, prompts={"source": "world"}, num_steps=3, group_size=2,
                                prompts_per_step=2, rollout_batch_size=2, lr=1e-2, sample_grid_every=0,
                                checkpoint_every=1, lora={"rank": 2, "alpha": 4})
    base.update(kw)
    return TrainConfig.model_validate(base)


class Abstains:
    """A judge that never gives a verdict (its endpoint is down, or its answers cannot be parsed)."""

    async def score(self, prompts, groups, sources=None):
        return [GroupOutcome([0.0] * len(g), "abstain", None, 0.0) for g in groups]


def _lora(policy: Any) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in policy.transformer.named_parameters() if "lora_" in n}


def test_divergence_stops_training_and_saves_no_non_finite_lora(tmp_path: Path, make_policy: Any,
                                                               prompts: list[str], redness_fn: Any) -> None:
    with pytest.raises(TrainingHealthError, match="non-finite") as e:
        train(make_policy(seed=0), CallableRewarder(redness_fn), prompts, _cfg(steps=3, lr=float("inf")),
              tmp_path / "run", progress=None)
    assert e.value.exit_code == 5
    assert not (tmp_path / "run" / "lora").exists()
    assert not list((tmp_path / "run").glob("checkpoints/step_*"))  # the first step already diverged


def test_all_abstaining_steps_update_nothing_and_stop_the_run(tmp_path: Path, make_policy: Any,
                                                             prompts: list[str]) -> None:
    policy = make_policy(seed=0)
    lines: list[str] = []
    with pytest.raises(TrainingHealthError, match="abstained on every group for 2 steps"):
        train(policy, Abstains(), prompts, _cfg(steps=4, beta=0.5), tmp_path / "run", progress=lines.append)
    assert sum("the policy was not updated" in ln for ln in lines) == 2
    metrics = [json.loads(ln) for ln in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [m["optimizer_steps"] for m in metrics] == [0]  # logged before the second step raised
    # Not even AdamW's weight decay touched the adapter: it equals a fresh one made with the same seed.
    from arr_core.rpo.lora import add_lora

    fresh = make_policy(seed=0)
    torch.manual_seed(0)  # as train() does before adding the LoRA
    add_lora(fresh.transformer, rank=2, alpha=4, targets=list(fresh.lora_targets), dropout=0.0)
    after, init = _lora(policy), _lora(fresh)
    assert after.keys() == init.keys() and all(torch.equal(after[k], init[k]) for k in after)


def test_resume_skips_an_incomplete_checkpoint(tmp_path: Path, make_policy: Any, prompts: list[str],
                                               redness_fn: Any) -> None:
    run = tmp_path / "run"
    train(make_policy(seed=0), CallableRewarder(redness_fn), prompts, _cfg(steps=2), run, progress=None)
    assert all((run / "checkpoints" / f"step_00000{k}" / MANIFEST).is_file() for k in (1, 2))
    # A kill during the next checkpoint's write: a 0-byte state file and no manifest.
    broken = run / "checkpoints" / "step_000003"
    broken.mkdir()
    (broken / "trainer_state.pt").write_bytes(b"")
    assert find_checkpoint(run).name == "step_000002"
    with pytest.raises(FileNotFoundError, match="incomplete"):
        find_checkpoint(broken)
    # a truncated file under a manifest is incomplete too
    state = run / "checkpoints" / "step_000002" / "trainer_state.pt"
    state.write_bytes(state.read_bytes()[:100])
    assert find_checkpoint(run).name == "step_000001"
    lines: list[str] = []
    train(make_policy(seed=0), CallableRewarder(redness_fn), prompts, _cfg(steps=3), run, resume=run,
          progress=lines.append)
    assert any("resumed from" in ln and "step_000001 at step 1" in ln and "skipped incomplete step_000002, "
               "step_000003" in ln for ln in lines), lines


_SAVE = """
import sys, torch
from arr_core.sim.toy_policy import ToyPolicy
from arr_core.rpo.lora import add_lora
from arr_core.rpo.checkpoint import save_lora
torch.manual_seed(0)
p = ToyPolicy.random(seed=0)
save_lora(add_lora(p.transformer, rank=2, alpha=4, targets=p.lora_targets), sys.argv[1])
"""


@pytest.mark.slow
def test_identical_runs_write_byte_identical_lora_files(tmp_path: Path) -> None:
    """safetensors' writer orders its metadata map differently per process (2 byte versions in 6 runs
    before the fix); the header is now re-serialised with sorted keys."""
    digests = set()
    for k in range(4):
        subprocess.run([sys.executable, "-c", _SAVE, str(tmp_path / str(k))], check=True, capture_output=True)
        data = (tmp_path / str(k) / LORA_WEIGHT_NAME).read_bytes()
        digests.add(hashlib.sha256(data).hexdigest())
        n = int.from_bytes(data[:8], "little")
        header = json.loads(data[8:8 + n])
        assert data[8:8 + n].rstrip(b" ") == json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    assert len(digests) == 1
