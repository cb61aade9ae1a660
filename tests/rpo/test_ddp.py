"""Multi-process RPO on CPU: 2 gloo ranks under torchrun end a step with identical LoRA weights.

This file is also the worker: ``python -m torch.distributed.run --nproc_per_node 2 test_ddp.py OUT MODE``.
MODE ``ddp`` uses the trainer's LoRA-gradient all-reduce; MODE ``independent`` gives each process a
single-process context with its own rank offset (no synchronisation) — the control showing that the
ranks really see different data and would drift apart without the all-reduce; MODE ``fsdp`` shards
the model with FSDP2 and also resumes from a mid-run checkpoint.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent


def _worker(out: Path, mode: str) -> None:
    sys.path.insert(0, str(HERE))
    from conftest import PROMPTS, TinyFluxPolicy, redness
    from rpo_train_helper import train

    from arr_core.rewards import CallableRewarder
    from arr_core.rpo.checkpoint import _full
    from arr_core.rpo.config import TrainConfig
    from arr_core.rpo.distributed import DistContext, cleanup, init_from_env
    from arr_core.rpo.trainer import PromptStream

    torch.set_num_threads(1)
    ctx = init_from_env("gloo")
    run_ctx = ctx if mode != "independent" else DistContext(rank=ctx.rank, world_size=1, local_rank=ctx.local_rank)

    def cfg(steps: int) -> TrainConfig:
        return TrainConfig.model_validate(dict(
            policy={"kind": "toy"}, prompts={"source": "world"}, num_steps=3,
            group_size=2, prompts_per_step=2, rollout_batch_size=2, lr=1e-2, steps=steps, sample_grid_every=0,
            checkpoint_every=1, lora={"rank": 4, "alpha": 8}, accumulate=2,
            distributed="fsdp" if mode == "fsdp" else "ddp"))

    def run(steps: int, folder: Path, resume: Path | None = None) -> dict[str, torch.Tensor]:
        policy = TinyFluxPolicy(seed=0)
        res = train(policy, CallableRewarder(redness), PROMPTS, cfg(steps), folder, resume=resume, progress=None,
                    dist_ctx=run_ctx)
        return {n: _full(p) for n, p in res.model.named_parameters() if p.requires_grad}  # gathers shards

    lora = run(2, out / f"run_{mode}")
    saved: dict[str, object] = {"lora": lora}
    if mode == "fsdp":  # exact resume through the gathered checkpoint: 1 step + resume + 1 step
        saved["resumed"] = run(2, out / "run_fsdp_b", resume=out / f"run_{mode}" / "checkpoints" / "step_000001")
    saved["prompts"] = PromptStream(len(PROMPTS), 0, run_ctx.rank, run_ctx.world_size).take(2)
    torch.save(saved, out / f"{mode}_rank{ctx.rank}.pt")
    cleanup(ctx)


def _launch(out: Path, mode: str) -> None:
    from rpo_train_helper import torchrun

    torchrun(Path(__file__).resolve(), str(out), mode)


def _load(out: Path, mode: str) -> tuple[dict, dict]:
    return (torch.load(out / f"{mode}_rank0.pt", weights_only=False),
            torch.load(out / f"{mode}_rank1.pt", weights_only=False))


def _assert_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys() and a
    for n in a:
        assert torch.equal(a[n], b[n]), n


@pytest.mark.slow
def test_two_gloo_ranks_end_with_identical_lora(tmp_path: Path) -> None:
    _launch(tmp_path, "ddp")
    r0, r1 = _load(tmp_path, "ddp")
    assert not set(r0["prompts"]) & set(r1["prompts"]), "ranks must draw disjoint prompt shards"
    _assert_equal(r0["lora"], r1["lora"])
    assert any("lora_B" in n and t.abs().sum() > 0 for n, t in r0["lora"].items()), "no update happened"
    assert (tmp_path / "run_ddp" / "lora" / "pytorch_lora_weights.safetensors").is_file()  # rank 0 saved

    # Control: the same two processes without the all-reduce drift apart.
    _launch(tmp_path, "independent")
    i0, i1 = _load(tmp_path, "independent")
    assert any(not torch.equal(i0["lora"][n], i1["lora"][n]) for n in i0["lora"])


@pytest.mark.slow
def test_fsdp_two_gloo_ranks_train_save_and_resume(tmp_path: Path) -> None:
    _launch(tmp_path, "fsdp")
    f0, f1 = _load(tmp_path, "fsdp")
    _assert_equal(f0["lora"], f1["lora"])  # gathered full tensors agree
    assert any("lora_B" in n and t.abs().sum() > 0 for n, t in f0["lora"].items()), "no update happened"
    _assert_equal(f0["lora"], f0["resumed"])  # 2 straight == 1 + resume + 1
    assert (tmp_path / "run_fsdp" / "lora" / "pytorch_lora_weights.safetensors").is_file()


def test_exit_after_distributed_run_flushes_and_keeps_the_code() -> None:
    """The worker exit skips interpreter finalization but must not lose buffered output (stdout is a
    pipe here, so fully buffered) or the exit code."""
    code = ("import logging, sys; from arr_core.rpo.distributed import exit_after_distributed_run; "
            "logging.basicConfig(stream=sys.stderr); logging.warning('logged'); "
            "print('unflushed', end=''); exit_after_distributed_run(3)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 3 and proc.stdout == "unflushed" and "logged" in proc.stderr


if __name__ == "__main__":
    _worker(Path(sys.argv[1]), sys.argv[2])
    from arr_core.rpo.distributed import exit_after_distributed_run

    exit_after_distributed_run(0)  # results are written; skip the finalization that can abort gloo
