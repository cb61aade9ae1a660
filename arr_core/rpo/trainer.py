"""Rubric Policy Optimization (RPO): the training loop.

ARR paper ("Auto-Rubric as Reward"), RPO: sample G images per prompt with a stochastic sampler,
let the rubric-conditioned VLM judge rank each group, and push the policy toward winners with a
PPO-style update on a LoRA adapter (Flow-GRPO / DanceGRPO recipe for flow-matching models).

One training step:
1. Rollouts, ``prompts_per_step / rollout_batch_size`` batches of ``rollout_batch_size × G`` images:
   the SDE sampler (``sde.py``) records every step's latents and fp32 log-probabilities. The judge
   sees the clean estimate x̂₀ = x − σ·v of the last step (``judged_image``; the last noisy sample or
   a deterministic last step are options). Each batch is sent to the judge as soon as it is decoded;
   the judge (async, in its own event-loop thread) scores batch k while batch k+1 is sampled; at
   most ``max_inflight_judge_batches`` wait at once (0: each batch is judged before the next).
2. Advantages: rewards centred within each group (``advantage: raw`` keeps the paper's raw
   rewards); ties and abstentions give 0 to the whole group; clipped to ±``adv_clip``.
3. Update: for every rollout batch (same batch size as sampling, modules in eval mode, so the
   on-policy ratio is exactly 1) and every trained denoising step, loss =
   PPO clipped surrogate max(−A·r, −A·clip(r, 1−ε, 1+ε)) + β·KL(π_θ ‖ π_ref), the analytic KL between
   the LoRA'd and the adapter-off Gaussian steps. Batches train in rollout order, each as soon as its
   own verdicts are in, so the last batches' judging overlaps the first ones' training. Gradients
   accumulate over ``accumulate`` such units (or all of them), and the last unit always ends with an
   optimizer step (AdamW, grad-norm clip, LR warm-up). Under torchrun every rank's reasons to skip that
   step or to stop are agreed first (``distributed.agree``), so the ranks skip or stop together.

Systems (``kernels.py``): rollouts and training run inside ``attention_context`` (``auto`` never
picks cuDNN attention, whose backward crashed FLUX.1-dev on an H200), and with ``compile`` the
transformer's repeated blocks are compiled and traced once on throw-away inputs before the first
step, outside the step times.

Deviations from the paper's released code, on purpose: advantages are centred (its code uses raw
rewards); the KL is the analytic Gaussian KL (its β·(log π_θ − log π_ref) has zero expected
gradient on-policy); the judge runs asynchronously and batched instead of synchronously per pair;
gradient accumulation always ends on an optimizer step; runs resume exactly. As in its code, the
judge sees the clean estimate and the last step is not trained.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import math
import threading
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from arr_core.errors import TrainingHealthError
from arr_core.rewards import GroupOutcome, GroupRewarder, detail_metrics
from arr_core.rpo.checkpoint import (
    find_checkpoint,
    incomplete_after,
    load_checkpoint,
    save_checkpoint,
    save_lora,
    write_manifest,
)
from arr_core.rpo.distributed import (
    DistContext,
    agree,
    all_reduce_grads,
    all_reduce_mean,
    barrier,
    broadcast_parameters,
    shard_fsdp,
)
from arr_core.rpo.kernels import (
    BatchChoice,
    attention_context,
    choose_batch_size,
    compile_repeated_blocks,
    free_device_bytes,
    measure_peak_bytes,
)
from arr_core.rpo.lora import add_lora
from arr_core.rpo.policy import Cond, Policy, index_cond
from arr_core.rpo.sde import StepTable


@dataclass
class TrainResult:
    lora_dir: Path
    metrics_path: Path
    steps: int
    checkpoint_dir: Path | None
    last_metrics: dict[str, Any] = field(default_factory=dict)
    # The PeftModel around policy.transformer (which now carries the trained adapter):
    # ``with result.model.disable_adapter():`` samples from the base policy.
    model: Any = None


@dataclass
class Rollout:
    """One rollout batch: b prompts × G images, n denoising steps, rows grouped by prompt."""

    prompts: list[str]
    sources: list[Image.Image] | None
    cond: Cond  # (b·G, ...)
    latents: torch.Tensor  # (n + 1, b·G, ...) fp32, latents[i] is the input of step i
    log_probs: torch.Tensor  # (n, b·G) fp32
    images: list[Image.Image]  # b·G, prompt-major
    outcomes: concurrent.futures.Future[list[GroupOutcome]] | None = None
    advantages: torch.Tensor | None = None  # (b·G,)
    all_abstained: bool = False  # no group of the batch got a verdict: it is not trained on


class PromptStream:
    """Deterministic prompt order: each epoch a seeded permutation of all prompts, rank r takes every
    world-th entry. The position (epoch, index) is the resumable data state."""

    def __init__(self, n: int, seed: int, rank: int = 0, world: int = 1) -> None:
        if n < world:
            raise ValueError(f"{n} prompts cannot be sharded over {world} ranks")
        self.n, self.seed, self.rank, self.world = n, seed, rank, world
        self.epoch, self.pos = 0, 0
        self._shard = self._make_shard()

    def _make_shard(self) -> list[int]:
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        perm = torch.randperm(self.n, generator=g).tolist()
        usable = (self.n // self.world) * self.world  # equal shard sizes keep ranks in lock-step
        return perm[:usable][self.rank::self.world]

    def take(self, k: int) -> list[int]:
        out = []
        while len(out) < k:
            if self.pos >= len(self._shard):
                self.epoch, self.pos = self.epoch + 1, 0
                self._shard = self._make_shard()
            out.append(self._shard[self.pos])
            self.pos += 1
        return out

    def state(self) -> dict[str, int]:
        return {"epoch": self.epoch, "pos": self.pos}

    def load(self, state: dict[str, int]) -> None:
        self.epoch, self.pos = int(state["epoch"]), int(state["pos"])
        self._shard = self._make_shard()


class _JudgeLoop:
    """An asyncio event loop in a daemon thread; rollouts submit coroutines and keep sampling."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="rpo-judge", daemon=True)
        self.thread.start()

    def submit(self, coro: Coroutine[Any, Any, list[GroupOutcome]]) -> concurrent.futures.Future:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join()
        self.loop.close()

    def __enter__(self) -> _JudgeLoop:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _autocast(device: torch.device, enabled: bool) -> contextlib.AbstractContextManager:
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def _velocity(policy: Policy, x: torch.Tensor, sigma: torch.Tensor, cond: Cond, bf16: bool) -> torch.Tensor:
    with _autocast(x.device, bf16):
        v = policy.velocity(x, sigma.expand(x.shape[0]), cond)
    return v.float()


