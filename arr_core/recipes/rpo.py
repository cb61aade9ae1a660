"""The RPO recipe: the one place that composes a training run from a ``TrainConfig``.

``arr train``, the pipeline's training task (``tasks/train.py``), the torchrun entry point
(:func:`main`, ``python -m arr_core.recipes.rpo``) and the benchmark scripts all call :func:`run`;
none of them builds a policy, a rewarder or a prompt list itself. Below this module, components take
plain values: the trainer gets :class:`arr_core.rpo.trainer.RPOArgs` (from :func:`trainer_args`), the judge gets a
client and a rubric set, the adapters get a folder, a device and a dtype.

Rule-based and benchmark rewards (the scene checker, a fixed-latency stand-in, the shuffled control)
are not configuration: a benchmark builds its rewarder and passes it as ``rewarder=``.
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from arr_core.errors import ArrError, InputError

if TYPE_CHECKING:
    import torch
    from PIL import Image

    from arr_core.rpo.config import TrainConfig
    from arr_core.rpo.distributed import DistContext
    from arr_core.rpo.trainer import RPOArgs, TrainResult


def resolve_device(spec: str, local_rank: int = 0) -> torch.device:
    """``auto`` → ``cuda:LOCAL_RANK`` when CUDA is present, else ``cpu``; otherwise the named device."""
    import torch

    if spec == "auto":
        return torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    return torch.device(spec)


def build_policy(cfg: TrainConfig, device: torch.device) -> Any:
    """The policy the config names, from its local folder (adapters imported lazily)."""
    import torch

    p = cfg.policy
    dtype = getattr(torch, p.dtype or ("bfloat16" if device.type == "cuda" else "float32"))
    side = cfg.resolution or 512
    if p.folder is not None and not p.folder.exists():
        raise InputError("folder does not exist", file=str(p.folder), field="policy.folder")
    if p.kind == "toy":
        from arr_core.sim.toy_policy import ToyPolicy

        return ToyPolicy.load(p.folder, device=device, guidance_scale=p.guidance_scale)
    if p.kind == "flux":
        from arr_core.rpo.adapters.flux import FluxPolicy

        return FluxPolicy.from_pretrained(p.folder, device=device, dtype=dtype, height=side, width=side)
    if p.kind == "sd3":
        from arr_core.rpo.adapters.sd3 import SD3Policy

        return SD3Policy.from_pretrained(p.folder, device=device, dtype=dtype, height=side, width=side,
                                         guidance_scale=p.guidance_scale or 1.0)
    try:
        from arr_core.rpo.adapters.qwen_edit import QwenEditPolicy
    except ModuleNotFoundError as e:
        raise InputError(f"the Qwen-Image-Edit adapter is not available ({e})", field="policy.kind") from None
    return QwenEditPolicy.from_pretrained(p.folder, device=device, dtype=dtype, height=side, width=side)


def policy_fingerprint(policy: dict[str, Any]) -> str:
    """A cheap identity of the base policy: its config plus, for a weights folder, the names and sizes
    of its weight/config files (hashing tens of GB of weights per run would be too slow); for the
    shipped toy checkpoint, the hash of all its files."""
    from arr_core.digest import digest_obj, sha256_file

    ident: dict[str, Any] = {k: policy.get(k) for k in ("kind", "folder", "dtype")}
    folder = policy.get("folder")
    if folder:
        root = Path(folder)
        ident["files"] = sorted([str(p.relative_to(root)), p.stat().st_size]
                                for p in root.rglob("*") if p.is_file()
                                and p.suffix in (".json", ".safetensors", ".bin", ".txt", ".model"))
    elif policy.get("kind") == "toy":
        from arr_core.sim.toy_policy import shipped_checkpoint_dir

        assets = shipped_checkpoint_dir()
        ident["files"] = sorted([str(p.relative_to(assets)), sha256_file(p)]
                                for p in assets.rglob("*") if p.is_file())
    return "pol-" + digest_obj(ident, 16)


def input_files_digest(cfg: TrainConfig) -> str:
    """The content of the files a training config reads by path (``prompts.path``, ``dpo.pairs.path``):
    a changed prompt file or preference dataset under the same name is a different training. A folder
    hashes every file under it; images a dataset file names elsewhere are not covered (their paths
    are, through the file's content)."""
    from arr_core.digest import digest_obj, sha256_file

    paths = {"prompts": cfg.prompts.path if cfg.prompts is not None else None,
             "dpo_pairs": cfg.dpo.pairs.path if cfg.algorithm == "dpo" and cfg.dpo is not None else None}
    ident: dict[str, Any] = {}
    for name, path in paths.items():
        if path is None:
            continue
        p = Path(path)
        if p.is_dir():
            ident[name] = sorted([str(f.relative_to(p)), sha256_file(f)] for f in p.rglob("*") if f.is_file())
        elif p.is_file():
            ident[name] = sha256_file(p)
        else:
            raise InputError(f"{'prompts.path' if name == 'prompts' else 'dpo.pairs.path'}: {p} not found")
    return "in-" + digest_obj(ident, 16)


def load_prompts(cfg: TrainConfig) -> tuple[list[str], list[Image.Image] | None]:
    """Training prompts (and edit sources): a .txt file (one per line), a .jsonl file with 'prompt'
    (and 'image', a path relative to the file, for editing), or the scene-world sampler."""
    from PIL import Image

    pc = cfg.prompts
    if pc is None:
        raise InputError("this run needs training prompts", field="prompts")
    if pc.source == "world":
        import numpy as np

        from arr_core.sim.world.grammar import sample_spec

        rng = np.random.default_rng(pc.seed)
        return [sample_spec(rng).prompt for _ in range(pc.count)], None
    assert pc.path is not None
    path = pc.path
    if not path.is_file():
        raise InputError("prompt file not found", file=str(path), field="prompts.path")
    if path.suffix != ".jsonl":
        prompts = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
        if not prompts:
            raise InputError("no prompts in the file", file=str(path))
        if cfg.policy.kind == "qwen_edit":
            raise InputError("editing needs a .jsonl file with 'prompt' and 'image' per line", file=str(path))
        return prompts, None
    prompts, sources = [], []
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines()):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise InputError(f"not JSON: {e}", file=str(path), record=i) from None
        if not isinstance(rec, dict) or not isinstance(rec.get("prompt"), str) or not rec["prompt"].strip():
            raise InputError("needs a non-empty string", file=str(path), record=i, field="prompt")
        prompts.append(rec["prompt"])
        if cfg.policy.kind == "qwen_edit":
            if not isinstance(rec.get("image"), str):
                raise InputError("editing needs the source image path", file=str(path), record=i, field="image")
            img_path = (path.parent / rec["image"]).resolve()
            if not img_path.is_file():
                raise InputError(f"image not found: {img_path}", file=str(path), record=i, field="image")
            sources.append(Image.open(img_path).convert("RGB"))
    if not prompts:
        raise InputError("no prompts in the file", file=str(path))
    return prompts, (sources if cfg.policy.kind == "qwen_edit" else None)


