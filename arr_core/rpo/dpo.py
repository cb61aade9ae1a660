"""Rubric-reward DPO: offline Diffusion-DPO for flow-matching image models (``algorithm: dpo``).

Papers: Wallace et al., 2023, "Diffusion Model Alignment Using Direct Preference Optimization"
(Diffusion-DPO, arXiv 2311.12908; code SalesforceAIResearch/DiffusionDPO ``train.py``), and its
flow-matching form, Flow-DPO in Liu et al., 2025, "Improving Video Generation with Human Feedback"
(VideoAlign, arXiv 2501.13918). Rectified flow, as everywhere in ``arr_core.rpo``: x_σ = (1−σ)·x₀ + σ·ε,
the network predicts v ≈ ε − x₀.

Objective, per preference pair (prompt c, preferred image x₀ʷ, rejected image x₀ˡ): draw one noise
level σ and one noise ε, shared by the two images (as Diffusion-DPO's code shares timestep and noise
within a pair), and with e(θ, x₀) = mean over latent elements of ‖v_θ(x_σ, σ, c) − (ε − x₀)‖²,

    Δ_policy = e(θ, x₀ʷ) − e(θ, x₀ˡ)          (LoRA on, with grad)
    Δ_ref    = e(ref, x₀ʷ) − e(ref, x₀ˡ)      (the same network with the LoRA adapter disabled, no grad)
    loss     = −w · log σ(−β·(Δ_policy − Δ_ref))

w is the pair's weight (1, or its composite-score margin normalised to mean 1). Sign: lowering the
policy's error on the winner relative to the reference (and raising it on the loser) makes
Δ_policy − Δ_ref negative and the loss small, as in Diffusion-DPO's ``inside_term = −½·β_dpo·(model_diff
− ref_diff)``, ``loss = −logsigmoid(inside_term)``, and in Flow-DPO's velocity form. At LoRA
initialisation (B = 0) the policy is the reference, so the loss is exactly log 2 (tested).

Pairs come from a preference dataset (``pairs_from_records``) or are sampled by the base policy and
labelled by the rubric judge in both orders (``pairs_from_outcomes``: disagreeing orders come back as
ties; ties and abstentions are dropped and counted). Images become latents with the policy's own VAE
encoder (``encode_latents``: FLUX, SD3, Qwen-Image-Edit; the recipe gives the toy's pixel encoder); an
edit pair is conditioned on its source image as the policy's ``encode`` does for rollouts.

Deviations, on purpose:

* β multiplies (Δ_policy − Δ_ref) directly; the papers write β/2 (Diffusion-DPO's code: ``−0.5 ·
  beta_dpo``). β = 2500 here is Diffusion-DPO's SD1.5 β_dpo = 5000.
* No timestep weighting: Flow-DPO derives a σ-dependent β_t and uses a constant β in practice (a
  σ-dependent one over-optimised the high-noise levels); Diffusion-DPO folds T·ω(λ_t) into β. Here β is
  constant too.
* σ is drawn from a continuous density (uniform on (0, 1), or SD3's logit-normal), not from the
  1000 discrete training timesteps of Diffusion-DPO's DDPM models.
* VAE latents are the encoder's distribution mode (Diffusion-DPO samples ``latent_dist``): deterministic,
  so an exact resume does not depend on the encoder's randomness.
* Optional per-pair weights from the composite-score margin (the rubric-reward recipe); the papers
  weight all pairs equally.
* Generated pairs (the base policy's own samples, judged) make it on-policy at step 0 (as in
  online/iterative DPO variants); the references train on fixed human datasets (Pick-a-Pic, VideoGen-RM).
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image

from arr_core.errors import TrainingHealthError
from arr_core.rewards import GroupOutcome
from arr_core.rpo.checkpoint import (
    find_checkpoint,
    load_checkpoint,
    save_checkpoint,
    save_lora,
    write_manifest,
)
from arr_core.rpo.distributed import DistContext
from arr_core.rpo.kernels import attention_context
from arr_core.rpo.policy import Cond, Policy, index_cond
from arr_core.rpo.trainer import PromptStream, TrainResult, _optimizer_step, attach_lora, set_eval_mode

PAIRS_FILE = "pairs.jsonl"


@dataclass
class DPOPair:
    """One preference pair: ``winner`` preferred over ``loser`` for ``prompt`` (``source``: the edit's
    input image). ``margin``: composite-score difference when known; ``weight``: the loss weight."""

    prompt: str
    winner: Image.Image
    loser: Image.Image
    source: Image.Image | None = None
    margin: float | None = None
    weight: float = 1.0


# --------------------------------------------------------------------------------------------- pairs

def pairs_from_outcomes(prompts: Sequence[str], groups: Sequence[Sequence[Image.Image]],
                        sources: Sequence[Image.Image] | None, outcomes: Sequence[GroupOutcome]
                        ) -> tuple[list[DPOPair], dict[str, int]]:
    """Judged groups → pairs: rank 1 over rank G of every "win"; ties (including orders that
    disagreed under ``order: swap``) and abstentions are dropped and counted. The margin is the
    difference of the rewarder's per-image composite scores (``outcome.details["composites"]``, the
    per-criterion judge's ``reward.mode: scores``) when it reports them, else None."""
    if not len(prompts) == len(groups) == len(outcomes):
        raise ValueError(f"got {len(prompts)} prompts, {len(groups)} groups and {len(outcomes)} outcomes")
    pairs: list[DPOPair] = []
    counts = {"candidates": len(prompts), "kept": 0, "tie": 0, "abstain": 0}
    for k, (prompt, grp, o) in enumerate(zip(prompts, groups, outcomes, strict=True)):
        if o.outcome != "win" or o.ranks is None:
            counts["tie" if o.outcome == "tie" else "abstain"] += 1
            continue
        best, worst = o.ranks.index(1), o.ranks.index(len(grp))
        scores = (o.details or {}).get("composites")
        margin = float(scores[best]) - float(scores[worst]) if scores is not None else None
        pairs.append(DPOPair(prompt, grp[best], grp[worst], sources[k] if sources is not None else None, margin))
        counts["kept"] += 1
    return pairs, counts


