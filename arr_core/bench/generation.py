"""Generation benchmarks of a policy: sampling, GenEval-format scoring and per-prompt checkpoints.

GenEval (Ghosh et al., 2023): N images per prompt, every ``include``/``exclude`` clause checked, an
image passes when all clauses pass, the score is the mean over tags. TIIF-Bench (Wei et al., 2025)
and UniGenBench (Wang et al., 2025) ask a VLM yes/no questions per prompt. Here:

- sampling is the deterministic probability-flow ODE (Euler, x ← x + (σ_{i+1} − σ_i)·v) from noise
  seeded per (seed, prompt id, sample index), so base and trained policies see the same noise and
  a prompt's images do not depend on the batch they were drawn in;
- per-tag accuracy = mean over prompts of the prompt's pass rate over its N images; overall = mean
  over tags (GenEval); 95 % intervals by bootstrap over prompts (stratified by tag for overall),
  because the N images of one prompt are not independent draws. :func:`geneval_scores` is the one
  implementation of this aggregation (``run_geneval``, the pipeline's evaluation through
  ``arr_core.recipes.evaluate`` and ``arr_core.sim.toy_eval.geneval_accuracy`` all use it);
- checkpoints: question accuracy (answers equal to the expected yes/no) and the share of images with
  every question right, per category and overall, with the same bootstrap over prompts. TIIF-Bench's
  official score averages question accuracy per category; UniGenBench reports per-testpoint scores
  from its own VLM prompt — our single yes/no question per testpoint is a simplification. The
  official protocols of these benchmarks (and of GEdit-Bench, ImgEdit and DPG-Bench) score existing
  images in ``arr_core.bench.protocols`` (``arr eval protocol``; docs/protocols.md).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from arr_core.bench.checkers import Checker, CheckResult
from arr_core.bench.prompt_sets import PromptItem
from arr_core.bench.report import GridRow, ImageGrid, Report, Section, Table
from arr_core.bench.results import EvalResult, rate_ci, simulation_notes
from arr_core.bench.svg import Plot, Series
from arr_core.digest import digest_obj

ImagesById = dict[str, list[str]]


# ---------------------------------------------------------------------------------------------
# sampling


NoiseKey = Callable[[PromptItem, int], str]


def sample_images(policy: Any, items: Sequence[PromptItem], out_dir: str | Path, *, n_per_prompt: int = 4,
                  steps: int = 20, seed: int = 0, batch_size: int = 16,
                  context: Callable[[], contextlib.AbstractContextManager] | None = None,
                  noise_key: NoiseKey | None = None,
                  on_progress: Callable[[int, int], None] | None = None) -> ImagesById:
    """ODE-sample ``n_per_prompt`` images per item and save them as ``out_dir/<item id>_<k>.png``.

    ``context``: a factory of a context manager active while sampling (e.g. a peft model's
    ``disable_adapter`` for the base policy). ``noise_key(item, k)``: the key that seeds the initial
    noise of the item's k-th image (default ``"<seed>/<item id>/<k>"``; see :func:`prompt_noise_keys`
    for the scene-world evaluation's keys). ``on_progress(done, total)``: images saved so far of
    ``len(items) * n_per_prompt``, after each batch. Returns {item id: [paths]}.
    """
    import torch

    from arr_core.sim.toy_eval import sample_ode, seeded_noise

    if n_per_prompt < 1 or steps < 1 or batch_size < 1:
        raise ValueError("n_per_prompt, steps and batch_size must be >= 1")
    key = noise_key or (lambda it, k: f"{seed}/{it.id}/{k}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    jobs = [(it, k) for it in items for k in range(n_per_prompt)]
    paths: ImagesById = {it.id: [] for it in items}
    ctx = context or contextlib.nullcontext
    with ctx(), torch.no_grad():
        for start in range(0, len(jobs), batch_size):
            chunk = jobs[start:start + batch_size]
            noise = seeded_noise(policy, [key(it, k) for it, k in chunk])
            x = sample_ode(policy, [it.prompt for it, _ in chunk], noise, steps)
            for (it, k), im in zip(chunk, policy.decode(x), strict=True):
                p = out / f"{_safe(it.id)}_{k}.png"
                im.save(p)
                paths[it.id].append(str(p.resolve()))
            if on_progress is not None:
                on_progress(start + len(chunk), len(jobs))
    return paths


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def prompt_noise_keys(items: Sequence[PromptItem]) -> NoiseKey:
    """The noise keys of the scene-world evaluation (``arr_core.sim.toy_eval.geneval_accuracy``): the
    prompt text, with ``#r`` for its r-th repeat in ``items`` (``toy_eval.noise_keys``), then ``|k``
    for the k-th image, so every prompt-image of a set is an independent draw and a base and a trained
    policy sampled with the same keys see the same noise."""
    from arr_core.sim.toy_eval import noise_keys

    prefix = dict(zip([it.id for it in items], noise_keys([it.prompt for it in items]), strict=True))
    if len(prefix) != len(items):
        raise ValueError("prompt item ids must be unique")
    return lambda it, k: f"{prefix[it.id]}|{k}"


def _lora_file(folder: str | Path) -> Path:
    from arr_core.rpo.checkpoint import LORA_WEIGHT_NAME

    f = Path(folder)
    for cand in (f, f / LORA_WEIGHT_NAME, f / "lora" / LORA_WEIGHT_NAME):
        if cand.is_file():
            return cand
    raise FileNotFoundError(f"no {LORA_WEIGHT_NAME} in {f} or {f / 'lora'}")


def lora_digest(folder: str | Path | None) -> str | None:
    """sha256 of the LoRA weight file in ``folder`` (None for no folder): a LoRA's identity in policy ids."""
    if folder is None:
        return None
    from arr_core.digest import sha256_file

    return sha256_file(_lora_file(folder))