def set_eval_mode(policy: Policy) -> None:
    """Every module the policy holds goes to eval mode: dropout (e.g. T5's 0.1) would make the
    recomputed log-prob differ from the sampled one, so the on-policy ratio would not be 1."""
    for value in vars(policy).values():
        if isinstance(value, torch.nn.Module):
            value.eval()
        # A diffusers pipeline held by the policy (its text encoders, VAE) is not an nn.Module itself.
        comps = getattr(value, "components", None)
        if isinstance(comps, dict):
            for module in comps.values():
                if isinstance(module, torch.nn.Module):
                    module.eval()
    policy.transformer.eval()


def attach_lora(policy: Policy, args: Any) -> tuple[Any, list[torch.nn.Parameter]]:
    """Seed, add a fresh LoRA (``args.lora_*``) to the policy's transformer, put every module in eval
    mode, enable gradient checkpointing if asked; returns the peft model and its trainable parameters
    (RPO and DPO share this setup)."""
    torch.manual_seed(args.seed)  # the LoRA A init: equal on every rank
    targets = list(args.lora_targets) if args.lora_targets else list(policy.lora_targets)
    peft_model = add_lora(policy.transformer, rank=args.lora_rank, alpha=args.lora_alpha, targets=targets,
                          dropout=args.lora_dropout)
    set_eval_mode(policy)
    peft_model.eval()
    if args.gradient_checkpointing:
        if not hasattr(policy.transformer, "enable_gradient_checkpointing"):
            raise ValueError(f"gradient_checkpointing: {type(policy.transformer).__name__} does not support it")
        policy.transformer.enable_gradient_checkpointing()
    return peft_model, [p for p in peft_model.parameters() if p.requires_grad]


@torch.no_grad()
def rollout(policy: Policy, prompts: list[str], sources: list[Image.Image] | None, *, group_size: int,
            sigmas: torch.Tensor, generator: torch.Generator, noise: str, a: float, eta: float,
            shared_initial_noise: bool, bf16: bool, sde_mask: Sequence[bool] | None = None,
            noise_block: int = 1, judged_image: str = "clean_estimate", table: StepTable | None = None) -> Rollout:
    """Sample G images per prompt with the SDE sampler, recording latents and per-step log-probs.

    ``sde_mask`` (one flag per step, default all True): steps flagged False take the deterministic
    Euler step and record a log-prob of 0 (they have no density and must not be trained).
    ``noise_block`` > 1: step noise on block × block tiles (``sde.py``, block noise).
    ``judged_image``: which latent is decoded for the judge. ``clean_estimate`` (ARR's and DanceGRPO's
    code): x̂₀ = x_{n−1} − σ_{n−1}·v from the last step's input and velocity (with x_σ = (1−σ)·x₀ + σ·ε
    and v = ε − x₀, exactly x₀ for a perfect v), which is that step's Euler result; ``last_sample``: the
    last stochastic sample x_n; ``deterministic_last_step`` (Flow-GRPO): x_n, which ``sde_mask`` must
    make an Euler step (so it equals the clean estimate).
    ``table``: the ``StepTable`` of (sigmas, noise, a, eta, noise_block) when the caller keeps one
    (the trainer builds it once per run); else it is built here. The denoising loop makes no host
    synchronisation: every check runs before it, the step maths is ``StepTable``'s (tested).
    """
    b, g, n = len(prompts), group_size, len(sigmas) - 1
    if sde_mask is not None and len(sde_mask) != n:
        raise ValueError(f"sde_mask has {len(sde_mask)} flags for {n} steps")
    if judged_image not in ("clean_estimate", "last_sample", "deterministic_last_step"):
        raise ValueError(f"judged_image must be clean_estimate, last_sample or deterministic_last_step, "
                         f"got {judged_image!r}")
    if judged_image == "deterministic_last_step" and (sde_mask is None or sde_mask[-1]):
        raise ValueError("judged_image 'deterministic_last_step' needs sde_mask[-1] False (an Euler last step)")
    tab = table if table is not None else StepTable(sigmas, kind=noise, a=a, eta=eta, noise_block=noise_block)
    sde = [True] * n if sde_mask is None else list(sde_mask)
    tab.check_density([i for i in range(n) if sde[i]])  # the checks run here, never inside the loop
    cond = policy.encode(prompts, sources)
    cond = index_cond(cond, torch.arange(b).repeat_interleave(g))
    if shared_initial_noise:
        x = policy.initial_latents(b, generator).float().repeat_interleave(g, dim=0)
    else:
        x = policy.initial_latents(b * g, generator).float()
    lats, lps = [x], []
    x0_hat = None
    for i in range(n):  # no host sync in here (tests/rpo/test_rollout_syncs.py)
        v = _velocity(policy, x, sigmas[i], cond, bf16)
        if i == n - 1 and judged_image == "clean_estimate":
            x0_hat = x - sigmas[i] * v  # fp32; bit-equal to the Euler step to σ_n = 0
        if sde[i]:
            x, lp = tab.sample(i, x, v, generator)
            lps.append(lp)
        else:
            x = tab.euler(i, x, v)
            lps.append(torch.zeros(x.shape[0], dtype=torch.float32, device=x.device))
        lats.append(x)
    images = policy.decode(x if x0_hat is None else x0_hat)
    return Rollout(prompts, sources, cond, torch.stack(lats), torch.stack(lps), images)