def pairs_from_records(records: Sequence[Any]) -> tuple[list[DPOPair], dict[str, int]]:
    """Preference records (``arr_core.data.records.PreferenceRecord``) → pairs: the best candidate over
    the worst (by ``label_rank``, or by ``label_score`` with the score difference as margin); records
    whose best and worst are equal are dropped and counted as ties."""
    pairs: list[DPOPair] = []
    counts = {"candidates": len(records), "kept": 0, "tie": 0, "abstain": 0}
    for r in records:
        if r.task not in ("t2i", "edit"):
            raise ValueError(f"record {r.idx}: task {r.task!r} has no preference between images (t2i or edit)")
        if r.label_rank is not None:
            vals, margin_of = [-float(x) for x in r.label_rank], None
        elif r.label_score is not None:
            vals, margin_of = [float(x) for x in r.label_score], True
        else:
            raise ValueError(f"record {r.idx}: no label_rank or label_score")
        best = max(range(len(vals)), key=lambda i: (vals[i], -i))
        worst = min(range(len(vals)), key=lambda i: (vals[i], i))
        if vals[best] == vals[worst]:
            counts["tie"] += 1
            continue
        margin = vals[best] - vals[worst] if margin_of else None
        pairs.append(DPOPair(r.prompt, r.images[best].load(), r.images[worst].load(),
                             r.source.load() if r.source is not None else None, margin))
        counts["kept"] += 1
    return pairs, counts


def apply_weighting(pairs: list[DPOPair], weighting: str) -> list[DPOPair]:
    """``none``: every weight 1. ``margin``: weight = margin / mean margin over the pairs (mean weight 1,
    so β and the learning rate keep their meaning); every pair must have a margin."""
    if weighting == "none":
        for p in pairs:
            p.weight = 1.0
        return pairs
    if weighting != "margin":
        raise ValueError(f"weighting must be 'none' or 'margin', got {weighting!r}")
    missing = [i for i, p in enumerate(pairs) if p.margin is None]
    if missing:
        raise ValueError(f"weighting 'margin' needs a composite-score margin for every pair; pair {missing[0]} "
                         f"({len(missing)} in all) has none (dataset records need label_score; generated pairs "
                         "need the per-criterion judge, reward.mode 'scores')")
    mean = sum(abs(p.margin) for p in pairs) / len(pairs)  # type: ignore[arg-type]
    if not mean > 0:
        raise ValueError("weighting 'margin': every pair has margin 0")
    for p in pairs:
        p.weight = abs(p.margin) / mean  # type: ignore[arg-type]
    return pairs