def load_lora(policy: Any, folder: str | Path) -> Any:
    """Wrap ``policy.transformer`` with the LoRA saved by ``arr_core.rpo.checkpoint.save_lora``.

    Rank, alpha and targets come from the adapter metadata saved with the weights; keys are the
    transformer's module names (``<module>.lora_A.weight``, diffusers' ``transformer.`` prefix removed).
    """
    import json

    from peft import set_peft_model_state_dict
    from safetensors import safe_open

    from arr_core.rpo.lora import add_lora

    path = _lora_file(folder)
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    raw = meta.get("lora_adapter_metadata") or meta.get("transformer_lora_adapter_metadata")
    if raw is None:
        raise ValueError(f"{path}: no LoRA adapter metadata (rank/alpha/targets); was it written by save_lora?")
    cfg = json.loads(raw)
    # diffusers flattens the per-component config: {"transformer.r": 16, "transformer.lora_alpha": ...}
    cfg = {(k[len("transformer."):] if k.startswith("transformer.") else k): v for k, v in cfg.items()}
    peft_model = add_lora(policy.transformer, rank=int(cfg["r"]), alpha=float(cfg["lora_alpha"]),
                          targets=list(cfg["target_modules"]))
    # peft's own state-dict layout: "base_model.model.<module>.lora_A.weight" (no adapter name)
    sd = {"base_model.model." + (k[len("transformer."):] if k.startswith("transformer.") else k): v
          for k, v in tensors.items()}
    res = set_peft_model_state_dict(peft_model, sd, adapter_name="default")
    unexpected = getattr(res, "unexpected_keys", [])
    if unexpected:
        raise ValueError(f"{path}: LoRA keys that match no module: {unexpected[:3]}")
    peft_model.eval()
    return peft_model


@contextlib.contextmanager
def adapter_off(peft_model: Any) -> Iterator[None]:
    """The base policy: the LoRA adapter switched off (exactly the base network)."""
    with peft_model.disable_adapter():
        yield


# ---------------------------------------------------------------------------------------------
# scoring


def check_all(checker: Checker, items: Sequence[PromptItem], images: ImagesById) -> dict[str, list[CheckResult]]:
    """Run ``checker`` on every image of every item (one batch); {item id: [results]}."""
    missing = [it.id for it in items if not images.get(it.id)]
    if missing:
        raise ValueError(f"no images for prompt items {missing[:5]} (field 'images')")
    jobs, owners = [], []
    for it in items:
        for p in images[it.id]:
            jobs.append((it, Image.open(p).convert("RGB")))
            owners.append(it.id)
    results = checker.check(jobs)
    out: dict[str, list[CheckResult]] = {it.id: [] for it in items}
    for owner, r in zip(owners, results, strict=True):
        out[owner].append(r)
    return out


