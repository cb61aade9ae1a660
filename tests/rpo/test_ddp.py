"""Multi-process RPO on CPU: 2 gloo ranks under torchrun end a step with identical LoRA weights.

This file is also the worker: ``python -m torch.distributed.run --nproc_per_node 2 test_ddp.py OUT MODE``.
MODE ``ddp`` uses the trainer's LoRA-gradient all-reduce; MODE ``independent`` gives each process a
single-process context with its own rank offset (no synchronisation) — the control showing that the
ranks really see different data and would drift apart without the all-reduce.
"""

from __future__ import annotations

import os
import socket
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

    from arr_core.rpo.config import TrainConfig
    from arr_core.rpo.distributed import DistContext, cleanup, init_from_env
    from arr_core.rpo.rewards import CallableRewarder
    from arr_core.rpo.trainer import PromptStream, train

    torch.set_num_threads(1)
    ctx = init_from_env("gloo")
    run_ctx = ctx if mode == "ddp" else DistContext(rank=ctx.rank, world_size=1, local_rank=ctx.local_rank)
    cfg = TrainConfig.model_validate(dict(
        policy={"kind": "toy"}, prompts={"source": "world"}, reward={"kind": "checker"},
        num_steps=3, group_size=2, prompts_per_step=2, rollout_batch_size=2, lr=1e-2, steps=1,
        sample_grid_every=0, checkpoint_every=0, lora={"rank": 4, "alpha": 8}, distributed="ddp"))
    policy = TinyFluxPolicy(seed=0)
    train(policy, CallableRewarder(redness), PROMPTS, cfg, out / f"run_{mode}", progress=None, dist_ctx=run_ctx)
    lora = {n: p.detach().clone() for n, p in policy.transformer.named_parameters() if "lora_" in n}
    shard = PromptStream(len(PROMPTS), cfg.seed, run_ctx.rank, run_ctx.world_size).take(2)
    torch.save({"lora": lora, "prompts": shard}, out / f"{mode}_rank{ctx.rank}.pt")
    cleanup(ctx)


def _launch(out: Path, mode: str) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    with socket.socket() as sock:  # a free port (torchrun's static rendezvous hangs on port 0)
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(port),
           str(Path(__file__).resolve()), str(out), mode]
    proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


@pytest.mark.slow
def test_two_gloo_ranks_end_with_identical_lora(tmp_path: Path) -> None:
    _launch(tmp_path, "ddp")
    r0 = torch.load(tmp_path / "ddp_rank0.pt", weights_only=False)
    r1 = torch.load(tmp_path / "ddp_rank1.pt", weights_only=False)
    assert not set(r0["prompts"]) & set(r1["prompts"]), "ranks must draw disjoint prompt shards"
    assert r0["lora"].keys() == r1["lora"].keys() and r0["lora"]
    for n in r0["lora"]:
        assert torch.equal(r0["lora"][n], r1["lora"][n]), n
    assert any("lora_B" in n and t.abs().sum() > 0 for n, t in r0["lora"].items()), "no update happened"
    assert (tmp_path / "run_ddp" / "lora" / "pytorch_lora_weights.safetensors").is_file()  # rank 0 saved

    # Control: the same two processes without the all-reduce drift apart after one step.
    _launch(tmp_path, "independent")
    i0 = torch.load(tmp_path / "independent_rank0.pt", weights_only=False)
    i1 = torch.load(tmp_path / "independent_rank1.pt", weights_only=False)
    assert any(not torch.equal(i0["lora"][n], i1["lora"][n]) for n in i0["lora"])


if __name__ == "__main__":
    _worker(Path(sys.argv[1]), sys.argv[2])