def step_terms(policy: Policy, peft_model: torch.nn.Module, ro: Rollout, i: int, sigmas: torch.Tensor, *,
               noise: str, a: float, eta: float, bf16: bool, need_ref: bool, noise_block: int = 1,
               table: StepTable | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Recompute step i of a stored rollout under the current LoRA: (log-prob with grad (b·G,),
    analytic KL to the adapter-off reference (b·G,), zeros when ``need_ref`` is False).

    With the run's ``table`` (built once) this makes no host synchronisation; without, one is built
    and checked here."""
    if table is None:
        table = StepTable(sigmas, kind=noise, a=a, eta=eta, noise_block=noise_block)
        table.check_density([i])
    x, x_next = ro.latents[i], ro.latents[i + 1]
    v = _velocity(policy, x, sigmas[i], ro.cond, bf16)
    mean = table.mean(i, x, v)
    log_prob = table.log_prob(i, x_next, mean)
    if not need_ref:
        return log_prob, torch.zeros_like(log_prob)
    with torch.no_grad(), peft_model.disable_adapter():
        v_ref = _velocity(policy, x, sigmas[i], ro.cond, bf16)
        mean_ref = table.mean(i, x, v_ref)
    return log_prob, table.kl(i, mean, mean_ref)


def warm_up(policy: Policy, peft_model: torch.nn.Module, params: list[torch.nn.Parameter], prompts: list[str],
            sources: list[Image.Image] | None, batch_size: int, step: int, roll_kw: dict[str, Any], *,
            need_ref: bool) -> None:
    """Run what a training step runs once, on throw-away data, so that ``torch.compile`` traces (and
    tunes) every variant before the first timed step: a rollout batch (no grad), one trained step's
    forward and backward (grad), and the adapter-off reference (no grad) when ``need_ref``.

    Leaves no trace in the run: its own sampling generator (not the run's), gradients cleared, no
    optimizer step. ``batch_size`` is the rollout batch size, so the traced shapes are the run's.
    """
    device = params[0].device
    k = [j % len(prompts) for j in range(batch_size)]
    ro = rollout(policy, [prompts[j] for j in k], [sources[j] for j in k] if sources else None,
                 generator=torch.Generator(device=device).manual_seed(0), **roll_kw)
    log_prob, kl = step_terms(policy, peft_model, ro, step, roll_kw["sigmas"], noise=roll_kw["noise"],
                              a=roll_kw["a"], eta=roll_kw["eta"], bf16=roll_kw["bf16"], need_ref=need_ref,
                              noise_block=roll_kw["noise_block"], table=roll_kw.get("table"))
    (log_prob.mean() + kl.mean()).backward()
    for p in params:
        p.grad = None


def group_advantages(outcomes: list[GroupOutcome], group_size: int, mode: str, clip: float) -> torch.Tensor:
    """(b·G,) advantages, prompt-major. ``centered``: reward − group mean; ``raw``: reward. Ties and
    abstentions give 0 to the whole group."""
    rows = []
    for k, o in enumerate(outcomes):
        if len(o.rewards) != group_size:
            raise ValueError(f"judge returned {len(o.rewards)} rewards for group {k}; expected {group_size}")
        r = torch.tensor(o.rewards, dtype=torch.float32)
        if o.outcome != "win":
            r = torch.zeros_like(r)
        elif mode == "centered":
            r = r - r.mean()
        rows.append(r)
    return torch.cat(rows).clamp(-clip, clip)


def make_grid(images: list[Image.Image], cols: int, thumb: int = 256) -> Image.Image:
    """Prompt-major images → one PNG-able grid, one row per prompt (thumbnails at most ``thumb`` px)."""
    ims = [im.convert("RGB") for im in images]
    w = min(thumb, ims[0].width)
    h = max(1, round(ims[0].height * w / ims[0].width))
    rows = math.ceil(len(ims) / cols)
    grid = Image.new("RGB", (cols * w, rows * h), "white")
    for k, im in enumerate(ims):
        grid.paste(im.resize((w, h)), ((k % cols) * w, (k // cols) * h))
    return grid


AUTO_BATCH_FILE = "rollout_batch.json"  # next to each checkpoint of an 'auto' run


def one_image_workload(policy: Policy, peft_model: torch.nn.Module, params: list[torch.nn.Parameter],
                       prompts: list[str], sources: list[Image.Image] | None, args: RPOArgs,
                       roll_kw: dict[str, Any]) -> Callable[[], None]:
    """What ``auto_batch_size`` measures: everything a training step does, for one image (one prompt
    sampled with G = 1 and decoded, one trained step's forward and backward, the adapter-off
    reference), through ``warm_up`` (its own generator, gradients cleared afterwards)."""
    one = {**roll_kw, "group_size": 1}
    return lambda: warm_up(policy, peft_model, params, prompts, sources, 1, args.trained_steps[0], one,
                           need_ref=args.beta > 0)


def auto_batch_size(policy: Policy, peft_model: torch.nn.Module, params: list[torch.nn.Parameter],
                    prompts: list[str], sources: list[Image.Image] | None, args: RPOArgs, roll_kw: dict[str, Any],
                    ctx: DistContext, resume: str | Path | None) -> BatchChoice:
    """``rollout_batch_size: auto`` (prompts per rollout batch, also the training micro-batch).

    A resumed run keeps the size it started with (``AUTO_BATCH_FILE`` next to its checkpoints), so
    its trajectory does not depend on the memory free at resume. Else, on CUDA: the peak memory of
    one image (one prompt sampled with G = 1, one trained step's forward and backward and the
    adapter-off reference: ``warm_up`` at batch 1, inside the run's attention context, leaving no
    trace) and the free device memory go to ``kernels.choose_batch_size``; elsewhere its default.
    Under torchrun every rank takes the smallest rank's choice (the ranks step in lock-step).
    """
    if resume is not None:
        saved = find_checkpoint(resume) / AUTO_BATCH_FILE
        if saved.is_file():
            kept = json.loads(saved.read_text())
            return BatchChoice(int(kept["size"]), f"kept from {saved.parent.name}: {kept['reason']}")
    device = params[0].device
    if free_device_bytes(device) is None:  # not CUDA
        choice = choose_batch_size(args.prompts_per_step, args.group_size,
                                   unmeasured=f"{device.type}: no device memory to measure")
    else:
        with attention_context(args.attention_backend, device):
            per_image = measure_peak_bytes(one_image_workload(policy, peft_model, params, prompts, sources, args,
                                                              roll_kw), device)
        choice = choose_batch_size(args.prompts_per_step, args.group_size, free_bytes=free_device_bytes(device),
                                   per_image_bytes=per_image)
    if ctx.active:
        smallest = int(-all_reduce_mean({"neg_size_max": -choice.size}, ctx)["neg_size_max"])
        if smallest != choice.size:
            choice = BatchChoice(smallest, f"{choice.reason}; the smallest over {ctx.world_size} ranks: {smallest}",
                                 choice.free_bytes, choice.per_image_bytes)
    return choice


# Steps in a row whose groups all abstained before training stops (each such step updates nothing).
MAX_ABSTAIN_STEPS = 2


def _rank_says(ctx: DistContext, why: str) -> str:
    """``why`` prefixed with this rank under torchrun (each rank logs its own reasons)."""
    return f"rank {ctx.rank}: {why}" if ctx.active else why


def _read_unit_stats(stats: list[tuple[int, torch.Tensor]], sums: dict[str, float], ratio_max: float, step: int,
                     lr: float) -> tuple[float, str | None]:
    """Read the metrics of the units since the last optimizer step back in one host sync (instead of
    six per unit), add them to ``sums`` in unit order and return the new ratio maximum and, for a
    non-finite loss, why training must stop (the caller stops before the optimizer step that would
    apply it). ``stats``: (denoising step, (loss, pg, kl, ratio mean, clip fraction, ratio max)) per
    unit; emptied."""
    rows = torch.stack([t for _, t in stats]).tolist() if stats else []
    for (i, _), (loss, pg, kl, ratio, clip, r_max) in zip(stats, rows, strict=True):
        if not math.isfinite(loss):
            stats.clear()
            return ratio_max, (
                f"non-finite loss ({loss}) at training step {step}, denoising step {i}: the run diverged (lr "
                f"{lr:g}); nothing non-finite was saved, the newest checkpoint before it is resumable. Lower lr "
                "or check the inputs")
        sums["loss"] += loss
        sums["pg"] += pg
        sums["kl"] += kl
        sums["ratio"] += ratio
        sums["clip"] += clip
        ratio_max = max(ratio_max, r_max)
    stats.clear()
    return ratio_max, None


def _optimizer_step(optimizer: torch.optim.Optimizer, scheduler: Any, params: list[torch.nn.Parameter],
                    grad_clip: float, ctx: DistContext, fsdp: bool, step: int) -> float:
    """All-reduce (DDP), clip and apply the accumulated gradients; refuse non-finite gradients or
    weights (they would be saved and spread to every later step). Returns the gradient norm. Under
    torchrun the gradient norm is the same on every rank (DDP: reduced gradients; FSDP: the norm of the
    whole sharded gradient), and so are DDP's weights; an FSDP rank checks only its own shards, so that
    check is agreed (``agree``), and all ranks refuse together."""
    if not fsdp:
        all_reduce_grads(params, ctx)
    norm = float(torch.nn.utils.clip_grad_norm_(params, grad_clip))
    if not math.isfinite(norm):
        raise TrainingHealthError(f"non-finite gradient norm ({norm}) at training step {step}: the run diverged; "
                                  "the update was not applied. Lower lr or check the inputs")
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    with torch.no_grad():
        bad = int(not bool(torch.stack([torch.isfinite(p).all() for p in params]).all()))  # one host sync
    if fsdp:  # this rank's shards only
        bad = agree([bad], ctx)[0]
    if bad:
        raise TrainingHealthError(f"non-finite LoRA weights after the update of training step {step} "
                                  f"(lr {scheduler.get_last_lr()[0]:g}): the run diverged; they were not "
                                  "saved. Lower lr")
    return norm


@dataclass(frozen=True)
class RPOArgs:
    """The trainer's plain hyperparameters (no policy, prompt or reward settings: those are built by
    ``arr_core.recipes.rpo``, which also makes this from a ``TrainConfig``). Field meanings are the
    config's (``arr_core.rpo.config.TrainConfig``); ``trained_steps`` are the integer indices of the
    denoising steps that get a loss term, ``sde_mask`` says per step whether rollouts take an SDE step.
    ``config_digest`` identifies the trajectory (checkpoints of another digest are refused on resume);
    ``config_json`` is written to the run folder as ``config.json``."""

    steps: int
    group_size: int
    num_steps: int
    trained_steps: tuple[int, ...]
    sde_mask: tuple[bool, ...]
    prompts_per_step: int
    rollout_batch_size: int | str  # 'auto': chosen by auto_batch_size
    config_digest: str
    seed: int = 0
    lora_rank: int = 16
    lora_alpha: float = 32.0
    lora_dropout: float = 0.0
    lora_targets: tuple[str, ...] | None = None
    noise: str = "flow_grpo"
    a: float = 0.7
    eta: float = 0.3
    noise_block: int = 1
    shared_initial_noise: bool = False
    judged_image: str = "clean_estimate"
    beta: float = 0.01
    clip_range: float = 0.2
    advantage: str = "centered"
    adv_clip: float = 5.0
    accumulate: int | str = "all"
    lr: float = 5e-5
    weight_decay: float = 1e-4
    adam_betas: tuple[float, float] = (0.9, 0.999)
    adam_eps: float = 1e-8
    warmup_steps: int = 0
    grad_clip: float = 1.0
    bf16_autocast: bool = False
    gradient_checkpointing: bool = False
    attention_backend: str = "auto"
    compile: bool | str = "auto"
    max_inflight_judge_batches: int = 2
    sample_grid_every: int = 10
    checkpoint_every: int = 50
    distributed: str = "none"
    config_json: str = "{}"


def train(policy: Policy, rewarder: GroupRewarder, prompts: list[str], args: RPOArgs, out_dir: str | Path,
          *, sources: list[Image.Image] | None = None, resume: str | Path | None = None,
          progress: Callable[[str], None] | None = print, dist_ctx: DistContext | None = None) -> TrainResult:
    """Run RPO for ``args.steps`` steps (from a checkpoint when ``resume`` is given) and save the LoRA.

    ``prompts`` (and ``sources`` for editing, same length) are the training prompts; under torchrun
    each rank draws its own shard. Writes ``out_dir/metrics.jsonl``, ``out_dir/lora/``,
    ``out_dir/checkpoints/step_N/`` and ``out_dir/samples/step_N.png``.
    """
    ctx = dist_ctx or DistContext()
    out_dir = Path(out_dir)
    if not prompts:
        raise ValueError("prompts is empty: nothing to train on")
    if sources is not None and len(sources) != len(prompts):
        raise ValueError(f"got {len(prompts)} prompts but {len(sources)} sources")
    fsdp = args.distributed == "fsdp"
    if fsdp and not ctx.active:
        raise ValueError("distributed 'fsdp' needs torchrun with more than one process (dist_ctx)")
    say = progress or (lambda _s: None)
    G, n_steps = args.group_size, args.num_steps
    trained = list(args.trained_steps)
    sde_mask = list(args.sde_mask)
    digest = args.config_digest

    # --- model, LoRA, optimiser -------------------------------------------------------------
    peft_model, params = attach_lora(policy, args)
    broadcast_parameters(params, ctx)  # equal by seed already; broadcast anyway
    sigmas = policy.sigmas(n_steps).to(device=params[0].device, dtype=torch.float32)
    if sigmas.shape != (n_steps + 1,) or float(sigmas[0]) != 1.0 or float(sigmas[-1]) != 0.0:
        raise ValueError(f"policy.sigmas({n_steps}) must be ({n_steps + 1},) from 1 to 0, got {sigmas.tolist()}")
    roll_kw = dict(group_size=G, sigmas=sigmas, noise=args.noise, a=args.a, eta=args.eta,
                   shared_initial_noise=args.shared_initial_noise, bf16=args.bf16_autocast, sde_mask=sde_mask,
                   noise_block=args.noise_block, judged_image=args.judged_image)
    # The step maths' coefficients, once per run: rollouts and trained steps then make no host sync.
    table = StepTable(sigmas, kind=args.noise, a=args.a, eta=args.eta, noise_block=args.noise_block)
    table.check_density(trained)
    roll_kw["table"] = table
    batch_size = args.rollout_batch_size
    if batch_size == "auto":  # measured now: eager, before compilation and sharding
        choice = auto_batch_size(policy, peft_model, params, prompts, sources, args, roll_kw, ctx, resume)
        batch_size = choice.size
        if ctx.is_main:
            say(f"rollout_batch_size auto: {batch_size} prompts × G={G} per batch ({choice.reason})")
    # compile 'auto': on CUDA without FSDP. Lazy: each block compiles on its first call (the warm-up
    # below); done before FSDP wraps the blocks, as torchtitan orders them.
    compiled = args.compile if isinstance(args.compile, bool) else params[0].device.type == "cuda" and not fsdp
    if compiled:
        n_blocks = compile_repeated_blocks(policy.transformer)
    if fsdp:  # shard the frozen base and the LoRA per block; FSDP reduce-scatters the gradients itself
        shard_fsdp(policy.transformer)
        params = [p for p in peft_model.parameters() if p.requires_grad]
    device = params[0].device
    optimizer = torch.optim.AdamW(params, lr=args.lr, betas=args.adam_betas, eps=args.adam_eps,
                                  weight_decay=args.weight_decay)
    warm = args.warmup_steps
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / (warm + 1)) if warm else 1.0)
    generator = torch.Generator(device=device).manual_seed(args.seed * 7919 + ctx.rank)
    stream = PromptStream(len(prompts), args.seed, ctx.rank, ctx.world_size)

    start = 0
    metrics_path = out_dir / "metrics.jsonl"
    if resume is not None:
        ckpt = find_checkpoint(resume)
        start, data_state = load_checkpoint(ckpt, peft_model=peft_model, optimizer=optimizer,
                                            scheduler=scheduler, generator=generator,
                                            config_digest=digest, rank=ctx.rank)
        stream.load(data_state)
        skipped = incomplete_after(resume, ckpt)
        say(f"resumed from {ckpt} at step {start}"
            + (f" (skipped incomplete {', '.join(d.name for d in skipped)})" if skipped else ""))
    if ctx.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "config.json").write_text(args.config_json)
        # Keep the metrics of the steps before the resume point, drop any later ones.
        kept = []
        if metrics_path.exists() and start > 0:
            kept = [ln for ln in metrics_path.read_text().splitlines() if ln and json.loads(ln)["step"] <= start]
        metrics_path.write_text("".join(ln + "\n" for ln in kept))

    n_batches = args.prompts_per_step // batch_size
    units = [(bi, i) for bi in range(n_batches) for i in trained]
    chunk = len(units) if args.accumulate == "all" else args.accumulate
    last: dict[str, Any] = {}
    ckpt_dir: Path | None = None
    with _JudgeLoop() as judge, attention_context(args.attention_backend, device):
        warmup_s = None
        if compiled:  # trace and tune on throw-away inputs, so that no step's timing includes it
            t0 = time.perf_counter()
            warm_up(policy, peft_model, params, prompts, sources, batch_size, trained[0], roll_kw,
                    need_ref=args.beta > 0)
            warmup_s = time.perf_counter() - t0
            say(f"compiled {n_blocks} repeated blocks; warm-up {warmup_s:.1f}s (not in the step times)")
        abstain_steps = 0
        for step in range(start, args.steps):
            t_step = time.perf_counter()
            # --- 1. rollouts, judged asynchronously (bounded; 0 = blocking) -----------------
            t_roll = t_judge = 0.0
            batches: list[Rollout] = []
            pending: list[Rollout] = []
            for _ in range(n_batches):
                idx = stream.take(batch_size)
                t0 = time.perf_counter()
                ro = rollout(policy, [prompts[j] for j in idx], [sources[j] for j in idx] if sources else None,
                             generator=generator, **roll_kw)
                t_roll += time.perf_counter() - t0
                t0 = time.perf_counter()
                while len(pending) >= max(args.max_inflight_judge_batches, 1):
                    pending.pop(0).outcomes.result()
                groups = [ro.images[k * G:(k + 1) * G] for k in range(len(ro.prompts))]
                ro.outcomes = judge.submit(rewarder.score(ro.prompts, groups, ro.sources))
                if args.max_inflight_judge_batches == 0:
                    ro.outcomes.result()
                t_judge += time.perf_counter() - t0
                pending.append(ro)
                batches.append(ro)

            # --- 2. PPO + KL update over (batch × trained step) units ------------------------
            # Batches train in rollout order, each as soon as its own verdicts are in: the judge
            # scores the last batches while the first ones train (same units, same order as waiting
            # for all verdicts first, so the numbers do not depend on the judge's timing).
            t0 = time.perf_counter()
            t_wait = 0.0
            outcomes_all: list[GroupOutcome] = []
            optimizer.zero_grad(set_to_none=True)
            sums = {"loss": 0.0, "kl": 0.0, "ratio": 0.0, "clip": 0.0, "pg": 0.0}
            ratio_max, grad_norms = 0.0, []
            stepped = False  # any unit of the current optimizer step contributed a gradient (on this rank)
            failed_why = None  # a required reward component failed (details["step_failed"]): no update
            failed_elsewhere = False  # ... on another rank (agreed): no update either
            no_verdict_steps, abstain_stop = 0, 0  # set at the last unit, when every verdict is in
            unit_stats: list[tuple[int, torch.Tensor]] = []  # read back once per optimizer step
            for u, (bi, i) in enumerate(units):
                ro = batches[bi]
                if ro.advantages is None:
                    t1 = time.perf_counter()
                    outs = ro.outcomes.result()
                    t_wait += time.perf_counter() - t1
                    if len(outs) != len(ro.prompts):
                        raise ValueError(f"rewarder returned {len(outs)} outcomes for {len(ro.prompts)} prompts")
                    ro.advantages = group_advantages(outs, G, args.advantage, args.adv_clip).to(device)
                    ro.all_abstained = all(o.outcome == "abstain" for o in outs)
                    outcomes_all.extend(outs)
                    failed_why = failed_why or next((o.details["step_failed"] for o in outs
                                                     if (o.details or {}).get("step_failed")), None)
                if failed_why:  # drop this step's gradient (applied steps of accumulate < all stand)
                    optimizer.zero_grad(set_to_none=True)
                    unit_stats.clear()
                    stepped = False
                # An all-abstained batch (no verdict): nothing to learn from it, not even the KL pull. Under
                # FSDP every forward and backward is a collective, so this rank runs the unit anyway, with
                # a zero loss weight (its gradient contribution is 0), in step with the other ranks.
                train_unit = not failed_why and not ro.all_abstained
                boundary = (u + 1) % chunk == 0 or u + 1 == len(units)
                if train_unit or fsdp:
                    first = (u // chunk) * chunk
                    size = min(first + chunk, len(units)) - first  # units in this optimizer step
                    log_prob, kl = step_terms(policy, peft_model, ro, i, sigmas, noise=args.noise, a=args.a,
                                              eta=args.eta, bf16=args.bf16_autocast, need_ref=args.beta > 0,
                                              noise_block=args.noise_block, table=table)
                    ratio = torch.exp(log_prob - ro.log_probs[i])
                    adv = ro.advantages
                    pg = torch.maximum(-adv * ratio,
                                       -adv * ratio.clamp(1 - args.clip_range, 1 + args.clip_range)).mean()
                    loss = pg + args.beta * kl.mean()
                    (loss / size if train_unit else loss * 0.0).backward()
                if train_unit:
                    stepped = True
                    with torch.no_grad():  # no host sync per unit: the figures stay on the device until the step
                        clip = ((ratio - 1).abs() > args.clip_range).float().mean()
                        unit_stats.append((i, torch.stack([loss, pg, kl.mean(), ratio.mean(), clip, ratio.max()])))
                if boundary:
                    # A non-finite loss is refused here, before its update is applied. Every rank's
                    # decisions (stop, a failed step, nothing to apply) are agreed first, in one small
                    # collective: a rank that skipped the all-reduce alone would leave the others in it.
                    ratio_max, bad_loss = _read_unit_stats(unit_stats, sums, ratio_max, step + 1,
                                                           scheduler.get_last_lr()[0])
                    if u + 1 == len(units):  # every verdict of the step is in: steps in a row without one
                        no_verdict = bool(failed_why) or all(o.outcome == "abstain" for o in outcomes_all)
                        no_verdict_steps = abstain_steps + 1 if no_verdict else 0
                    me = ctx.rank + 1
                    bad_rank, abstain_stop, failed_any, stepped_any = agree(
                        [me if bad_loss else 0, me if no_verdict_steps >= MAX_ABSTAIN_STEPS else 0,
                         int(bool(failed_why)), int(stepped)], ctx)
                    if bad_rank:
                        raise TrainingHealthError(_rank_says(ctx, bad_loss) if bad_loss else (
                            f"rank {bad_rank - 1} stopped training at step {step + 1}: a non-finite loss (its "
                            "log says where); every rank stops with it, the update was not applied"))
                    if stepped_any and not failed_any:  # the last unit always steps (unless nothing to apply)
                        grad_norms.append(_optimizer_step(optimizer, scheduler, params, args.grad_clip, ctx, fsdp,
                                                          step + 1))
                    else:  # every rank drops this optimizer step's gradient together
                        optimizer.zero_grad(set_to_none=True)
                    failed_elsewhere = failed_elsewhere or bool(failed_any and not failed_why)
                    stepped = False
            t_train = time.perf_counter() - t0 - t_wait
            t_judge += t_wait

            # --- 3. metrics, samples, checkpoints --------------------------------------------
            n_u, n_g = len(units), len(outcomes_all)
            if no_verdict_steps:  # this rank's groups gave no verdict
                why = _rank_says(ctx, failed_why or "the judge abstained on every group")
                say(f"step {step + 1}: {why}; " + (f"the other ranks' verdicts updated the policy ({len(grad_norms)} "
                                                    "optimizer steps)" if ctx.active and grad_norms
                                                    else "the policy was not updated"))
            elif failed_elsewhere:
                say(f"step {step + 1}: a required reward component failed on another rank; the policy was not "
                    "updated")
            abstain_steps = no_verdict_steps
            if abstain_stop:  # agreed: every rank stops here
                if abstain_steps >= MAX_ABSTAIN_STEPS:
                    raise TrainingHealthError(_rank_says(ctx,
                        f"the judge abstained on every group for {abstain_steps} steps in a row (no usable "
                        "verdict: its endpoint failed or its answers could not be parsed); training stopped, "
                        + ("this rank contributed nothing" if ctx.active else "nothing was updated")
                        + " in those steps. Check the judge's endpoint and log"
                        + (f". Last: {failed_why}" if failed_why else "")))
                raise TrainingHealthError(
                    f"rank {abstain_stop - 1} got no usable verdict for {MAX_ABSTAIN_STEPS} steps in a row (its "
                    f"log says why); training stopped on every rank at step {step + 1}")
            rewards = [r for o in outcomes_all for r in o.rewards]
            reward_mean = sum(rewards) / len(rewards)
            # Group-ranked rewards have a fixed mean (0.45 at G = 2); their spread is what moves: it
            # falls with ties and abstentions, the steps that carry no learning signal.
            spreads = [max(o.rewards) - min(o.rewards) for o in outcomes_all if o.rewards]
            m = {
                "reward_mean": reward_mean,
                "reward_std": math.sqrt(sum((r - reward_mean) ** 2 for r in rewards) / len(rewards)),
                "reward_spread": sum(spreads) / len(spreads) if spreads else 0.0,
                "win_rate": sum(o.outcome == "win" for o in outcomes_all) / n_g,
                "tie_rate": sum(o.outcome == "tie" for o in outcomes_all) / n_g,
                "abstain_rate": sum(o.outcome == "abstain" for o in outcomes_all) / n_g,
                "adv_abs_mean": float(torch.cat([ro.advantages for ro in batches]).abs().mean()),
                "loss": sums["loss"] / n_u, "pg_loss": sums["pg"] / n_u, "kl": sums["kl"] / n_u,
                "ratio_mean": sums["ratio"] / n_u, "ratio_max": ratio_max, "clip_frac": sums["clip"] / n_u,
                "grad_norm": sum(grad_norms) / len(grad_norms) if grad_norms else 0.0,
                "optimizer_steps": len(grad_norms),
                "judge_latency_s": sum(o.latency_s for o in outcomes_all) / n_g,
                "time_rollout_s": t_roll, "time_judge_s": t_judge, "time_train_s": t_train,
            }
            m = all_reduce_mean(m, ctx)
            # the rewarder's own metrics (per-theme scores, criterion attribution, component counts):
            # means over this rank's groups that report them (names differ between rewarders and steps)
            m.update(detail_metrics(outcomes_all))
            m["time_step_s"] = time.perf_counter() - t_step
            m["images_per_s"] = args.prompts_per_step * G * ctx.world_size / m["time_step_s"]
            m["lr"] = scheduler.get_last_lr()[0]
            m["step"] = step + 1
            m["rollout_batch_size"] = batch_size  # the chosen one under 'auto'
            if warmup_s is not None:  # this process's compile warm-up, reported once, outside time_step_s
                m["time_warmup_s"], warmup_s = warmup_s, None
            last = m
            done = step + 1
            if ctx.is_main:
                with metrics_path.open("a") as f:
                    f.write(json.dumps(m) + "\n")
                say(f"step {done}/{args.steps} reward {m['reward_mean']:+.3f} win {m['win_rate']:.2f} "
                    f"tie {m['tie_rate']:.2f} kl {m['kl']:.2e} ratio {m['ratio_mean']:.4f}/{m['ratio_max']:.4f} "
                    f"clip {m['clip_frac']:.3f} |g| {m['grad_norm']:.2e} loss {m['loss']:+.4f} "
                    f"t roll/judge/train {t_roll:.2f}/{t_judge:.2f}/{t_train:.2f}s {m['images_per_s']:.2f} img/s")
                if args.sample_grid_every and done % args.sample_grid_every == 0:
                    (out_dir / "samples").mkdir(exist_ok=True)
                    make_grid([im for ro in batches for im in ro.images], G).save(
                        out_dir / "samples" / f"step_{done:06d}.png")
            if (args.checkpoint_every and done % args.checkpoint_every == 0) or done == args.steps:
                ckpt_dir = out_dir / "checkpoints" / f"step_{done:06d}"
                barrier(ctx)
                save_checkpoint(ckpt_dir, peft_model=peft_model, optimizer=optimizer, scheduler=scheduler,
                                generator=generator, step=done, data_state=stream.state(),
                                config_digest=digest, rank=ctx.rank, is_main=ctx.is_main)
                if ctx.is_main and args.rollout_batch_size == "auto":  # a resume keeps the size (same trajectory)
                    (ckpt_dir / AUTO_BATCH_FILE).write_text(json.dumps({"size": batch_size, "reason": choice.reason}))
                barrier(ctx)
                if ctx.is_main:  # every rank's files are written: the manifest marks it complete
                    write_manifest(ckpt_dir, done)
    lora_dir = out_dir / "lora"
    save_lora(peft_model, lora_dir, is_main=ctx.is_main)  # every rank: gathers FSDP shards
    if ctx.is_main:
        say(f"LoRA saved to {lora_dir}")
    barrier(ctx)
    return TrainResult(lora_dir, metrics_path, args.steps, ckpt_dir, last, peft_model)