def stratified_mean_ci(groups: dict[str, list[float]], *, n_boot: int = 2000, seed: int = 0
                       ) -> dict[str, float]:
    """Mean over groups of the group means, with a bootstrap interval resampling within groups."""
    groups = {k: v for k, v in groups.items() if v}
    if not groups:
        return {"point": float("nan"), "lo": float("nan"), "hi": float("nan")}
    point = float(np.mean([np.mean(v) for v in groups.values()]))
    rng = np.random.default_rng(seed)
    boots = np.zeros(n_boot)
    for v in groups.values():
        a = np.asarray(v, dtype=float)
        boots += a[rng.integers(0, a.size, size=(n_boot, a.size))].mean(axis=1)
    boots /= len(groups)
    lo, hi = np.quantile(boots, [0.025, 0.975])
    return {"point": point, "lo": float(min(lo, point)), "hi": float(max(hi, point))}


def geneval_scores(per_prompt: Sequence[float], tags: Sequence[str], *, n_boot: int = 2000, seed: int = 0
                   ) -> dict[str, Any]:
    """GenEval's official aggregation of per-prompt pass shares (the prompt's passing images / its images).

    Per tag: the mean over the tag's prompts, with a bootstrap 95 % interval over those prompts; overall:
    the mean over tags (not over prompts: an unbalanced prompt set does not weight its big tags up), with
    a bootstrap interval resampling prompts within each tag (``stratified_mean_ci``). Tags keep their
    order of first appearance (the bootstrap draws depend on it). Returns ``{"overall": cell,
    "per_tag": {tag: cell}, "n_prompts": {tag: prompts}, "prompt_mean": mean over all prompts}``
    (cells: ``{"point", "lo", "hi"}``).
    """
    if len(per_prompt) != len(tags):
        raise ValueError(f"got {len(per_prompt)} per-prompt scores for {len(tags)} tags")
    if not tags:
        raise ValueError("no prompts to aggregate")
    by_tag: dict[str, list[float]] = {}
    for v, tag in zip(per_prompt, tags, strict=True):
        by_tag.setdefault(tag, []).append(float(v))
    return {"overall": stratified_mean_ci(by_tag, n_boot=n_boot, seed=seed),
            "per_tag": {tag: rate_ci(vals, n_boot=n_boot, seed=seed) for tag, vals in by_tag.items()},
            "n_prompts": {tag: len(vals) for tag, vals in by_tag.items()},
            "prompt_mean": float(np.mean(per_prompt))}


def _grid(items: Sequence[PromptItem], images: ImagesById, results: dict[str, list[CheckResult]], title: str,
          limit: int) -> ImageGrid:
    n = max((len(images[it.id]) for it in items), default=0)
    rows = [GridRow(it.prompt, list(images[it.id]), ["pass" if r.passed else f"fail: {r.why}"[:80]
                                                       for r in results[it.id]]) for it in items[:limit]]
    return ImageGrid(title, [f"sample {k}" for k in range(n)], rows)


def run_geneval(items: Sequence[PromptItem], images: ImagesById, checker: Checker, *, n_boot: int = 2000,
                seed: int = 0, policy_id: str | None = None, config: dict[str, Any] | None = None,
                simulated: bool = False, n_examples: int = 6) -> EvalResult:
    """GenEval-format scores of pre-sampled images (see module docstring)."""
    if not items:
        raise ValueError("no prompt items to evaluate")
    results = check_all(checker, items, images)
    per_prompt = {it.id: float(np.mean([r.passed for r in results[it.id]])) for it in items}
    scores = geneval_scores([per_prompt[it.id] for it in items], [it.category or "all" for it in items],
                            n_boot=n_boot, seed=seed)
    rows, summary = [], {}
    for tag, ci in scores["per_tag"].items():
        rows.append([tag, ci, scores["n_prompts"][tag],
                     sum(len(images[it.id]) for it in items if (it.category or "all") == tag)])
        summary[f"geneval/{tag}"] = ci["point"]
    overall = scores["overall"]
    image_level = rate_ci([r.passed for it in items for r in results[it.id]], n_boot=n_boot, seed=seed)
    rows.append(["overall (mean over tags)", overall, len(items), sum(len(v) for v in images.values())])
    summary.update({"geneval/overall": overall["point"], "geneval/image_level": image_level["point"],
                    "n_prompts": float(len(items))})
    t = Table("GenEval-format accuracy", ["tag", "accuracy (95% CI)", "prompts", "images"], rows,
              note=f"Checker: {checker.name}. Intervals: bootstrap over prompts (stratified by tag for overall).")
    tags = list(scores["per_tag"])
    plot = Plot("Accuracy by tag", "bar", [Series(checker.name, tags, [r[1]["point"] for r in rows[:-1]],
                                                  [r[1]["lo"] for r in rows[:-1]], [r[1]["hi"] for r in rows[:-1]])],
                x_label="tag", y_label="accuracy", y_range=(0.0, 1.0))
    cfg = dict(config or {})
    cfg.update({"benchmark": "geneval", "checker": checker.name, "items": digest_obj([it.to_dict() for it in items], 16),
                "n_boot": n_boot, "seed": seed})
    report = Report("GenEval-format benchmark", [
        Section("metrics", "Metrics", tables=[t]), Section("plots", "Plots", plots=[plot]),
        Section("images", "Samples", grids=[_grid(items, images, results, "Samples and checker verdicts", n_examples)])],
        subtitle=f"{len(items)} prompts · checker {checker.name}", notes=simulation_notes(simulated, checker.name),
        meta={k: v for k, v in cfg.items() if not isinstance(v, (dict, list))})
    return EvalResult("geneval", cfg, summary, [t], report, policy_id=policy_id,
                      details={"results": results, "per_prompt": per_prompt, "scores": scores})