def build_rewarder(cfg: TrainConfig, rubric_set: Any, client: Any, *, store: Any = None) -> tuple[Any, str]:
    """(group rewarder, description) for ``cfg.reward``: the rank judge (``JudgeRewarder``; judgments
    go to ``store`` when given), the checklist judge (``ChecklistRewarder``, hard themes), the
    per-criterion judge (``ScoresRewarder``; scores go to ``store``) or a hybrid of components
    (``HybridRewarder``, ``reward.components``)."""
    return reward_from_config(cfg.reward, "edit" if cfg.policy.kind == "qwen_edit" else "t2i", rubric_set, client,
                              store=store, seed=cfg.seed, hard_only=cfg.experimental.hard_only)


def reward_from_config(rc: Any, task: str, rubric_set: Any, client: Any, *, store: Any = None, seed: int = 0,
                       hard_only: bool = False) -> tuple[Any, str]:
    """(group rewarder, description) for a reward section ``rc`` (``arr_core.rpo.config.RewardConfig``)
    on ``task`` ("t2i" or "edit"): what ``build_rewarder`` and the reward service build."""
    if rc.mode == "checklist":
        from arr_core.judge.checklist import ChecklistRewarder

        if rubric_set is None:
            raise InputError("reward.mode 'checklist' checks rubrics; give a rubric set, not 'none'",
                             field="--rubrics")
        try:
            rewarder = ChecklistRewarder(client, rubric_set, task, hard_themes=rc.hard_themes, hard_only=hard_only)
        except ValueError as e:  # a hard theme the rubric set does not have; a set for another task
            field = "reward.hard_themes" if "hard theme" in str(e) else "--rubrics"
            raise InputError(str(e), field=field) from None
        hard = f", hard themes {rc.hard_themes}" if rc.hard_themes else ""
        hard += " only" if hard_only else ""
        return rewarder, f"checklist judge, rubrics {rubric_set.id}{hard}"
    if rc.mode == "scores":
        return scores_rewarder(rc, task, rubric_set, client, store=store, where="reward")
    if rc.mode == "hybrid":
        return hybrid_rewarder(rc, task, rubric_set, client, store=store, seed=seed)
    from arr_core.judge.reward import JudgeRewarder

    try:
        rewarder = JudgeRewarder(client, rubric_set, task, rc.order, mapping=rc.mapping, seed=seed, store=store)
    except ValueError as e:
        raise InputError(str(e), field="--rubrics") from None
    return rewarder, f"judge, rubrics {rubric_set.id if rubric_set else 'none'}, order {rc.order}"


