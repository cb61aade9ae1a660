"""Supervised flow-matching pretraining of the toy policy on scene-world renders (``arr toy pretrain``).

Rectified flow / flow matching (Liu et al., 2022; Lipman et al., 2022; as in SD3, Esser et al., 2024):
for an image x₀ (a render at the policy's ``image_size``, 32 px by default, scaled to [−1, 1]), noise ε and σ ~ U(0, 1), the network sees
x_σ = (1−σ)·x₀ + σ·ε and predicts x₀ (x-prediction, see ``adapters/toy.py``); the loss is the clean-image
error weighted by 1/max(σ, f)² (``flow_matching_loss``; f = 0.05 would be JiT's "x-pred, v-loss", which
left the policy ignoring colour words; f = 0.5 by default). The text encoder and the transformer are
trained together from scratch; the saved weights are an exponential moving average.

The data are deliberately imperfect, like a base model trained on noisy captions: a fraction
``defect_rate`` of the training images carry one scene defect (missing/extra object, wrong colour,
count, shape or relation) that contradicts their prompt. The base policy therefore puts some mass on
wrong images, and a reward that prefers correct images has something to remove (the RPO benchmark,
``benchmarks/rpo_toy.py``). With the default settings the result is a mediocre policy (GenEval-format
accuracy in ``docs/toy.md``).

Classifier-free guidance: with ``cond_dropout`` p > 0 a fraction p of the training prompts is replaced
by the empty prompt, so the network also learns the unconditional prediction that guided sampling
(``ToyPolicy(guidance_scale=s)``, s > 1) contrasts with (SD3 drops each text encoder with p = 0.464;
Ho & Salimans use 0.1–0.2). The default p = 0 keeps the data stream of runs made without it.

Noise levels: σ ~ U(0, 1) by default; ``sigma_sampling="logit-normal"`` draws σ = sigmoid(m + s·z),
z ~ N(0, 1), SD3's choice (m = 0, s = 1), which puts more of the training on the middle noise levels.
That is where the toy policy decides an object's shape: shipped checkpoints reconstruct renders
exactly from σ = 0.2 but return round blobs from σ ≈ 0.6 (docs/experiments/, "Why the held-out images
fail"). Deviation from SD3's recipe: pixel space instead of a VAE latent.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from arr_core.errors import InputError
from arr_core.sim.toy_policy import ToyPolicy, images_to_latents

LOSS_FLOOR = 0.5  # see flow_matching_loss: between JiT's v-loss (0.05) and the x-loss (1)
SCHEDULES = ("constant", "cosine")
SIGMA_SAMPLINGS = ("uniform", "logit-normal")
SCENE_DEFECTS = ("missing_object", "extra_object", "wrong_color", "wrong_count", "broken_relation",
                 "wrong_shape")


def make_batch(rng: np.random.Generator, batch: int, size: int, defect_rate: float
               ) -> tuple[list[str], torch.Tensor, int]:
    """(prompts, (b, 3, size, size) images in [−1, 1], number of defective images) from ``rng``.

    Each image is a correct render of its prompt, except with probability ``defect_rate`` where one
    applicable scene defect is applied first.
    """
    from arr_core.sim.world import applicable_defects, apply_defects, render, sample_spec, scene_from_spec

    prompts, images, n_bad = [], [], 0
    for _ in range(batch):
        spec = sample_spec(rng)
        scene = scene_from_spec(spec, rng)
        if rng.random() < defect_rate:
            options = [d for d in applicable_defects(spec) if d in SCENE_DEFECTS]
            scene = apply_defects(scene, spec, [options[int(rng.integers(len(options)))]], rng)
            n_bad += 1
        prompts.append(spec.prompt)
        images.append(render(scene, size=size))
    return prompts, images_to_latents(images, size), n_bad


def sample_sigmas(n: int, generator: torch.Generator, sampling: str = "uniform", mean: float = 0.0,
                  std: float = 1.0) -> torch.Tensor:
    """(n,) fp32 noise levels in (0, 1): ``uniform`` U(0, 1), or ``logit-normal`` sigmoid(mean + std·z)
    with z ~ N(0, 1) (SD3, Esser et al. 2024: m = 0, s = 1). Uniform draws ``torch.rand`` exactly as
    before this option existed, so runs made without it keep their noise stream."""
    if sampling == "uniform":
        return torch.rand((n,), generator=generator, dtype=torch.float32)
    if sampling == "logit-normal":
        if std <= 0:
            raise ValueError(f"logit-normal std must be > 0, got {std}")
        z = torch.randn((n,), generator=generator, dtype=torch.float32)
        return torch.sigmoid(mean + std * z)
    raise ValueError(f"sigma sampling must be one of {SIGMA_SAMPLINGS}, got {sampling!r}")


def flow_matching_loss(policy: ToyPolicy, prompts: list[str], x0: torch.Tensor,
                       generator: torch.Generator, loss_floor: float = LOSS_FLOOR,
                       sigma_sampling: str = "uniform", logit_mean: float = 0.0,
                       logit_std: float = 1.0) -> torch.Tensor:
    """Flow-matching loss of the x-predicting network at σ drawn by ``sample_sigmas`` (U(0, 1) by
    default), with gradients through the transformer and the text encoder.

    The velocity error of an x-prediction is (x₀ − x̂₀)/σ, so JiT's "x-pred, v-loss" weights the
    clean-image error by 1/σ². ``loss_floor`` f caps that weight: loss = mean(|x̂₀ − x₀|²/max(σ, f)²).
    f = the policy's ``sigma_min`` (0.05) is the plain v-loss; f = 1 is the x-loss (every σ weighted
    equally). The v-loss puts almost all weight on small σ, where the text hardly matters (the noisy
    image already shows the objects); a policy trained with it for 6000 steps ignored colour words
    (docs/toy.md).
    """
    b = x0.shape[0]
    eps = torch.randn(x0.shape, generator=generator, dtype=torch.float32)
    sigma = sample_sigmas(b, generator, sigma_sampling, logit_mean, logit_std)
    s = sigma.view(b, 1, 1, 1)
    xs = (1 - s) * x0 + s * eps
    ids, mask = policy.tokenize(prompts)
    cond = policy.encode_tokens(ids, mask)
    x0_hat = policy.predict_x0(xs.to(policy.device), sigma.to(policy.device), cond)
    weight = 1.0 / s.clamp_min(float(loss_floor)).to(policy.device) ** 2
    return (weight * (x0_hat - x0.to(policy.device)) ** 2).mean()


def lr_factor(k: int, steps: int, warmup: int, schedule: str) -> float:
    """Learning-rate multiplier after ``k`` optimizer steps: linear warmup over ``warmup`` steps, then
    1 (``constant``) or a cosine from 1 down to 0 at step ``steps`` (``cosine``)."""
    ramp = min(1.0, (k + 1) / max(1, warmup))
    if schedule == "constant" or k < warmup:
        return ramp
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (k - warmup) / max(1, steps - warmup))))


@torch.no_grad()
def _ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    for pe, pm in zip(ema.parameters(), model.parameters(), strict=True):
        pe.lerp_(pm, 1.0 - decay)


def pretrain(out_dir: Path | str, *, steps: int = 5000, seed: int = 0, batch_size: int = 16,
             lr: float = 1e-3, warmup: int = 100, defect_rate: float = 0.3, ema_decay: float = 0.999,
             loss_floor: float = LOSS_FLOOR, init: Path | str | None = None, schedule: str = "constant",
             cond_dropout: float = 0.0, sigma_sampling: str = "uniform", logit_mean: float = 0.0,
             logit_std: float = 1.0, architecture: dict[str, Any] | None = None, eval_per_tag: int = 20,
             eval_steps: int = 10, log_every: int = 100, log: Callable[[str], None] | None = print) -> dict[str, Any]:
    """Train a toy policy for ``steps`` AdamW steps and save it (EMA weights) to ``out_dir``.

    ``init``: None starts from random weights (``seed``); a policy folder (``ToyPolicy.save``, e.g. an
    earlier ``pretrain``) continues from its weights with a fresh optimizer, warmup and EMA started at
    those weights; its pretraining summary is kept under ``"continued_from"``. ``schedule``:
    ``constant`` (after warmup) or ``cosine`` (decay to 0 at the last step). ``cond_dropout``: the share
    of training prompts replaced by the empty prompt (classifier-free guidance; 0 = none).
    ``sigma_sampling``: ``uniform`` or ``logit-normal`` (``logit_mean``, ``logit_std``; ``sample_sigmas``).
    ``architecture``: overrides of ``default_config()`` for a fresh policy (e.g. ``{"width": 192,
    "layers": 6}``); a continued run takes its architecture from ``init`` and refuses overrides.

    Returns the summary that is also stored under ``"pretrain"`` in ``toy_policy.json``: steps,
    seconds, final loss, settings and the held-out GenEval-format accuracy (``eval_per_tag`` prompts
    per tag × 1 seed, ``eval_steps`` ODE steps; 0 skips it).
    """
    if steps < 1 or batch_size < 1:
        raise ValueError(f"steps and batch_size must be >= 1, got {steps} and {batch_size}")
    if not 0.0 <= defect_rate <= 1.0:
        raise ValueError(f"defect_rate must lie in [0, 1], got {defect_rate}")
    if not 0.0 < loss_floor <= 1.0:
        raise ValueError(f"loss_floor must lie in (0, 1], got {loss_floor}")
    if not 0.0 <= ema_decay < 1.0:
        raise ValueError(f"ema_decay must lie in [0, 1), got {ema_decay}")
    if not 0.0 <= cond_dropout < 1.0:
        raise ValueError(f"cond_dropout must lie in [0, 1), got {cond_dropout}")
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
    if sigma_sampling not in SIGMA_SAMPLINGS:
        raise ValueError(f"sigma_sampling must be one of {SIGMA_SAMPLINGS}, got {sigma_sampling!r}")
    if logit_std <= 0:
        raise ValueError(f"logit_std must be > 0, got {logit_std}")
    if architecture and init is not None:
        raise ValueError("architecture overrides need a fresh policy; a continued run keeps init's architecture")
    t0 = time.perf_counter()
    policy = ToyPolicy.random(seed=seed, **(architecture or {})) if init is None else ToyPolicy.load(init)
    previous = policy.config.pop("pretrain", None)
    modules = torch.nn.ModuleDict({"text": policy.text_encoder, "image": policy.transformer}).train()
    ema = copy.deepcopy(modules).eval().requires_grad_(False)
    opt = torch.optim.AdamW(modules.parameters(), lr=lr, betas=(0.9, 0.99), weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: lr_factor(k, steps, warmup, schedule))
    # A continued run draws other data and noise than the run it continues (same seed, other stream).
    offset = 0 if previous is None else int(previous.get("steps", 0)) + 1
    rng = np.random.default_rng([seed, offset] if offset else seed)
    gen = torch.Generator().manual_seed(seed + 1_000_003 * offset)
    size = policy.config["image_size"]
    running, n_bad_total = None, 0
    for step in range(1, steps + 1):
        prompts, x0, n_bad = make_batch(rng, batch_size, size, defect_rate)
        n_bad_total += n_bad
        if cond_dropout > 0:  # drawn only then: runs without dropout keep their data stream
            prompts = [("" if drop else p) for p, drop in zip(prompts, rng.random(batch_size) < cond_dropout,
                                                               strict=True)]
        loss = flow_matching_loss(policy, prompts, x0, gen, loss_floor, sigma_sampling, logit_mean, logit_std)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(modules.parameters(), 1.0)
        opt.step()
        sched.step()
        _ema_update(ema, modules, ema_decay if init is not None else min(ema_decay, (1 + step) / (10 + step)))
        running = loss.item() if running is None else 0.98 * running + 0.02 * loss.item()
        if log and (step % log_every == 0 or step == steps):
            log(f"step {step}/{steps} loss {running:.4f} ({time.perf_counter() - t0:.0f} s)")
    train_s = time.perf_counter() - t0
    policy.text_encoder, policy.transformer = ema["text"], ema["image"]
    summary: dict[str, Any] = {
        "steps": steps, "seed": seed, "batch_size": batch_size, "lr": lr, "warmup": warmup,
        "defect_rate": defect_rate, "ema_decay": ema_decay, "loss_floor": loss_floor, "final_loss": round(float(running), 5),
        "defective_images": n_bad_total, "train_seconds": round(train_s, 1), "schedule": schedule,
        "cond_dropout": cond_dropout, "sigma_sampling": sigma_sampling,
    }
    if sigma_sampling == "logit-normal":
        summary.update(logit_mean=logit_mean, logit_std=logit_std)
    if init is not None:
        summary["continued_from"] = {"source": policy.source, "pretrain": previous}
    if eval_per_tag > 0:
        from arr_core.sim.toy_eval import geneval_accuracy, heldout_specs

        res = geneval_accuracy(policy, heldout_specs(eval_per_tag), seeds=(0,), steps=eval_steps)
        summary["eval"] = {"overall": round(res["overall"], 4), "per_tag": {k: round(v, 4) for k, v in
                           res["per_tag"].items()}, "n": res["n"], "steps": eval_steps,
                           "prompts": f"heldout_specs({eval_per_tag}, seed=12345)"}
        if log:
            log(f"held-out GenEval-format accuracy {res['overall']:.3f} over {res['n']} images: "
                + ", ".join(f"{k} {v:.2f}" for k, v in res["per_tag"].items()))
    summary["total_seconds"] = round(time.perf_counter() - t0, 1)
    policy.config["pretrain"] = summary
    policy.save(out_dir)
    return summary


def run_pretrain(*, steps: int, out: Path, seed: int = 0, batch_size: int = 16, lr: float = 1e-3,
                 defect_rate: float = 0.3, eval_per_tag: int = 20, threads: int | None = None,
                 loss_floor: float = 0.5, init: Path | None = None, schedule: str = "constant",
                 cond_dropout: float = 0.0, sigma_sampling: str = "uniform", logit_mean: float = 0.0,
                 logit_std: float = 1.0, width: int | None = None, layers: int | None = None,
                 image_size: int | None = None, patch_size: int | None = None,
                 log: Callable[[str], None] = print) -> dict:
    """``arr toy pretrain`` and ``benchmarks/toy_pretrain.py``: validate the options (errors name the
    command-line flag), then :func:`pretrain`."""
    if steps < 1:
        raise InputError(f"must be >= 1, got {steps}", field="--steps")
    if batch_size < 1:
        raise InputError(f"must be >= 1, got {batch_size}", field="--batch-size")
    if not 0.0 <= defect_rate <= 1.0:
        raise InputError(f"must lie in [0, 1], got {defect_rate}", field="--defect-rate")
    if not 0.0 < loss_floor <= 1.0:
        raise InputError(f"must lie in (0, 1], got {loss_floor}", field="--loss-floor")
    if not 0.0 <= cond_dropout < 1.0:
        raise InputError(f"must lie in [0, 1), got {cond_dropout}", field="--cond-dropout")
    if logit_std <= 0:
        raise InputError(f"must be > 0, got {logit_std}", field="--logit-std")
    from arr_core.sim.toy_policy import CONFIG_FILE, default_config

    defaults = default_config()
    head = defaults["head_dim"]
    if width is not None and (width < head or width % head):
        raise InputError(f"must be a positive multiple of {head} (the head width), got {width}", field="--width")
    if layers is not None and layers < 1:
        raise InputError(f"must be >= 1, got {layers}", field="--layers")
    if image_size is not None and image_size < 8:
        raise InputError(f"must be >= 8, got {image_size}", field="--image-size")
    if patch_size is not None and patch_size < 1:
        raise InputError(f"must be >= 1, got {patch_size}", field="--patch-size")
    size, patch = image_size or defaults["image_size"], patch_size or defaults["patch_size"]
    if size % patch:
        raise InputError(f"the image size ({size}) must be a multiple of the patch size ({patch})",
                         field="--patch-size")
    architecture = {k: v for k, v in (("width", width), ("layers", layers), ("image_size", image_size),
                                      ("patch_size", patch_size)) if v is not None}
    if architecture and init is not None:
        raise InputError("cannot change the architecture of a continued policy (drop --width/--layers/"
                         "--image-size/--patch-size)",
                         field="--init", file=str(init))
    if threads is not None and threads < 1:
        raise InputError(f"must be >= 1, got {threads}", field="--threads")
    if schedule not in SCHEDULES:
        raise InputError(f"must be one of {', '.join(SCHEDULES)}, got {schedule!r}", field="--schedule")
    if sigma_sampling not in SIGMA_SAMPLINGS:
        raise InputError(f"must be one of {', '.join(SIGMA_SAMPLINGS)}, got {sigma_sampling!r}",
                         field="--sigma-sampling")
    if init is not None and not (init / CONFIG_FILE).is_file():
        raise InputError(f"is not a toy policy folder ({CONFIG_FILE} is missing)", field="--init",
                         file=str(init))
    if init is not None and out.resolve() == init.resolve():
        raise InputError("must differ from --init (saving would overwrite the policy being continued)",
                         field="--out", file=str(out))
    if out.exists() and not out.is_dir():
        raise InputError("exists and is not a folder", field="--out", file=str(out))


    if threads is not None:
        torch.set_num_threads(threads)
    return pretrain(out, steps=steps, seed=seed, batch_size=batch_size, lr=lr, defect_rate=defect_rate,
                    eval_per_tag=eval_per_tag, loss_floor=loss_floor, init=init, schedule=schedule,
                    cond_dropout=cond_dropout, sigma_sampling=sigma_sampling, logit_mean=logit_mean,
                    logit_std=logit_std, architecture=architecture, log=log)
