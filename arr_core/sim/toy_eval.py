"""GenEval-format accuracy of a policy on scene-world prompts, checked by the scene detector.

GenEval (Ghosh et al., 2023) samples images per prompt, detects objects and checks the prompt's
``include``/``exclude`` clauses; a prompt-image passes when every clause passes, and the reported
score is the mean over tags. Here the detector is the scene world's numpy detector
(``arr_core.sim.world.detect``) and the checker ``arr_core.sim.world.check_spec``; sampling is the
deterministic probability-flow ODE (Euler, noise 0) from seeded noise, or with ``sampler="sde"`` RPO's
training sampler (Flow-GRPO SDE) with step noise seeded per prompt-image; a prompt that occurs more than
once in the set gets fresh noise for each occurrence (``noise_keys``), so every prompt-image of the set
is an independent sample.

Aggregation: GenEval's, through the one implementation ``arr_core.bench.generation.geneval_scores``
(also used by ``arr eval generate`` and the pipeline's evaluation): per-tag accuracy is the mean over the
tag's prompts of the prompt's pass share over its seeds, ``overall`` the mean over tags; 95 % intervals
by bootstrap over prompts (stratified by tag for ``overall``), so the seeds of one prompt count as one
cluster rather than as independent draws. ``image_mean`` keeps the mean over all prompt-images (the
``overall`` of earlier versions; equal to ``overall`` on tag-balanced sets such as ``heldout_specs``).
"""

from __future__ import annotations

import math
import zlib
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch

from arr_core.rpo.policy import Policy


def seeded_noise(policy: Policy, keys: Sequence[str]) -> torch.Tensor:
    """(b, ...) initial noise, one CPU generator per key (so a sample does not depend on its batch)."""
    out = []
    for key in keys:
        gen = torch.Generator().manual_seed(zlib.crc32(key.encode()))
        out.append(policy.initial_latents(1, gen))
    return torch.cat(out)


def _integrate(policy: Policy, prompts: list[str], noise: torch.Tensor, steps: int,
               step: Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
               start: int = 0) -> torch.Tensor:
    """Run ``x ← step(i, x, v, σ_i, σ_{i+1})`` from σ_start (1 for ``start`` 0) to 0 on the policy's
    schedule of ``steps``; ``noise`` is the state at σ_start."""
    cond = policy.encode(prompts)
    sig = policy.sigmas(steps)
    x = noise
    for i in range(start, steps):
        v = policy.velocity(x, sig[i].expand(x.shape[0]).to(x.device), cond)
        x = step(i, x, v, sig[i], sig[i + 1])
    return x


def _euler(i: int, x: torch.Tensor, v: torch.Tensor, s: torch.Tensor, s_next: torch.Tensor) -> torch.Tensor:
    return x + (s_next - s) * v


@torch.no_grad()
def sample_ode(policy: Policy, prompts: list[str], noise: torch.Tensor, steps: int) -> torch.Tensor:
    """Euler integration of the probability-flow ODE from σ = 1 to 0: x ← x + (σ_{i+1} − σ_i)·v."""
    return _integrate(policy, prompts, noise, steps, _euler)


@torch.no_grad()
def sample_sde(policy: Policy, prompts: list[str], noise: torch.Tensor, steps: int, keys: Sequence[str],
               a: float = 0.7) -> torch.Tensor:
    """The training sampler (Flow-GRPO SDE, noise level ``a``) from σ = 1 to 0. Each sample's step noise
    comes from its own generator (seeded by its key), so a sample does not depend on its batch;
    ``a = 0`` is the Euler ODE of ``sample_ode``."""
    from arr_core.rpo.sde import sde_step

    if len(keys) != noise.shape[0]:
        raise ValueError(f"got {len(keys)} keys for {noise.shape[0]} samples")
    step_noise = torch.stack([seeded_noise(policy, [f"{k}|sde{i}" for i in range(steps)]) for k in keys], dim=1)
    return _integrate(policy, prompts, noise, steps, lambda i, x, v, s, s_next: sde_step(
        x, v, s, s_next, kind="flow_grpo", a=a, noise=step_noise[i])[0])