def scores_rewarder(rc: Any, task: str, rubric_set: Any, client: Any, *, store: Any = None,
                    where: str = "reward") -> tuple[Any, str]:
    """The per-criterion judge (``ScoresRewarder``) for settings ``rc`` (default_scale, scales,
    weights); ``where`` names the config section in errors."""
    from arr_core.judge.scores import ScoresRewarder

    if rubric_set is None:
        raise InputError(f"{where}: the per-criterion judge scores rubric criteria; give a rubric set, not "
                         "'none'", field="--rubrics")
    try:
        rewarder = ScoresRewarder(client, rubric_set, task, default_scale=rc.default_scale, scales=rc.scales,
                                  weights=rc.weights, store=store)
    except ValueError as e:  # a scale/weight key the set does not have; a set for another task
        field = f"{where}.weights" if "weights" in str(e) else f"{where}.scales" if "scale" in str(e) else "--rubrics"
        raise InputError(str(e), field=field) from None
    return rewarder, f"per-criterion judge, rubrics {rubric_set.id}, {len(rewarder.criteria)} criteria"


# Rule-based verifiers by name for the hybrid reward's ``checker`` components; any other name is an
# import path ``package.module:function``. A verifier is ``fn(prompt, image) -> score`` or
# ``(score, confidence)``.
CHECKERS: dict[str, str] = {"scene": "arr_core.sim.rewards:scene_verdict"}


def resolve_checker(name: str, where: str) -> Callable[..., Any]:
    """The verifier ``name`` names (``CHECKERS`` or ``package.module:function``); InputError otherwise."""
    import importlib

    target = CHECKERS.get(name, name)
    mod, _, fn = target.partition(":")
    if not mod or not fn:
        raise InputError(f"unknown checker {name!r}: use one of {sorted(CHECKERS)} or 'package.module:function'",
                         field=where)
    try:
        found = getattr(importlib.import_module(mod), fn)
    except (ImportError, AttributeError) as e:
        raise InputError(f"checker {name!r} cannot be loaded: {e}", field=where) from None
    if not callable(found):
        raise InputError(f"checker {name!r} is not callable", field=where)
    return found


def load_questions(path: Path | None, where: str) -> Callable[[str], list[str]]:
    """prompt → yes/no questions: from a JSONL of ``{"prompt", "questions": [...]}`` (a prompt without
    an entry fails its group), or, without a file, the one question 'Does the image show <prompt>?'."""
    if path is None:
        return lambda prompt: [f"Does the image show {prompt.strip().rstrip('.?!')}?"]
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise InputError(f"cannot read the questions file: {e}", file=str(path), field=where) from None
    table = dict(_questions_entry(line, path, i) for i, line in enumerate(lines) if line.strip())
    return lambda prompt: table[prompt]


def _questions_entry(line: str, path: Path, i: int) -> tuple[str, list[str]]:
    """(prompt, questions) of one line of a questions file; InputError naming the record otherwise."""
    try:
        rec = json.loads(line)
    except json.JSONDecodeError as e:
        raise InputError(f"not JSON: {e}", file=str(path), record=i) from None
    qs = rec.get("questions") if isinstance(rec, dict) else None
    if not isinstance(rec, dict) or not isinstance(rec.get("prompt"), str) or not isinstance(qs, list) or \
            not qs or not all(isinstance(q, str) and q.strip() for q in qs):
        raise InputError("needs 'prompt' (string) and 'questions' (non-empty list of strings)", file=str(path),
                         record=i, field="questions")
    return rec["prompt"], qs


