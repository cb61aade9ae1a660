"""Multi-GPU RPO under ``torchrun``: one process per GPU, each rank its own prompt shard.

Gradient synchronisation (``distributed: ddp``) is a manual all-reduce of the LoRA gradients right
before each optimizer step, not a ``DistributedDataParallel`` wrapper, because:

* an RPO update runs the network several times per backward — the LoRA'd forward with grad and the
  adapter-off reference forward without — and the policy calls its own ``transformer``, not a DDP
  wrapper; DDP's reducer only works when every forward goes through the wrapper and expects one
  backward per forward (or ``no_sync`` bookkeeping for accumulation);
* only the LoRA weights train (a few MB to ~100 MB), so one flattened all-reduce per optimizer step
  costs little, and "every rank makes the same number of optimizer steps" already holds because all
  ranks share the config.

Per-rank decisions that change whether a collective runs (an optimizer step applied or skipped,
training stopped) are agreed first with ``agree`` (one all-reduce MAX of a few ints per optimizer
step): otherwise a rank that skips the gradient all-reduce leaves the others waiting in it for ever.

Each rank starts from the same seed-derived LoRA init and the main rank broadcasts it anyway, so the
weights stay identical on all ranks (tested with 2 gloo processes on CPU). Rank 0 writes the LoRA,
optimizer and metrics; every rank writes its own RNG/data state for exact resume.

``distributed: fsdp`` (models whose frozen base does not fit on one GPU): ``shard_fsdp`` applies
PyTorch's FSDP2 ``fully_shard`` to every transformer block and to the root after LoRA injection;
FSDP then reduce-scatters the gradients itself, so the manual all-reduce is skipped. Checkpoints
gather full tensors (``arr_core.rpo.checkpoint``). Tested with 2 gloo processes on CPU (training,
agreement across ranks, exact resume); not yet on GPUs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1


def init_from_env(backend: str | None = None) -> DistContext:
    """Join the process group that ``torchrun`` describes in RANK/WORLD_SIZE/LOCAL_RANK/MASTER_ADDR
    (nccl on CUDA, gloo on CPU). Without those variables: a single process, nothing initialised."""
    if "WORLD_SIZE" not in os.environ or int(os.environ["WORLD_SIZE"]) == 1:
        return DistContext()
    rank, world, local = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ["LOCAL_RANK"])
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(local)
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    return DistContext(rank, world, local)


def broadcast_parameters(params: list[torch.nn.Parameter], ctx: DistContext, src: int = 0) -> None:
    """Make every rank's copy of ``params`` equal to rank ``src``'s."""
    if not ctx.active:
        return
    with torch.no_grad():
        for p in params:
            dist.broadcast(p.data, src=src)


def all_reduce_grads(params: list[torch.nn.Parameter], ctx: DistContext) -> None:
    """Average the gradients of ``params`` over ranks (one flattened all-reduce)."""
    if not ctx.active:
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1).float() for g in grads])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat /= ctx.world_size
    offset = 0
    for p, g in zip(params, grads, strict=True):
        n = g.numel()
        p.grad = flat[offset:offset + n].view_as(p).to(p.dtype)
        offset += n


def _collective_device() -> torch.device:
    """Where small host values go for a collective: the current GPU under nccl (it reduces only CUDA
    tensors), else the CPU."""
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def all_reduce_mean(values: dict[str, float], ctx: DistContext) -> dict[str, float]:
    """Mean of scalar metrics over ranks (keys in a stable order); max for keys ending in '_max'."""
    if not ctx.active:
        return values
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=_collective_device())
    mx = t.clone()
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    dist.all_reduce(mx, op=dist.ReduceOp.MAX)
    return {k: (float(mx[i]) if k.endswith("_max") else float(t[i]) / ctx.world_size) for i, k in enumerate(keys)}


def agree(flags: list[int], ctx: DistContext) -> list[int]:
    """Every rank's decision flags (small non-negative ints) → their element-wise maximum over ranks, the
    same list on every rank: one all-reduce (MAX) of a few integers, and one host read-back. A decision
    that changes whether a collective runs (an optimizer step applied or skipped, training stopped) is
    agreed with it first; else a rank that skips leaves the others waiting in the collective for ever.
    Single process: the flags unchanged, no collective."""
    if not ctx.active:
        return list(flags)
    t = torch.tensor(flags, dtype=torch.int64, device=_collective_device())
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return [int(v) for v in t.tolist()]


def barrier(ctx: DistContext) -> None:
    if ctx.active:
        dist.barrier()


def shard_fsdp(transformer: torch.nn.Module, block_attrs: tuple[str, ...] = ("transformer_blocks",
               "single_transformer_blocks")) -> torch.nn.Module:
    """FSDP2: shard each block in ``transformer.<block_attrs>`` and the root (after ``add_lora``).

    Parameters keep their dtype (frozen bf16 base, fp32 LoRA need separate groups: FSDP2 shards per
    parameter, so mixed dtypes inside one block are allowed)."""
    from torch.distributed.fsdp import fully_shard

    for attr in block_attrs:
        for block in getattr(transformer, attr, []):
            fully_shard(block)
    fully_shard(transformer)
    return transformer


def exit_after_distributed_run(code: int = 0) -> None:
    """End a torchrun worker process now, skipping interpreter finalization: flush stdio and logging,
    then ``os._exit``. Call it after ``cleanup`` once the run's outputs are written. Gloo's C++ worker
    threads can abort the process while the interpreter tears down ("terminate called without an
    active exception", SIGABRT; the abandoned pull request pytorch/pytorch#179291 describes the
    mechanism). A 2-rank FSDP test run aborted that way in CI under load even after ``cleanup``'s
    barrier and ``destroy_process_group``, and torchrun then reports a finished run as failed."""
    import logging
    import sys

    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # closed or broken pipe: nothing more to flush
            pass
    logging.shutdown()
    os._exit(code)


def cleanup(ctx: DistContext, synchronize: bool = True) -> None:
    """Tear the process group down. With ``synchronize`` (after a successful run) a barrier comes
    first, so no rank destroys its gloo/NCCL group and exits while another still has work in flight
    on it: without it a 2-rank gloo run aborted once at exit in CI under load ("terminate called
    without an active exception" on rank 1, after both ranks had written their results). After a
    failure pass False: the other ranks may be blocked elsewhere, and a barrier would hang until the
    collective timeout instead of letting torchrun stop the job."""
    if ctx.active and dist.is_initialized():
        if synchronize:
            dist.barrier()
        dist.destroy_process_group()