def noise_keys(prompts: Sequence[str]) -> list[str]:
    """Noise key per prompt: the prompt itself, with ``#k`` appended for its k-th repeat (k ≥ 1).

    A tag-balanced set repeats prompts where the grammar has few (3 single-object prompts fill 34
    slots); keyed by text alone the repeats would draw the same noise and give the same image, so a
    tag's accuracy would rest on a handful of distinct images counted many times over."""
    seen: dict[str, int] = {}
    out = []
    for p in prompts:
        k = seen.get(p, 0)
        seen[p] = k + 1
        out.append(p if k == 0 else f"{p}#{k}")
    return out


FAILURE_KINDS = ("empty", "missing", "too_few", "too_many", "colour", "position")


def failure_kind(result: dict[str, Any], detections: Sequence[Any]) -> str:
    """Why a prompt-image failed its check: ``empty`` when the detector found no object at all, else
    the ``fail`` of the first failed clause of ``check_spec``'s ``result`` (``missing``: no object of
    the asked shape; ``too_few``, ``too_many``, ``colour``, ``position``)."""
    if result["passed"]:
        raise ValueError("failure_kind needs a failed check result")
    if not detections:
        return "empty"
    return next(c["fail"] for c in result["clauses"] if not c["passed"])


def _failure(spec: Any, image: Any) -> str | None:
    """None when ``image`` passes ``spec``'s detector check, else its ``failure_kind``."""
    from arr_core.sim.world import check_spec, detect

    dets = detect(image)
    res = check_spec(spec, dets)
    return None if res["passed"] else failure_kind(res, dets)


@contextmanager
def _eval_mode(policy: Any) -> Iterator[None]:
    """The policy's transformer in eval mode for the block, then back in the mode it was in."""
    was_training = policy.transformer.training
    policy.transformer.eval()
    try:
        yield
    finally:
        policy.transformer.train(was_training)


def _interval(values: list[float], lo: float = 0.0, hi: float = 1.0) -> tuple[float, float]:
    """Normal 95 % interval of the mean of ``values`` (clipped to [lo, hi])."""
    n = len(values)
    m = sum(values) / n
    if n < 2:
        return (lo, hi)
    var = sum((v - m) ** 2 for v in values) / (n - 1)
    half = 1.96 * math.sqrt(var / n)
    return (max(lo, m - half), min(hi, m + half))