def hybrid_rewarder(rc: Any, task: str, rubric_set: Any, client: Any, *, store: Any = None,
                    seed: int = 0) -> tuple[Any, str]:
    """A ``HybridRewarder`` of ``rc.components`` (``reward: {components: [...]}``)."""
    from arr_core.judge.http_reward import HttpComponent
    from arr_core.judge.hybrid import (
        CheckerComponent,
        HybridRewarder,
        JudgeComponent,
        Part,
        QuestionsComponent,
    )
    from arr_core.judge.reward import JudgeRewarder

    parts, what = [], []
    for i, c in enumerate(rc.components):
        where = f"reward.components[{i}]"
        if c.kind == "rubric_judge":
            try:
                comp: Any = JudgeComponent(c.label, JudgeRewarder(client, rubric_set, task, c.order, mapping=c.mapping,
                                                                  seed=seed, store=store))
            except ValueError as e:
                raise InputError(str(e), field="--rubrics") from None
        elif c.kind == "rubric_scores":
            comp = JudgeComponent(c.label, scores_rewarder(c, task, rubric_set, client, store=store, where=where)[0])
        elif c.kind == "vlm_questions":
            comp = QuestionsComponent(c.label, client, load_questions(c.questions, f"{where}.questions"))
        elif c.kind == "checker":
            comp = CheckerComponent(c.label, resolve_checker(c.checker, f"{where}.checker"))
        else:
            comp = HttpComponent(c.label, c.url, timeout_s=c.timeout_s)
        parts.append(Part(comp, weight=c.weight, required=c.required, normalize=c.normalize,
                          min_confidence=c.min_confidence))
        what.append(f"{c.label} ×{c.weight:g}" + ("" if c.required else " (optional)"))
    return HybridRewarder(parts), "hybrid judge reward: " + ", ".join(what)


def judge_vlm(cfg: TrainConfig, default: Any = None) -> Any:
    """The judge's ``VLMConfig``: ``reward.vlm`` when set, else ``default`` (the pipeline's ``vlm``),
    else the embedded default (the offline scene VLM)."""
    from arr_core.vlm.config import VLMConfig

    if cfg.reward.vlm:
        return VLMConfig.model_validate(cfg.reward.vlm)
    return default if default is not None else VLMConfig()


def config_digest(cfg: TrainConfig) -> str:
    """Digest of the fields that change the training trajectory (not output/checkpoint cadence or the
    step count, so a longer run resumes a shorter one's checkpoints)."""
    d = cfg.model_dump(mode="json", exclude={"output_dir", "checkpoint_every", "sample_grid_every", "steps"})
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


def trainer_args(cfg: TrainConfig) -> RPOArgs:
    """The trainer's plain hyperparameters from the stage config."""
    from arr_core.rpo.trainer import RPOArgs

    return RPOArgs(
        steps=cfg.steps, group_size=cfg.group_size, num_steps=cfg.num_steps,
        trained_steps=tuple(cfg.trained_step_indices()), sde_mask=tuple(cfg.sde_step_mask()),
        prompts_per_step=cfg.prompts_per_step, rollout_batch_size=cfg.rollout_batch_size,
        config_digest=config_digest(cfg), seed=cfg.seed, lora_rank=cfg.lora.rank, lora_alpha=cfg.lora.alpha,
        lora_dropout=cfg.lora.dropout, lora_targets=tuple(cfg.lora.targets) if cfg.lora.targets else None,
        noise=cfg.noise, a=cfg.a, eta=cfg.eta, noise_block=cfg.experimental.noise_block,
        shared_initial_noise=cfg.shared_initial_noise, judged_image=cfg.judged_image, beta=cfg.beta,
        clip_range=cfg.clip_range, advantage=cfg.advantage, adv_clip=cfg.adv_clip, accumulate=cfg.accumulate,
        lr=cfg.lr, weight_decay=cfg.weight_decay, adam_betas=tuple(cfg.adam_betas), adam_eps=cfg.adam_eps,
        warmup_steps=cfg.warmup_steps, grad_clip=cfg.grad_clip, bf16_autocast=cfg.bf16_autocast,
        gradient_checkpointing=cfg.gradient_checkpointing, attention_backend=cfg.attention_backend,
        compile=cfg.compile, max_inflight_judge_batches=cfg.max_inflight_judge_batches,
        sample_grid_every=cfg.sample_grid_every, checkpoint_every=cfg.checkpoint_every, distributed=cfg.distributed,
        config_json=cfg.model_dump_json(indent=2))