def save_pairs(pairs: Sequence[DPOPair], folder: str | Path, counts: dict[str, int] | None = None) -> Path:
    """Write the pairs as PNGs plus ``pairs.jsonl`` (and ``counts.json``): a resumed run trains on
    exactly these, whatever the judge would answer now."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, p in enumerate(pairs):
        row: dict[str, Any] = {"prompt": p.prompt, "margin": p.margin, "weight": p.weight}
        for name in ("winner", "loser", "source"):
            im = getattr(p, name)
            if im is not None:
                im.save(folder / f"{i:06d}_{name}.png")
                row[name] = f"{i:06d}_{name}.png"
        rows.append(row)
    tmp = folder / (PAIRS_FILE + ".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    tmp.replace(folder / PAIRS_FILE)
    if counts is not None:
        (folder / "counts.json").write_text(json.dumps(counts, indent=1), encoding="utf-8")
    return folder / PAIRS_FILE


def load_pairs(folder: str | Path) -> list[DPOPair]:
    """The pairs ``save_pairs`` wrote."""
    folder = Path(folder)
    out = []
    for i, line in enumerate((folder / PAIRS_FILE).read_text(encoding="utf-8").splitlines()):
        r = json.loads(line)
        ims = {n: Image.open(folder / r[n]).convert("RGB") if r.get(n) else None for n in ("winner", "loser", "source")}
        if ims["winner"] is None or ims["loser"] is None:
            raise ValueError(f"{folder / PAIRS_FILE}: record {i} lacks 'winner' or 'loser'")
        out.append(DPOPair(r["prompt"], ims["winner"], ims["loser"], ims["source"], r.get("margin"),
                           float(r.get("weight", 1.0))))
    return out


@torch.no_grad()
def sample_candidates(policy: Policy, prompts: Sequence[str], sources: Sequence[Image.Image] | None, *,
                      steps: int, seed: int, batch_size: int = 8) -> list[list[Image.Image]]:
    """Two images per prompt from the policy as it is (call before the LoRA exists), deterministic ODE
    (Euler over ``policy.sigmas(steps)``) from seeded noise; images of a prompt differ in their noise."""
    gen = torch.Generator(device=next(policy.transformer.parameters()).device).manual_seed(seed)
    sigmas = policy.sigmas(steps).float()
    set_eval_mode(policy)
    out: list[list[Image.Image]] = []
    for s in range(0, len(prompts), batch_size):
        ps = list(prompts[s:s + batch_size])
        srcs = list(sources[s:s + batch_size]) if sources is not None else None
        cond = index_cond(policy.encode(ps, srcs), torch.arange(len(ps)).repeat_interleave(2))
        x = policy.initial_latents(2 * len(ps), gen).float()
        for i in range(steps):
            v = policy.velocity(x, sigmas[i].to(x.device).expand(x.shape[0]), cond).float()
            x = x + (sigmas[i + 1] - sigmas[i]).to(x.device) * v
        ims = policy.decode(x)
        out.extend([ims[2 * k], ims[2 * k + 1]] for k in range(len(ps)))
    return out


# ----------------------------------------------------------------------------------------- objective

def sample_sigmas(n: int, generator: torch.Generator, kind: str = "uniform", mean: float = 0.0,
                  std: float = 1.0) -> torch.Tensor:
    """(n,) fp32 noise levels in (0, 1) on the generator's device: uniform, or logit-normal
    σ = sigmoid(mean + std·z) (SD3's training density)."""
    if kind == "uniform":
        return torch.rand(n, generator=generator, device=generator.device, dtype=torch.float32)
    if kind == "logit_normal":
        z = torch.randn(n, generator=generator, device=generator.device, dtype=torch.float32)
        return torch.sigmoid(mean + std * z)
    raise ValueError(f"sigma sampling must be 'uniform' or 'logit_normal', got {kind!r}")


def velocity_errors(policy: Policy, x0: torch.Tensor, noise: torch.Tensor, sigma: torch.Tensor, cond: Cond,
                    bf16: bool = False) -> torch.Tensor:
    """(b,) mean over latent elements of (v_θ(x_σ, σ) − (ε − x₀))², x_σ = (1−σ)·x₀ + σ·ε; fp32."""
    s = sigma.view(-1, *([1] * (x0.ndim - 1)))
    x_t = (1 - s) * x0 + s * noise
    ctx = torch.autocast(device_type=x0.device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    with ctx:
        v = policy.velocity(x_t, sigma, cond)
    err = (v.float() - (noise - x0)) ** 2
    return err.flatten(1).mean(1)


def pair_errors(policy: Policy, peft_model: Any, x0_w: torch.Tensor, x0_l: torch.Tensor, cond: Cond,
                sigma: torch.Tensor, noise: torch.Tensor, bf16: bool = False
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(e_θ(w), e_θ(l)) with grad and (e_ref(w), e_ref(l)) without, each (b,): winners and losers go
    through the network as one batch of 2b with the same σ, ε and conditioning per pair."""
    b = x0_w.shape[0]
    x0 = torch.cat([x0_w, x0_l])
    sig, eps = torch.cat([sigma, sigma]), torch.cat([noise, noise])
    cond2 = index_cond(cond, torch.arange(b).repeat(2))
    e = velocity_errors(policy, x0, eps, sig, cond2, bf16)
    with torch.no_grad(), peft_model.disable_adapter():
        e_ref = velocity_errors(policy, x0, eps, sig, cond2, bf16)
    return e[:b], e[b:], e_ref[:b], e_ref[b:]


def dpo_loss(e_w: torch.Tensor, e_l: torch.Tensor, ref_w: torch.Tensor, ref_l: torch.Tensor, beta: float,
             weight: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean over pairs of −w·log σ(−β·(Δ_policy − Δ_ref)), the logits −β·(Δ_policy − Δ_ref) (b,))."""
    logits = -beta * ((e_w - e_l) - (ref_w - ref_l))
    per = -F.logsigmoid(logits)
    if weight is not None:
        per = per * weight
    return per.mean(), logits


# ------------------------------------------------------------------------------------------ training

@dataclass(frozen=True)
class DPOArgs:
    """The DPO trainer's plain hyperparameters (made by ``arr_core.recipes.rpo.dpo_args`` from a
    ``TrainConfig``; meanings as there)."""

    steps: int
    config_digest: str
    pairs_per_step: int = 8
    micro_batch: int = 4
    beta: float = 2500.0
    sigma_sampling: str = "uniform"
    logit_mean: float = 0.0
    logit_std: float = 1.0
    seed: int = 0
    lora_rank: int = 16
    lora_alpha: float = 32.0
    lora_dropout: float = 0.0
    lora_targets: tuple[str, ...] | None = None
    lr: float = 5e-5
    weight_decay: float = 1e-4
    adam_betas: tuple[float, float] = (0.9, 0.999)
    adam_eps: float = 1e-8
    warmup_steps: int = 0
    grad_clip: float = 1.0
    bf16_autocast: bool = False
    gradient_checkpointing: bool = False
    attention_backend: str = "auto"
    checkpoint_every: int = 50
    config_json: str = "{}"


def train_dpo(policy: Policy, pairs: Sequence[DPOPair], args: DPOArgs, out_dir: str | Path, *,
              encode_images: Callable[[list[Image.Image]], torch.Tensor] | None = None,
              resume: str | Path | None = None, progress: Callable[[str], None] | None = print,
              extra_metrics: dict[str, float] | None = None) -> TrainResult:
    """Train a LoRA with the DPO loss for ``args.steps`` optimizer steps of ``pairs_per_step`` pairs
    (epochs of a seeded permutation of ``pairs``); checkpoints, exact resume and the LoRA export as
    RPO (``arr_core.rpo.checkpoint``). ``encode_images``: images → clean latents x₀ (default
    ``policy.encode_latents``). ``extra_metrics`` (e.g. the pair counts) go into every metrics line."""
    if not pairs:
        raise ValueError("no preference pairs to train on")
    if args.pairs_per_step % args.micro_batch:
        raise ValueError(f"pairs_per_step ({args.pairs_per_step}) must be a multiple of micro_batch ({args.micro_batch})")
    encode = encode_images or getattr(policy, "encode_latents", None)
    if encode is None:
        raise ValueError(f"{type(policy).__name__} has no encode_latents (images → latents); pass encode_images")
    say = progress or (lambda _s: None)
    out_dir = Path(out_dir)
    ctx = DistContext()

    # The LoRA setup is the trainer's (attach_lora); AdamW, warm-up, resume and metrics-file handling
    # follow arr_core.rpo.trainer.train without its distributed and compile paths: DPO runs in one process.
    peft_model, params = attach_lora(policy, args)
    device = params[0].device
    optimizer = torch.optim.AdamW(params, lr=args.lr, betas=args.adam_betas, eps=args.adam_eps,
                                  weight_decay=args.weight_decay)
    warm = args.warmup_steps
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / (warm + 1)) if warm else 1.0)
    generator = torch.Generator(device=device).manual_seed(args.seed * 7919)
    stream = PromptStream(len(pairs), args.seed)

    start = 0
    metrics_path = out_dir / "metrics.jsonl"
    if resume is not None:
        ckpt = find_checkpoint(resume)
        start, data_state = load_checkpoint(ckpt, peft_model=peft_model, optimizer=optimizer, scheduler=scheduler,
                                            generator=generator, config_digest=args.config_digest)
        stream.load(data_state)
        say(f"resumed from {ckpt} at step {start}")
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "config.json").write_text(args.config_json)
    kept = []
    if metrics_path.exists() and start > 0:
        kept = [ln for ln in metrics_path.read_text().splitlines() if ln and json.loads(ln)["step"] <= start]
    metrics_path.write_text("".join(ln + "\n" for ln in kept))

    last: dict[str, Any] = {}
    ckpt_dir: Path | None = None
    n_micro = args.pairs_per_step // args.micro_batch
    with attention_context(args.attention_backend, device):
        for step in range(start, args.steps):
            t0 = time.perf_counter()
            idx = stream.take(args.pairs_per_step)
            optimizer.zero_grad(set_to_none=True)
            sums = {k: 0.0 for k in ("loss", "acc", "logit", "mse_w", "mse_l", "ref_mse_w", "ref_mse_l")}
            for m in range(n_micro):
                batch = [pairs[j] for j in idx[m * args.micro_batch:(m + 1) * args.micro_batch]]
                b = len(batch)
                with torch.no_grad():
                    srcs = [p.source for p in batch] if batch[0].source is not None else None
                    cond = policy.encode([p.prompt for p in batch], srcs)
                    x_w = encode([p.winner for p in batch]).float().to(device)
                    x_l = encode([p.loser for p in batch]).float().to(device)
                sigma = sample_sigmas(b, generator, args.sigma_sampling, args.logit_mean, args.logit_std).to(device)
                noise = policy.initial_latents(b, generator).float()
                if noise.shape != x_w.shape:
                    raise ValueError(f"encoded latents {tuple(x_w.shape)} differ from the policy's noise "
                                     f"{tuple(noise.shape)}: the images do not match the policy's resolution")
                e_w, e_l, r_w, r_l = pair_errors(policy, peft_model, x_w, x_l, cond, sigma, noise, args.bf16_autocast)
                weight = torch.tensor([p.weight for p in batch], dtype=torch.float32, device=device)
                loss, logits = dpo_loss(e_w, e_l, r_w, r_l, args.beta, weight)
                value = float(loss.detach())
                if not math.isfinite(value):
                    raise TrainingHealthError(f"non-finite DPO loss ({value}) at step {step + 1}: the run diverged "
                                              f"(lr {scheduler.get_last_lr()[0]:g}); lower lr or beta")
                (loss / n_micro).backward()
                with torch.no_grad():
                    sums["loss"] += value
                    sums["acc"] += float((logits > 0).float().mean())
                    sums["logit"] += float(logits.mean())
                    for k, t in (("mse_w", e_w), ("mse_l", e_l), ("ref_mse_w", r_w), ("ref_mse_l", r_l)):
                        sums[k] += float(t.mean())
            grad_norm = _optimizer_step(optimizer, scheduler, params, args.grad_clip, ctx, False, step + 1)
            m_ = {k: v / n_micro for k, v in sums.items()}
            done = step + 1
            dt = time.perf_counter() - t0
            last = {"step": done, "loss": m_["loss"], "implicit_acc": m_["acc"], "logit_mean": m_["logit"],
                    "mse_w": m_["mse_w"], "mse_l": m_["mse_l"], "ref_mse_w": m_["ref_mse_w"],
                    "ref_mse_l": m_["ref_mse_l"], "grad_norm": grad_norm, "lr": scheduler.get_last_lr()[0],
                    "time_step_s": dt, "pairs_per_s": args.pairs_per_step / dt, **(extra_metrics or {})}
            with metrics_path.open("a") as f:
                f.write(json.dumps(last) + "\n")
            say(f"step {done}/{args.steps} loss {m_['loss']:.4f} acc {m_['acc']:.2f} logit {m_['logit']:+.3f} "
                f"mse w/l {m_['mse_w']:.4f}/{m_['mse_l']:.4f} |g| {grad_norm:.2e} {dt:.2f}s")
            if (args.checkpoint_every and done % args.checkpoint_every == 0) or done == args.steps:
                ckpt_dir = out_dir / "checkpoints" / f"step_{done:06d}"
                save_checkpoint(ckpt_dir, peft_model=peft_model, optimizer=optimizer, scheduler=scheduler,
                                generator=generator, step=done, data_state=stream.state(),
                                config_digest=args.config_digest)
                write_manifest(ckpt_dir, done)
    lora_dir = out_dir / "lora"
    save_lora(peft_model, lora_dir)
    say(f"LoRA saved to {lora_dir}")
    return TrainResult(lora_dir, metrics_path, args.steps, ckpt_dir, last, peft_model)