def paired_delta(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """Change in accuracy between two ``geneval_accuracy`` results on the same prompts, seeds and
    sampler (hence the same initial and step noise per prompt-image), with a paired 95 % interval:
    the normal interval of the per-prompt differences, so the noise both runs share cancels and the
    interval is that of the change, not of either accuracy. Returns ``{"delta", "ci95", "n_prompts"}``."""
    pb, pa = before.get("passed"), after.get("passed")
    if pb is None or pa is None:
        raise ValueError("both results need their per-image 'passed' lists (do not pop them)")
    if len(pb) != len(pa) or any(len(x) != len(y) for x, y in zip(pb, pa, strict=True)):
        raise ValueError(f"results are not paired: {len(pb)} vs {len(pa)} prompts, or unequal seeds per prompt")
    if before.get("seeds") != after.get("seeds") or before.get("sampler") != after.get("sampler"):
        raise ValueError("results are not paired: seeds or sampler differ "
                         f"({before.get('seeds')}/{before.get('sampler')} vs {after.get('seeds')}/{after.get('sampler')})")
    diffs = [sum(y) / len(y) - sum(x) / len(x) for x, y in zip(pb, pa, strict=True)]
    return {"delta": sum(diffs) / len(diffs), "ci95": list(_interval(diffs, -1.0, 1.0)), "n_prompts": len(diffs)}


def geneval_accuracy(policy: Policy, specs: Sequence[Any], seeds: Sequence[int] = (0, 1), steps: int = 10,
                     lora: Any = None, batch_size: int = 64, return_images: bool = False,
                     sampler: str = "ode", a: float = 0.7, n_boot: int = 2000, boot_seed: int = 0) -> dict[str, Any]:
    """Detector-checked GenEval-format accuracy of ``policy`` on scene-world ``specs``.

    ``specs``: ``PromptSpec`` objects (or GenEval metadata dicts); ``seeds``: noise seeds per prompt;
    ``lora``: None evaluates ``policy`` as it is (with whatever adapter its transformer carries); a
    peft model wrapping ``policy.transformer`` (e.g. ``TrainResult.model``) has its adapter layers
    switched on first (for the base, call inside ``with lora.disable_adapter():`` and pass None);
    ``sampler``: ``ode`` (deterministic Euler, GenEval's usual setting) or ``sde`` (the RPO training
    sampler, Flow-GRPO noise level ``a``, seeded per prompt-image); ``n_boot``/``boot_seed``: the
    bootstrap of the intervals.
    Returns ``{"overall" (mean over tags), "tag_mean" (the same), "image_mean" (mean over prompt-images),
    "per_tag": {tag: acc}, "ci95": [lo, hi], "per_tag_ci95": {tag: [lo, hi]}, "n": images, "n_prompts",
    "steps", "seeds", "passed": [[bool]], "failures": {tag: {kind: failed images}}}`` (kinds:
    ``failure_kind``; aggregation: see the module docstring).
    """
    from arr_core.bench.generation import geneval_scores
    from arr_core.sim.world import PromptSpec

    if not specs:
        raise ValueError("specs must hold at least one prompt spec")
    if not seeds:
        raise ValueError("seeds must hold at least one seed")
    if sampler not in ("ode", "sde"):
        raise ValueError(f"sampler must be 'ode' or 'sde', got {sampler!r}")
    specs = [s if isinstance(s, PromptSpec) else PromptSpec.from_geneval(s) for s in specs]
    if lora is not None:
        if not hasattr(lora, "enable_adapter_layers"):
            raise TypeError("lora must be None or a peft model wrapping policy.transformer")
        lora.enable_adapter_layers()  # e.g. after disable_adapter_layers() for a base evaluation
    jobs = [(i, seed) for i in range(len(specs)) for seed in seeds]
    keys = noise_keys([s.prompt for s in specs])
    passed: list[list[bool]] = [[] for _ in specs]
    failures: dict[str, Counter[str]] = {s.tag: Counter() for s in specs}
    images: list[Any] = []
    with _eval_mode(policy):
        for start in range(0, len(jobs), batch_size):
            chunk = jobs[start:start + batch_size]
            prompts = [specs[i].prompt for i, _ in chunk]
            chunk_keys = [f"{keys[i]}|{seed}" for i, seed in chunk]
            noise = seeded_noise(policy, chunk_keys)
            x0 = (sample_ode(policy, prompts, noise, steps) if sampler == "ode"
                  else sample_sde(policy, prompts, noise, steps, chunk_keys, a))
            for (i, _), im in zip(chunk, policy.decode(x0), strict=True):
                kind = _failure(specs[i], im)
                passed[i].append(kind is None)
                if kind is not None:
                    failures[specs[i].tag][kind] += 1
                if return_images:
                    images.append(im)
    per_prompt = [sum(p) / len(p) for p in passed]
    scores = geneval_scores(per_prompt, [s.tag for s in specs], n_boot=n_boot, seed=boot_seed)
    tags = sorted(scores["per_tag"])
    overall = scores["overall"]
    out = {
        "overall": overall["point"],
        "tag_mean": overall["point"],
        "image_mean": sum(per_prompt) / len(per_prompt),
        "per_tag": {tag: scores["per_tag"][tag]["point"] for tag in tags},
        "ci95": [overall["lo"], overall["hi"]],
        "per_tag_ci95": {tag: [scores["per_tag"][tag]["lo"], scores["per_tag"][tag]["hi"]] for tag in tags},
        "n": len(jobs),
        "n_prompts": len(specs),
        "steps": steps,
        "sampler": sampler if sampler == "ode" else f"sde(a={a})",
        "seeds": list(seeds),
        "passed": passed,
        "failures": {tag: dict(sorted(failures[tag].items())) for tag in tags},
    }
    if return_images:
        out["images"] = images
    return out


def heldout_specs(n_per_tag: int, seed: int = 12345) -> list[Any]:
    """A tag-balanced list of ``n_per_tag`` × 6 scene-world specs drawn from ``seed`` (distinct
    prompts where the grammar allows)."""
    import numpy as np

    from arr_core.sim.world import TAGS, sample_spec

    rng = np.random.default_rng(seed)
    out = []
    for tag in TAGS:
        seen: set[str] = set()
        tries = 0
        while sum(1 for s in out if s.tag == tag) < n_per_tag:
            spec = sample_spec(rng, tag)
            tries += 1
            if spec.prompt in seen and tries < 50 * n_per_tag:
                continue
            seen.add(spec.prompt)
            out.append(spec)
    return out


@torch.no_grad()
def restoration_accuracy(policy: Any, specs: Sequence[Any], steps: int = 8, seed: int = 0,
                         batch_size: int = 64) -> list[dict[str, Any]]:
    """Can the toy policy finish a correct image from the middle of its schedule? (SDEdit-style.)

    Renders each scene-world spec correctly (``scene_from_spec``, rng ``seed``) at the policy's image
    size, noises it to σ_k = ``policy.sigmas(steps)[k]`` (one ε per image, generator ``seed``) and
    runs the Euler ODE from σ_k to 0; the result is detector-checked as in ``geneval_accuracy``.
    k = 0 starts from pure noise (ordinary sampling, other noise than ``geneval_accuracy``'s);
    k = ``steps`` returns the renders themselves. A policy that keeps the shapes visible at σ_k should
    pass about as often as the renders do. Toy policy only (pixel space). Returns one row per k:
    ``{"start", "sigma", "overall", "per_tag", "failures": {kind: images}, "n"}``.
    """
    import numpy as np

    from arr_core.sim.toy_policy import images_to_latents
    from arr_core.sim.world import PromptSpec, render, scene_from_spec

    if not specs:
        raise ValueError("specs must hold at least one prompt spec")
    specs = [s if isinstance(s, PromptSpec) else PromptSpec.from_geneval(s) for s in specs]
    size = policy.config["image_size"]
    rng = np.random.default_rng(seed)
    x0 = images_to_latents([render(scene_from_spec(s, rng), size=size) for s in specs], size)
    eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float32)
    sig = policy.sigmas(steps)
    counts = Counter(s.tag for s in specs)
    rows = []
    with _eval_mode(policy):
        for k in range(steps + 1):
            passed, failures = Counter(), Counter()
            for lo in range(0, len(specs), batch_size):
                chunk = slice(lo, lo + batch_size)
                xk = (1 - sig[k]) * x0[chunk] + sig[k] * eps[chunk]
                out = _integrate(policy, [s.prompt for s in specs[chunk]], xk.to(policy.device), steps,
                                 _euler, start=k)
                for spec, im in zip(specs[chunk], policy.decode(out), strict=True):
                    kind = _failure(spec, im)
                    passed[spec.tag] += kind is None
                    if kind is not None:
                        failures[kind] += 1
            rows.append({"start": k, "sigma": round(float(sig[k]), 4),
                         "overall": sum(passed.values()) / len(specs),
                         "per_tag": {t: passed[t] / counts[t] for t in sorted(counts)},
                         "failures": dict(sorted(failures.items())), "n": len(specs)})
    return rows