def run(cfg: TrainConfig, out: str | Path, *, rubric_set: Any = None, vlm: Any = None, store: Any = None,
        rewarder: Any = None, reward_desc: str | None = None, policy: Any = None, prompts: list[str] | None = None,
        resume: str | Path | None = None, progress: Callable[[str], None] | None = print,
        dist_ctx: DistContext | None = None, pairs: list[Any] | None = None) -> TrainResult:
    """Build the policy, the rewarder and the prompts from ``cfg`` and train (``algorithm: dpo``:
    :func:`run_dpo`, where a benchmark may also pass ready ``pairs``).

    ``rubric_set``: the judge's rubrics (None judges without); ``vlm``: the judge's ``VLMConfig``
    when ``reward.vlm`` is empty; ``store``: where the judge's VLM cache and judgments go (None: memory
    only, as on a training host that must not open the DuckDB file). A benchmark passes its own
    ``rewarder`` (and ``reward_desc``), ``policy`` or ``prompts`` instead of the built ones.
    """
    from arr_core.rpo.distributed import DistContext
    from arr_core.rpo.trainer import train

    if cfg.algorithm == "dpo":
        return run_dpo(cfg, out, rubric_set=rubric_set, vlm=vlm, store=store, rewarder=rewarder, policy=policy,
                       prompts=prompts, pairs=pairs, resume=resume, progress=progress)
    ctx = dist_ctx or DistContext()
    device = resolve_device(cfg.policy.device, ctx.local_rank)
    sources = None
    if prompts is None:
        prompts, sources = load_prompts(cfg)
    if rewarder is None:
        from arr_core.vlm.config import build_client

        vcfg = judge_vlm(cfg, vlm)
        rewarder, what = build_rewarder(cfg, rubric_set, build_client(vcfg, store), store=store)
        reward_desc = what.replace("judge", f"judge {vcfg.backend}:{vcfg.model}", 1)
    if policy is None:
        policy = build_policy(cfg, device)
    say = progress or (lambda _s: None)
    if ctx.is_main:
        say(f"policy {cfg.policy.kind} on {device}; reward: {reward_desc or type(rewarder).__name__}; "
            f"{len(prompts)} prompts; {cfg.steps} steps × {cfg.prompts_per_step} prompts × G={cfg.group_size}"
            + (f" × {ctx.world_size} ranks" if ctx.active else ""))
    return train(policy, rewarder, prompts, trainer_args(cfg), out, sources=sources, resume=resume,
                 progress=progress, dist_ctx=ctx)


def dpo_args(cfg: TrainConfig) -> Any:
    """The DPO trainer's plain hyperparameters (``arr_core.rpo.dpo.DPOArgs``) from the stage config."""
    from arr_core.rpo.dpo import DPOArgs

    d = cfg.dpo
    assert d is not None
    return DPOArgs(
        steps=cfg.steps, config_digest=config_digest(cfg), pairs_per_step=d.pairs_per_step,
        micro_batch=d.micro_batch, beta=d.beta, sigma_sampling=d.sigma_sampling, logit_mean=d.logit_mean,
        logit_std=d.logit_std, seed=cfg.seed, lora_rank=cfg.lora.rank, lora_alpha=cfg.lora.alpha,
        lora_dropout=cfg.lora.dropout, lora_targets=tuple(cfg.lora.targets) if cfg.lora.targets else None,
        lr=cfg.lr, weight_decay=cfg.weight_decay, adam_betas=tuple(cfg.adam_betas), adam_eps=cfg.adam_eps,
        warmup_steps=cfg.warmup_steps, grad_clip=cfg.grad_clip, bf16_autocast=cfg.bf16_autocast,
        gradient_checkpointing=cfg.gradient_checkpointing, attention_backend=cfg.attention_backend,
        checkpoint_every=cfg.checkpoint_every, config_json=cfg.model_dump_json(indent=2))


def image_encoder(policy: Any) -> Callable[[list[Image.Image]], torch.Tensor]:
    """Images → the policy's clean latents x₀: its VAE (``encode_latents``: FLUX, SD3, Qwen-Image-Edit),
    or for the pixel-space toy its own pixel scaling (``images_to_latents``)."""
    if hasattr(policy, "encode_latents"):
        return policy.encode_latents
    from arr_core.sim.toy_policy import ToyPolicy, images_to_latents

    if isinstance(policy, ToyPolicy):
        size = int(policy.config["image_size"])
        return lambda ims: images_to_latents(ims, size).to(policy.device)
    raise InputError(f"{type(policy).__name__} cannot encode images to latents (no encode_latents)",
                     field="policy.kind")