def run_checkpoints(items: Sequence[PromptItem], images: ImagesById, checker: Checker, *, n_boot: int = 2000,
                    seed: int = 0, policy_id: str | None = None, config: dict[str, Any] | None = None,
                    simulated: bool = False, n_examples: int = 6) -> EvalResult:
    """Per-prompt yes/no checkpoints (TIIF-Bench / UniGenBench style) answered by ``checker``."""
    if not items:
        raise ValueError("no prompt items to evaluate")
    results = check_all(checker, items, images)
    q_acc = {it.id: float(np.mean([r.score for r in results[it.id]])) for it in items}
    all_ok = {it.id: float(np.mean([r.passed for r in results[it.id]])) for it in items}
    cats: dict[str, list[str]] = {}
    for it in items:
        cats.setdefault(it.category or "all", []).append(it.id)
    rows, summary = [], {}
    for cat, ids in cats.items():
        qa = rate_ci([q_acc[i] for i in ids], n_boot=n_boot, seed=seed)
        pa = rate_ci([all_ok[i] for i in ids], n_boot=n_boot, seed=seed)
        rows.append([cat, qa, pa, len(ids)])
        summary[f"checkpoints/{cat}/question_acc"] = qa["point"]
    qa_all = rate_ci(list(q_acc.values()), n_boot=n_boot, seed=seed)
    pa_all = rate_ci(list(all_ok.values()), n_boot=n_boot, seed=seed)
    rows.append(["overall", qa_all, pa_all, len(items)])
    abstained = sum(r.abstained for rs in results.values() for r in rs)
    summary.update({"checkpoints/question_acc": qa_all["point"], "checkpoints/all_correct": pa_all["point"],
                    "checkpoints/abstained": float(abstained), "n_prompts": float(len(items))})
    t = Table("Checkpoint accuracy", ["category", "question accuracy (95% CI)", "all questions right (95% CI)",
                                      "prompts"], rows,
              note=f"Checker: {checker.name}; {abstained} image(s) without a usable answer count as wrong.")
    cat_names = list(cats)
    plot = Plot("Question accuracy by category", "bar",
                [Series(checker.name, cat_names, [r[1]["point"] for r in rows[:-1]], [r[1]["lo"] for r in rows[:-1]],
                        [r[1]["hi"] for r in rows[:-1]])], x_label="category", y_label="accuracy", y_range=(0.0, 1.0))
    cfg = dict(config or {})
    cfg.update({"benchmark": "checkpoints", "checker": checker.name,
                "items": digest_obj([it.to_dict() for it in items], 16), "n_boot": n_boot, "seed": seed})
    report = Report("Checkpoint benchmark", [
        Section("metrics", "Metrics", tables=[t]), Section("plots", "Plots", plots=[plot]),
        Section("images", "Samples", grids=[_grid(items, images, results, "Samples and answers", n_examples)])],
        subtitle=f"{len(items)} prompts · checker {checker.name}", notes=simulation_notes(simulated, checker.name),
        meta={k: v for k, v in cfg.items() if not isinstance(v, (dict, list))})
    return EvalResult("checkpoints", cfg, summary, [t], report, policy_id=policy_id,
                      details={"results": results})
