"""Under torchrun, a decision that only one rank takes (skip an update, stop training) is agreed by all
ranks before the collective that depends on it: 2 gloo ranks on CPU, never a hang.

Before the fix, a rank whose groups all abstained skipped its optimizer step while the other rank waited
in the gradient all-reduce for it. The worker's process group has a 60 s collective timeout and the
launch a 240 s one, so a regression fails the test instead of hanging it.

This file is also the worker: ``python -m torch.distributed.run --nproc_per_node 2 THIS OUT``. It runs
three trainings in one process group (each rank records what it saw in ``OUT/rank{r}.pt``):

* ``mixed``: step 1, rank 1's groups all abstain (rank 0's win); step 2, a required reward component
  fails on rank 0 only; step 3, both train;
* ``nan``: a non-finite reward on rank 0 at step 1 (a NaN advantage, so a non-finite loss);
* ``abstain``: rank 1's groups abstain at steps 1 and 2 (rank 0's win);
* ``fsdp_mixed``: ``mixed`` with ``distributed: fsdp``;
and an FSDP optimizer step whose weights turn non-finite in rank 1's shard only.
"""

from __future__ import annotations

import json
import sys
from datetime import timedelta
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent


class Scripted:
    """A deterministic judge (redness ranking) that abstains, fails the step or returns a non-finite
    reward on the calls ``plan`` names for this rank. One call per rollout batch, so call k is batch k
    of the run (``prompts_per_step / rollout_batch_size`` calls per step)."""

    def __init__(self, plan: dict[int, str]) -> None:
        self.plan, self.calls = plan, 0

    async def score(self, prompts, groups, sources=None):
        from conftest import redness

        from arr_core.rewards import GroupOutcome

        what, self.calls = self.plan.get(self.calls), self.calls + 1
        out = []
        for p, g in zip(prompts, groups, strict=True):
            if what in ("abstain", "fail"):
                details = {"step_failed": "required component 'checker' failed (test)"} if what == "fail" else None
                out.append(GroupOutcome([0.0] * len(g), "abstain", None, 0.0, details))
                continue
            scores = [redness(p, im) for im in g]
            order = sorted(range(len(g)), key=lambda k: -scores[k])
            rewards = [0.0] * len(g)
            for place, k in enumerate(order):
                rewards[k] = 1.0 - place / max(len(g) - 1, 1)
            if what == "nan":
                rewards[0] = float("inf")  # centred: inf - inf = NaN
            out.append(GroupOutcome(rewards, "win", [order.index(k) + 1 for k in range(len(g))], 0.0))
        return out


def _worker(out: Path) -> None:
    sys.path.insert(0, str(HERE))
    import torch.distributed as dist
    from conftest import PROMPTS, TinyFluxPolicy
    from rpo_train_helper import train

    from arr_core.errors import ArrError
    from arr_core.rpo.checkpoint import _full
    from arr_core.rpo.config import TrainConfig
    from arr_core.rpo.distributed import cleanup, init_from_env

    torch.set_num_threads(1)
    dist.init_process_group("gloo", timeout=timedelta(seconds=60))  # a hang becomes an error
    ctx = init_from_env("gloo")

    def cfg(distributed: str) -> TrainConfig:
        return TrainConfig.model_validate(dict(
            policy={"kind": "toy"}, prompts={"source": "world"}, num_steps=3, group_size=2, prompts_per_step=2,
            rollout_batch_size=1, accumulate=2, lr=1e-2, steps=3, sample_grid_every=0, checkpoint_every=0,
            lora={"rank": 2, "alpha": 4}, distributed=distributed))
    # 2 batches per step (calls 2s, 2s+1 in step s+1); 2 trained steps per batch, accumulate 2:
    # one optimizer step per batch, so one agreement per batch.
    mixed = {0: {2: "fail"}, 1: {0: "abstain", 1: "abstain"}}
    plans = {"mixed": mixed, "nan": {0: {0: "nan"}, 1: {}},
             "abstain": {0: {}, 1: {0: "abstain", 1: "abstain", 2: "abstain", 3: "abstain"}}, "fsdp_mixed": mixed}
    saved: dict[str, dict] = {}
    for name, plan in plans.items():
        policy = TinyFluxPolicy(seed=0)
        lines: list[str] = []
        rec: dict = {}
        try:
            res = train(policy, Scripted(plan[ctx.rank]), PROMPTS, cfg(name.split("_")[0] if "_" in name else "ddp"),
                        out / name, progress=lines.append, dist_ctx=ctx)
            rec["lora"] = {n: _full(p) for n, p in res.model.named_parameters() if p.requires_grad}
            rec["code"] = 0
        except ArrError as e:
            rec["code"], rec["error"] = e.exit_code, str(e)
        rec["lines"] = lines
        metrics = out / name / "metrics.jsonl"
        rec["metrics"] = [json.loads(ln) for ln in metrics.read_text().splitlines()] if metrics.exists() else []
        saved[name] = rec
    saved["fsdp_weights"] = _fsdp_weights_check(ctx)
    torch.save(saved, out / f"rank{ctx.rank}.pt")
    cleanup(ctx)


