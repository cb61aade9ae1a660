"""Rubric Policy Optimization (RPO): the training loop.

ARR paper ("Auto-Rubric as Reward"), RPO: sample G images per prompt with a stochastic sampler,
let the rubric-conditioned VLM judge rank each group, and push the policy toward winners with a
PPO-style update on a LoRA adapter (Flow-GRPO / DanceGRPO recipe for flow-matching models).

One training step:
1. Rollouts, ``prompts_per_step / rollout_batch_size`` batches of ``rollout_batch_size × G`` images:
   the SDE sampler (``sde.py``) records every step's latents and fp32 log-probabilities. Each batch
   is sent to the judge as soon as it is decoded; the judge (async, in its own event-loop thread)
   scores batch k while batch k+1 is sampled; at most ``max_inflight_judge_batches`` wait at once.
2. Advantages: rewards centred within each group (``advantage: raw`` keeps the paper's raw
   rewards); ties and abstentions give 0 to the whole group; clipped to ±``adv_clip``.
3. Update: for every rollout batch (same batch size as sampling, modules in eval mode, so the
   on-policy ratio is exactly 1) and every trained denoising step, loss =
   PPO clipped surrogate max(−A·r, −A·clip(r, 1−ε, 1+ε)) + β·KL(π_θ ‖ π_ref), the analytic KL between
   the LoRA'd and the adapter-off Gaussian steps. Gradients accumulate over ``accumulate`` such
   units (or all of them), and the last unit always ends with an optimizer step (AdamW, grad-norm
   clip, LR warm-up).

Deviations from the paper's released code, on purpose: advantages are centred (its code uses raw
rewards); the KL is the analytic Gaussian KL (its β·(log π_θ − log π_ref) has zero expected
gradient on-policy); the judge runs asynchronously and batched instead of synchronously per pair;
the last, nearly deterministic step is not trained; gradient accumulation always ends on an
optimizer step; runs resume exactly.
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

from arr_core.rewards import GroupOutcome, GroupRewarder
from arr_core.rpo.checkpoint import find_checkpoint, load_checkpoint, save_checkpoint, save_lora
from arr_core.rpo.distributed import (
    DistContext,
    all_reduce_grads,
    all_reduce_mean,
    barrier,
    broadcast_parameters,
    shard_fsdp,
)
from arr_core.rpo.lora import add_lora
from arr_core.rpo.policy import Cond, Policy, index_cond
from arr_core.rpo.sde import analytic_kl, sde_mean_std, sde_step, step_log_prob


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


@torch.no_grad()
def rollout(policy: Policy, prompts: list[str], sources: list[Image.Image] | None, *, group_size: int,
            sigmas: torch.Tensor, generator: torch.Generator, noise: str, a: float, eta: float,
            shared_initial_noise: bool, bf16: bool, sde_mask: Sequence[bool] | None = None,
            noise_block: int = 1) -> Rollout:
    """Sample G images per prompt with the SDE sampler, recording latents and per-step log-probs.

    ``sde_mask`` (one flag per step, default all True): steps flagged False take the deterministic
    Euler step and record a log-prob of 0 (they have no density and must not be trained).
    ``noise_block`` > 1: step noise on block × block tiles (``sde.py``, block noise).
    """
    b, g = len(prompts), group_size
    cond = policy.encode(prompts, sources)
    cond = index_cond(cond, torch.arange(b).repeat_interleave(g))
    if shared_initial_noise:
        x = policy.initial_latents(b, generator).float().repeat_interleave(g, dim=0)
    else:
        x = policy.initial_latents(b * g, generator).float()
    n = len(sigmas) - 1
    if sde_mask is not None and len(sde_mask) != n:
        raise ValueError(f"sde_mask has {len(sde_mask)} flags for {n} steps")
    lats, lps = [x], []
    for i in range(n):
        v = _velocity(policy, x, sigmas[i], cond, bf16)
        if sde_mask is None or sde_mask[i]:
            x, mean, std = sde_step(x, v, sigmas[i], sigmas[i + 1], kind=noise, a=a, eta=eta, generator=generator,
                                    noise_block=noise_block)
            lps.append(step_log_prob(x, mean, std, noise_block))
        else:
            x = sde_mean_std(x, v, sigmas[i], sigmas[i + 1], kind="ode")[0]
            lps.append(torch.zeros(x.shape[0], dtype=torch.float32, device=x.device))
        lats.append(x)
    images = policy.decode(x)
    return Rollout(prompts, sources, cond, torch.stack(lats), torch.stack(lps), images)


def step_terms(policy: Policy, peft_model: torch.nn.Module, ro: Rollout, i: int, sigmas: torch.Tensor, *,
               noise: str, a: float, eta: float, bf16: bool, need_ref: bool, noise_block: int = 1
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Recompute step i of a stored rollout under the current LoRA: (log-prob with grad (b·G,),
    analytic KL to the adapter-off reference (b·G,), zeros when ``need_ref`` is False)."""
    x, x_next = ro.latents[i], ro.latents[i + 1]
    v = _velocity(policy, x, sigmas[i], ro.cond, bf16)
    mean, std = sde_mean_std(x, v, sigmas[i], sigmas[i + 1], kind=noise, a=a, eta=eta, noise_block=noise_block)
    log_prob = step_log_prob(x_next, mean, std, noise_block)
    if not need_ref:
        return log_prob, torch.zeros_like(log_prob)
    with torch.no_grad(), peft_model.disable_adapter():
        v_ref = _velocity(policy, x, sigmas[i], ro.cond, bf16)
        mean_ref, _ = sde_mean_std(x, v_ref, sigmas[i], sigmas[i + 1], kind=noise, a=a, eta=eta,
                                   noise_block=noise_block)
    return log_prob, analytic_kl(mean, mean_ref, std)


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
    rollout_batch_size: int
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
    torch.manual_seed(args.seed)  # LoRA A init: equal on every rank (and broadcast below anyway)
    targets = list(args.lora_targets) if args.lora_targets else list(policy.lora_targets)
    peft_model = add_lora(policy.transformer, rank=args.lora_rank, alpha=args.lora_alpha, targets=targets,
                          dropout=args.lora_dropout)
    set_eval_mode(policy)
    peft_model.eval()
    if args.gradient_checkpointing:
        if not hasattr(policy.transformer, "enable_gradient_checkpointing"):
            raise ValueError(f"gradient_checkpointing: {type(policy.transformer).__name__} does not support it")
        policy.transformer.enable_gradient_checkpointing()
    params = [p for p in peft_model.parameters() if p.requires_grad]
    broadcast_parameters(params, ctx)
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
    sigmas = policy.sigmas(n_steps).to(device=device, dtype=torch.float32)
    if sigmas.shape != (n_steps + 1,) or float(sigmas[0]) != 1.0 or float(sigmas[-1]) != 0.0:
        raise ValueError(f"policy.sigmas({n_steps}) must be ({n_steps + 1},) from 1 to 0, got {sigmas.tolist()}")

    start = 0
    metrics_path = out_dir / "metrics.jsonl"
    if resume is not None:
        ckpt = find_checkpoint(resume)
        start, data_state = load_checkpoint(ckpt, peft_model=peft_model, optimizer=optimizer,
                                            scheduler=scheduler, generator=generator,
                                            config_digest=digest, rank=ctx.rank)
        stream.load(data_state)
        say(f"resumed from {ckpt} at step {start}")
    if ctx.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "config.json").write_text(args.config_json)
        # Keep the metrics of the steps before the resume point, drop any later ones.
        kept = []
        if metrics_path.exists() and start > 0:
            kept = [ln for ln in metrics_path.read_text().splitlines() if ln and json.loads(ln)["step"] <= start]
        metrics_path.write_text("".join(ln + "\n" for ln in kept))

    n_batches = args.prompts_per_step // args.rollout_batch_size
    units = [(bi, i) for bi in range(n_batches) for i in trained]
    chunk = len(units) if args.accumulate == "all" else args.accumulate
    judge = _JudgeLoop()
    last: dict[str, Any] = {}
    ckpt_dir: Path | None = None
    try:
        for step in range(start, args.steps):
            t_step = time.perf_counter()
            # --- 1. rollouts, judged asynchronously (bounded) -------------------------------
            t_roll = t_judge = 0.0
            batches: list[Rollout] = []
            pending: list[Rollout] = []
            for _ in range(n_batches):
                idx = stream.take(args.rollout_batch_size)
                t0 = time.perf_counter()
                ro = rollout(policy, [prompts[j] for j in idx], [sources[j] for j in idx] if sources else None,
                             group_size=G, sigmas=sigmas, generator=generator, noise=args.noise, a=args.a,
                             eta=args.eta, shared_initial_noise=args.shared_initial_noise, bf16=args.bf16_autocast,
                             sde_mask=sde_mask, noise_block=args.noise_block)
                t_roll += time.perf_counter() - t0
                t0 = time.perf_counter()
                while len(pending) >= args.max_inflight_judge_batches:
                    pending.pop(0).outcomes.result()
                t_judge += time.perf_counter() - t0
                groups = [ro.images[k * G:(k + 1) * G] for k in range(len(ro.prompts))]
                ro.outcomes = judge.submit(rewarder.score(ro.prompts, groups, ro.sources))
                pending.append(ro)
                batches.append(ro)
            t0 = time.perf_counter()
            outcomes_all: list[GroupOutcome] = []
            for ro in batches:
                outs = ro.outcomes.result()
                if len(outs) != len(ro.prompts):
                    raise ValueError(f"rewarder returned {len(outs)} outcomes for {len(ro.prompts)} prompts")
                ro.advantages = group_advantages(outs, G, args.advantage, args.adv_clip).to(device)
                outcomes_all.extend(outs)
            t_judge += time.perf_counter() - t0

            # --- 2. PPO + KL update over (batch × trained step) units ------------------------
            t0 = time.perf_counter()
            optimizer.zero_grad(set_to_none=True)
            sums = {"loss": 0.0, "kl": 0.0, "ratio": 0.0, "clip": 0.0, "pg": 0.0}
            ratio_max, grad_norms = 0.0, []
            for u, (bi, i) in enumerate(units):
                ro = batches[bi]
                first = (u // chunk) * chunk
                size = min(first + chunk, len(units)) - first  # units in this optimizer step
                log_prob, kl = step_terms(policy, peft_model, ro, i, sigmas, noise=args.noise, a=args.a,
                                          eta=args.eta, bf16=args.bf16_autocast, need_ref=args.beta > 0,
                                          noise_block=args.noise_block)
                ratio = torch.exp(log_prob - ro.log_probs[i])
                adv = ro.advantages
                pg = torch.maximum(-adv * ratio,
                                   -adv * ratio.clamp(1 - args.clip_range, 1 + args.clip_range)).mean()
                loss = pg + args.beta * kl.mean()
                (loss / size).backward()
                with torch.no_grad():
                    sums["loss"] += float(loss)
                    sums["pg"] += float(pg)
                    sums["kl"] += float(kl.mean())
                    sums["ratio"] += float(ratio.mean())
                    sums["clip"] += float(((ratio - 1).abs() > args.clip_range).float().mean())
                    ratio_max = max(ratio_max, float(ratio.max()))
                if (u + 1) % chunk == 0 or u + 1 == len(units):  # the last unit always steps
                    if not fsdp:
                        all_reduce_grads(params, ctx)
                    grad_norms.append(float(torch.nn.utils.clip_grad_norm_(params, args.grad_clip)))
                    optimizer.step()
                    scheduler.step()
                    optimizer.zero_grad(set_to_none=True)
            t_train = time.perf_counter() - t0

            # --- 3. metrics, samples, checkpoints --------------------------------------------
            n_u, n_g = len(units), len(outcomes_all)
            rewards = [r for o in outcomes_all for r in o.rewards]
            m = {
                "reward_mean": sum(rewards) / len(rewards),
                "win_rate": sum(o.outcome == "win" for o in outcomes_all) / n_g,
                "tie_rate": sum(o.outcome == "tie" for o in outcomes_all) / n_g,
                "abstain_rate": sum(o.outcome == "abstain" for o in outcomes_all) / n_g,
                "adv_abs_mean": float(torch.cat([ro.advantages for ro in batches]).abs().mean()),
                "loss": sums["loss"] / n_u, "pg_loss": sums["pg"] / n_u, "kl": sums["kl"] / n_u,
                "ratio_mean": sums["ratio"] / n_u, "ratio_max": ratio_max, "clip_frac": sums["clip"] / n_u,
                "grad_norm": sum(grad_norms) / len(grad_norms), "optimizer_steps": len(grad_norms),
                "judge_latency_s": sum(o.latency_s for o in outcomes_all) / n_g,
                "time_rollout_s": t_roll, "time_judge_s": t_judge, "time_train_s": t_train,
            }
            m = all_reduce_mean(m, ctx)
            m["time_step_s"] = time.perf_counter() - t_step
            m["images_per_s"] = args.prompts_per_step * G * ctx.world_size / m["time_step_s"]
            m["lr"] = scheduler.get_last_lr()[0]
            m["step"] = step + 1
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
                barrier(ctx)
    finally:
        judge.close()
    lora_dir = out_dir / "lora"
    save_lora(peft_model, lora_dir, is_main=ctx.is_main)  # every rank: gathers FSDP shards
    if ctx.is_main:
        say(f"LoRA saved to {lora_dir}")
    barrier(ctx)
    return TrainResult(lora_dir, metrics_path, args.steps, ckpt_dir, last, peft_model)