def label_pairs(rewarder: Any, prompts: list[str], groups: list[list[Image.Image]],
                sources: list[Image.Image] | None, batch_size: int = 16) -> tuple[list[Any], dict[str, int]]:
    """Judge each prompt's two candidates (the rewarder's order handling: ``swap`` for the rank judge)
    and keep the pairs with a verdict (``arr_core.rpo.dpo.pairs_from_outcomes``; ties and
    abstentions dropped and counted)."""
    import asyncio

    from arr_core.rpo.dpo import pairs_from_outcomes

    async def judge_all() -> list[Any]:
        outs = []
        for s in range(0, len(prompts), batch_size):
            outs += await rewarder.score(prompts[s:s + batch_size], groups[s:s + batch_size],
                                         sources[s:s + batch_size] if sources is not None else None)
        return outs

    return pairs_from_outcomes(prompts, groups, sources, asyncio.run(judge_all()))


def dpo_pairs(cfg: TrainConfig, policy: Any, out: Path, *, rubric_set: Any = None, vlm: Any = None,
              store: Any = None, rewarder: Any = None, prompts: list[str] | None = None,
              resume: str | Path | None = None, say: Callable[[str], None] = print
              ) -> tuple[list[Any], dict[str, int]]:
    """The pairs of ``cfg.dpo.pairs``, weighted. ``dataset``: preference records (``arr_core.data``);
    ``generated``: two base-policy samples per prompt labelled by the judge (``reward``), saved under
    ``out/pairs/`` so that a resumed run trains on the same pairs."""
    from arr_core.rpo import dpo

    d = cfg.dpo
    assert d is not None
    pc = d.pairs
    saved = out / "pairs"
    if pc.source == "dataset":
        from arr_core.data.dataset import load_dataset

        assert pc.path is not None
        task = "edit" if cfg.policy.kind == "qwen_edit" else "t2i"
        try:
            records = load_dataset(pc.path, task=task).records
            pairs, counts = dpo.pairs_from_records(records[:pc.count] if pc.count else records)
        except (ValueError, OSError) as e:
            if isinstance(e, InputError):
                raise
            raise InputError(str(e), file=str(pc.path), field="dpo.pairs.path") from None
    elif resume is not None and (saved / dpo.PAIRS_FILE).is_file():
        pairs = dpo.load_pairs(saved)
        counts = json.loads((saved / "counts.json").read_text(encoding="utf-8"))
        say(f"resume: {len(pairs)} pairs from {saved}")
    else:
        sources = None
        if prompts is None:
            prompts, sources = load_prompts(cfg)
        prompts = prompts[:pc.count] if pc.count else prompts
        sources = sources[:len(prompts)] if sources is not None else None
        if rewarder is None:
            from arr_core.vlm.config import build_client

            rewarder, _ = build_rewarder(cfg, rubric_set, build_client(judge_vlm(cfg, vlm), store), store=store)
        groups = dpo.sample_candidates(policy, prompts, sources, steps=pc.sample_steps, seed=pc.seed)
        pairs, counts = label_pairs(rewarder, prompts, groups, sources)
    if not pairs:
        raise InputError(f"no preference pairs left ({counts}): every candidate tied or abstained",
                         field="dpo.pairs")
    try:
        pairs = dpo.apply_weighting(pairs, d.weighting)
    except ValueError as e:
        raise InputError(str(e), field="dpo.weighting") from None
    if pc.source == "generated":
        dpo.save_pairs(pairs, saved, counts)
    say(f"DPO pairs ({pc.source}): {counts['kept']} kept of {counts['candidates']}; dropped {counts['tie']} "
        f"ties, {counts['abstain']} abstentions")
    return pairs, counts