def _fsdp_weights_check(ctx) -> dict:
    """An FSDP rank checks only its own shards for non-finite weights after an update: rank 1's shard
    is poisoned, rank 0's is finite; both must refuse the step (exit code 5)."""
    from torch.distributed.fsdp import fully_shard

    from arr_core.errors import ArrError
    from arr_core.rpo.trainer import _optimizer_step

    torch.manual_seed(0)
    lin = torch.nn.Linear(4, 4, bias=False)
    fully_shard(lin)
    lin(torch.ones(2, 4)).sum().backward()
    if ctx.rank == 1:
        with torch.no_grad():
            lin.weight.to_local().fill_(float("nan"))
    params = list(lin.parameters())
    opt = torch.optim.AdamW(params, lr=1e-3)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    try:
        _optimizer_step(opt, sched, params, 1.0, ctx, True, 1)
    except ArrError as e:
        return {"code": e.exit_code, "error": str(e)}
    return {"code": 0}


def test_one_rank_skipping_or_stopping_is_agreed_by_both(tmp_path: Path) -> None:
    from rpo_train_helper import torchrun

    torchrun(Path(__file__).resolve(), str(tmp_path), timeout=240)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in (0, 1))

    # mixed: step 1 trains on rank 0's verdicts (rank 1 gives a zero gradient, as an abstaining batch
    # does in one process), step 2 is dropped on both ranks, step 3 trains; no stop, same LoRA.
    a0, a1 = r0["mixed"], r1["mixed"]
    assert a0["code"] == a1["code"] == 0, (a0.get("error"), a1.get("error"))
    assert [m["optimizer_steps"] for m in a0["metrics"]] == [2, 0, 2]
    assert [m["abstain_rate"] for m in a0["metrics"]] == [0.5, 0.25, 0.0]
    assert a0["lora"].keys() == a1["lora"].keys() and a0["lora"]
    assert all(torch.equal(a0["lora"][n], a1["lora"][n]) for n in a0["lora"])
    assert any("lora_B" in n and t.abs().sum() > 0 for n, t in a0["lora"].items())
    assert ("step 1: rank 1: the judge abstained on every group; the other ranks' verdicts updated the policy "
            "(2 optimizer steps)") in a1["lines"], a1["lines"]
    assert any("step 2: rank 0: required component 'checker' failed" in ln and "not updated" in ln
               for ln in a0["lines"]), a0["lines"]
    assert any("step 2: a required reward component failed on another rank" in ln for ln in a1["lines"])

    # the same under FSDP, where every forward and backward is a collective: a rank with no verdict
    # still runs its units (zero loss weight), so the ranks stay in step; the same updates as DDP's
    f0, f1 = r0["fsdp_mixed"], r1["fsdp_mixed"]
    assert f0["code"] == f1["code"] == 0, (f0.get("error"), f1.get("error"))
    assert [m["optimizer_steps"] for m in f0["metrics"]] == [2, 0, 2]
    assert f0["lora"].keys() == a0["lora"].keys()
    assert all(torch.equal(f0["lora"][n], f1["lora"][n]) for n in f0["lora"])
    assert all(torch.allclose(f0["lora"][n], a0["lora"][n], atol=1e-5) for n in f0["lora"])

    # FSDP, non-finite weights in rank 1's shard only: both ranks refuse the update
    assert r0["fsdp_weights"]["code"] == r1["fsdp_weights"]["code"] == 5, (r0["fsdp_weights"], r1["fsdp_weights"])
    assert "non-finite LoRA weights" in r0["fsdp_weights"]["error"]

    # nan: rank 0's loss is non-finite; both stop at once with exit code 5, rank 0 says why
    n0, n1 = r0["nan"], r1["nan"]
    assert n0["code"] == n1["code"] == 5
    assert "non-finite loss" in n0["error"] and "rank 0" in n1["error"], (n0["error"], n1["error"])
    assert n0["metrics"] == [] and not (tmp_path / "nan" / "lora").exists()

    # abstain: rank 1 gets no verdict for 2 steps in a row: both stop after step 2 (step 1's line is
    # written; rank 0's verdicts did update the policy at step 1)
    b0, b1 = r0["abstain"], r1["abstain"]
    assert b0["code"] == b1["code"] == 5
    assert "abstained on every group for 2 steps" in b1["error"] and "rank 1" in b0["error"]
    assert [m["optimizer_steps"] for m in b0["metrics"]] == [2]


if __name__ == "__main__":
    _worker(Path(sys.argv[1]))
    from arr_core.rpo.distributed import exit_after_distributed_run

    exit_after_distributed_run(0)