def run_dpo(cfg: TrainConfig, out: str | Path, *, rubric_set: Any = None, vlm: Any = None, store: Any = None,
            rewarder: Any = None, policy: Any = None, prompts: list[str] | None = None, pairs: list[Any] | None = None,
            resume: str | Path | None = None, progress: Callable[[str], None] | None = print) -> TrainResult:
    """``algorithm: dpo``: the pairs (``dpo_pairs``, unless given), then ``arr_core.rpo.dpo.train_dpo``
    with the same checkpoints, resume and LoRA export as RPO."""
    from arr_core.rpo.dpo import train_dpo

    say = progress or (lambda _s: None)
    out = Path(out)
    if policy is None:
        policy = build_policy(cfg, resolve_device(cfg.policy.device))
    counts: dict[str, int] = {}
    if pairs is None:
        pairs, counts = dpo_pairs(cfg, policy, out, rubric_set=rubric_set, vlm=vlm, store=store, rewarder=rewarder,
                                  prompts=prompts, resume=resume, say=say)
    extra = {f"pairs_{k}": float(v) for k, v in counts.items()}
    say(f"policy {cfg.policy.kind}; DPO on {len(pairs)} pairs; {cfg.steps} steps x {cfg.dpo.pairs_per_step} pairs, "
        f"beta {cfg.dpo.beta:g}")
    return train_dpo(policy, pairs, dpo_args(cfg), out, encode_images=image_encoder(policy), resume=resume,
                     progress=progress, extra_metrics=extra)


RESULT_FILE = "rank0_result.json"
# A torchrun worker that stops with one of the project's errors writes ``<out>/.exit/rank<k>.json``
# (exit code, error class, message) before it exits with that code, because torchrun itself exits 1
# whatever its workers' codes were; the launcher (:func:`run_torchrun`) turns the files back into the error.
EXIT_DIR = ".exit"
# When ranks stopped with different errors, the one a rerun would not fix wins: bad input (2), then
# training health (5), then the transient endpoint (4) and store-lock (3) failures, then any other (1);
# at equal codes a rank's own reason ("rank k: ...") beats another rank naming it, then the lower rank.
EXIT_PRIORITY = (2, 5, 4, 3)


def torchrun_command(gpus: int, config_json: str | Path, out: str | Path, *, rubrics_json: str | Path | None = None,
                     vlm: dict[str, Any] | None = None, resume: str | Path | None = None) -> list[str]:
    """The one multi-GPU launch: ``torchrun --standalone --nproc-per-node GPUS -m arr_core.recipes.rpo``
    over exported inputs (a ``TrainConfig`` JSON, a rubric set JSON, the judge VLM without its key)."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={gpus}",
           "-m", "arr_core.recipes.rpo", "--config", str(config_json), "--out", str(out),
           "--vlm", json.dumps(vlm or {})]
    if rubrics_json:
        cmd += ["--rubrics", str(rubrics_json)]
    if resume:
        cmd += ["--resume", str(resume)]
    return cmd


def main(argv: list[str] | None = None) -> None:
    """One training process under ``torchrun`` (the only distributed entry point).

    Every rank loads the same exported inputs and trains its own prompt shard (DDP all-reduce or FSDP,
    ``arr_core.rpo.distributed``); rank 0 writes ``rank0_result.json`` in the run folder. The group is
    torn down with a barrier only after success, and the process then ends early (see
    ``exit_after_distributed_run``). A rank that stops with one of the project's errors (``ArrError``)
    writes its exit file (:func:`write_exit_file`) and exits with its code, printing the message on rank
    0 or on the rank that had it (``rank k: ...``); any other failure propagates (traceback, exit 1), and
    torchrun stops the job.
    """
    import argparse

    from arr_core.rpo.config import TrainConfig
    from arr_core.rpo.distributed import cleanup, exit_after_distributed_run, init_from_env
    from arr_core.rubrics.rubric_set import RubricSet
    from arr_core.vlm.config import VLMConfig

    ap = argparse.ArgumentParser(prog="python -m arr_core.recipes.rpo", description=main.__doc__)
    ap.add_argument("--config", required=True, help="TrainConfig as JSON (or YAML)")
    ap.add_argument("--out", required=True, help="run folder")
    ap.add_argument("--vlm", default="{}", help="the judge's VLMConfig as JSON, without the key (from env)")
    ap.add_argument("--rubrics", default=None, help="rubric set JSON (absent: judge without rubrics)")
    ap.add_argument("--resume", default=None, help="run or checkpoint folder to resume from")
    args = ap.parse_args(argv)
    ctx = init_from_env()
    finished, code = False, 0
    try:  # reading the inputs too: a bad exported config is exit 2 on every rank, not a traceback
        cfg_path = Path(args.config)
        if cfg_path.suffix == ".json":
            from pydantic import ValidationError

            from arr_core.config_io import validation_error

            try:
                cfg = TrainConfig.model_validate_json(cfg_path.read_text(encoding="utf-8"))
            except ValidationError as e:
                raise validation_error(e, str(cfg_path)) from None
        else:
            from arr_core.rpo.config import load_train_config

            cfg = load_train_config(cfg_path)
        rs = RubricSet.from_json(Path(args.rubrics).read_text(encoding="utf-8")) if args.rubrics else None
        vlm = {k: v for k, v in json.loads(args.vlm).items() if k != "api_key"}
        res = run(cfg, args.out, rubric_set=rs, vlm=VLMConfig.model_validate(vlm) if vlm else None,
                  resume=args.resume, dist_ctx=ctx)
        if ctx.is_main:
            result = {"lora_dir": str(res.lora_dir), "metrics_uri": str(res.metrics_path), "steps": res.steps,
                      "samples_dir": str(Path(args.out) / "samples")}
            (Path(args.out) / RESULT_FILE).write_text(json.dumps(result), encoding="utf-8")
        finished = True
    except ArrError as e:  # no traceback: the exit file carries the code past torchrun (which exits 1)
        code = e.exit_code
        write_exit_file(args.out, ctx.rank, e)
        if ctx.is_main or str(e).startswith(f"rank {ctx.rank}: "):  # once: rank 0, or the rank that had it
            print(f"error: {e}", file=sys.stderr, flush=True)
    finally:
        cleanup(ctx, synchronize=finished)  # no barrier after a failure: torchrun stops the job
    if ctx.active:  # outputs written and the group torn down: end before finalization can abort gloo
        exit_after_distributed_run(code)
    if code:
        sys.exit(code)


def _exit_dir(out: str | Path) -> Path:
    return Path(out) / EXIT_DIR


def write_exit_file(out: str | Path, rank: int, err: ArrError) -> Path:
    """Record why this rank stopped (``<out>/.exit/rank<k>.json``), atomically (temp file + rename)."""
    import os

    path = _exit_dir(out) / f"rank{rank}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"rank": rank, "exit_code": err.exit_code, "error": type(err).__name__,
                               "message": str(err)}), encoding="utf-8")
    tmp.replace(path)
    return path


def clear_exit_files(out: str | Path) -> None:
    """Remove an earlier run's exit files, so they cannot speak for this one."""
    for path in _exit_dir(out).glob("*rank*.json*"):
        path.unlink(missing_ok=True)


def torchrun_error(out: str | Path, gpus: int) -> ArrError:
    """The error a failed torchrun run ends with: the ranks' recorded project error that wins by
    ``EXIT_PRIORITY`` (same class, code and message, so callers and Prefect's retry rule treat it as
    in one process), else a generic failure (exit 1) pointing at the ranks' output."""
    from arr_core import errors

    found = []
    for path in sorted(_exit_dir(out).glob("rank*.json")):
        try:
            rec = json.loads(path.read_text(encoding="utf-8"))
            found.append((int(rec["rank"]), int(rec["exit_code"]), str(rec["error"]), str(rec["message"])))
        except (OSError, ValueError, KeyError, TypeError):  # not one of ours: the generic failure below
            continue
    if not found:
        return ArrError(f"training under torchrun ({gpus} processes) failed; see the ranks' output above")

    def priority(item: tuple[int, int, str, str]) -> tuple[int, bool, int]:
        rank, code, _, message = item
        order = EXIT_PRIORITY.index(code) if code in EXIT_PRIORITY else len(EXIT_PRIORITY)
        return order, not message.startswith(f"rank {rank}: "), rank

    _, code, name, message = min(found, key=priority)
    cls = getattr(errors, name, None)
    err = cls(message) if isinstance(cls, type) and issubclass(cls, ArrError) else ArrError(message)
    err.exit_code = code
    return err


def run_torchrun(cmd: list[str], out: str | Path, gpus: int, **popen: Any) -> dict[str, Any]:
    """Run a :func:`torchrun_command` (``popen``: ``subprocess.run`` options such as ``cwd``, ``env``)
    and return rank 0's result; a failed run raises :func:`torchrun_error` (exit 2/3/4/5 as in one
    process). Stale exit files are removed first."""
    import subprocess

    clear_exit_files(out)
    if subprocess.run(cmd, **popen).returncode != 0:
        raise torchrun_error(out, gpus)
    return json.loads((Path(out) / RESULT_FILE).read_text(encoding="utf-8"))


if __name__ == "__main__":
    main()
