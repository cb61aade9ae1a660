"""``arr train``: RPO training of a policy with a group rewarder, from a YAML config.

    arr train --config configs/train_toy.yaml [--rubrics ID|FILE|none] [--resume RUN_OR_CKPT] [--out DIR]
    torchrun --nproc_per_node 8 -m arr_core train --config configs/train_flux_qwen3vl.yaml --rubrics ID

The builders below (policy, rewarder, prompts) are plain functions so a Prefect task can reuse them
through ``run_train``. Heavy imports happen inside them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer

from arr_core.cli.common import Home, console, home_dir, resolve_rubrics
from arr_core.errors import InputError

if TYPE_CHECKING:
    import torch
    from PIL import Image

    from arr_core.rpo.config import TrainConfig
    from arr_core.rpo.distributed import DistContext
    from arr_core.rpo.trainer import TrainResult


def resolve_device(spec: str, local_rank: int = 0) -> torch.device:
    import torch

    if spec == "auto":
        return torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    return torch.device(spec)


def build_policy(cfg: TrainConfig, device: torch.device) -> Any:
    """The policy the config names, from its local folder (adapters imported lazily)."""
    import torch

    p = cfg.policy
    dtype_name = p.dtype or ("bfloat16" if device.type == "cuda" else "float32")
    dtype = getattr(torch, dtype_name)
    side = cfg.resolution or 512
    if p.folder is not None and not p.folder.exists():
        raise InputError("folder does not exist", file=str(p.folder), field="policy.folder")
    if p.kind == "toy":
        from arr_core.rpo.adapters.toy import ToyPolicy

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


def load_prompts(cfg: TrainConfig) -> tuple[list[str], list[Image.Image] | None]:
    """Training prompts (and edit sources): a .txt file (one per line), a .jsonl file with 'prompt'
    (and 'image', a path relative to the file, for editing), or the scene-world sampler."""
    from PIL import Image

    pc = cfg.prompts
    if pc.source == "world":
        import numpy as np

        from arr_core.world.grammar import sample_spec

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


def checker_score(prompt: str, image: Image.Image) -> float:
    """Scene-world reward: the share of the prompt's GenEval-format clauses the detector confirms."""
    from arr_core.world import check_spec, detect
    from arr_core.world.grammar import parse_prompt

    spec = parse_prompt(prompt)
    if spec is None:
        raise ValueError(f"prompt {prompt!r} is not a scene-world prompt; reward 'checker' cannot score it")
    res = check_spec(spec, detect(image))
    return sum(c["passed"] for c in res["clauses"]) / max(1, len(res["clauses"]))


def build_rewarder(cfg: TrainConfig, rubrics: str | None, home: Path | None) -> tuple[Any, str]:
    """(GroupRewarder, description) for ``cfg.reward`` (``rubrics`` overrides ``reward.rubrics``)."""
    from arr_core.rpo.rewards import CallableRewarder, FixedLatencyRewarder, ShuffledRewarder

    rc = cfg.reward
    rubrics = rubrics if rubrics is not None else rc.rubrics
    if rc.kind != "judge" and rubrics not in (None, "none"):
        raise InputError(f"--rubrics is only used by reward.kind 'judge', not '{rc.kind}'", field="--rubrics")
    if rc.kind == "fixed":
        rewarder, desc = FixedLatencyRewarder(rc.latency_s, cfg.seed), f"fixed latency {rc.latency_s}s"
    elif rc.kind == "checker":
        rewarder, desc = CallableRewarder(checker_score), "scene detector checks"
    else:
        if rubrics is None:
            raise InputError("the judge needs --rubrics ID (or FILE, or 'none' to judge without rubrics)",
                             field="--rubrics")
        try:
            from arr_core.judge.factory import judge_rewarder
        except ModuleNotFoundError as e:
            raise InputError(f"the rubric judge (arr_core.judge) is not available: {e}") from None
        from arr_core.store import Store
        from arr_core.vlm.config import VLMConfig, build_client

        store = Store(home_dir(home))
        rs = resolve_rubrics(store, rubrics)
        vcfg = VLMConfig.model_validate(rc.vlm)
        task = "edit" if cfg.policy.kind == "qwen_edit" else "t2i"
        client = build_client(vcfg, store)
        try:
            rewarder, what = judge_rewarder(client, rs, task, rc, seed=cfg.seed, store=store)
        except ValueError as e:
            field = "reward.hard_themes" if "hard theme" in str(e) else "--rubrics"
            raise InputError(str(e), field=field) from None
        desc = what.replace("judge", f"judge {vcfg.backend}:{vcfg.model}", 1)
    if rc.shuffled:
        rewarder, desc = ShuffledRewarder(rewarder, cfg.seed), desc + " (SHUFFLED control)"
    return rewarder, desc


def run_train(cfg: TrainConfig, *, out: Path, rubrics: str | None = None, resume: Path | None = None,
              home: Path | None = None, progress: Any = print, dist_ctx: DistContext | None = None
              ) -> TrainResult:
    """Build policy, rewarder and prompts from ``cfg`` and run ``arr_core.rpo.trainer.train``."""
    from arr_core.rpo.distributed import DistContext
    from arr_core.rpo.trainer import train

    ctx = dist_ctx or DistContext()
    device = resolve_device(cfg.policy.device, ctx.local_rank)
    prompts, sources = load_prompts(cfg)
    rewarder, desc = build_rewarder(cfg, rubrics, home)
    policy = build_policy(cfg, device)
    if ctx.is_main:
        progress(f"policy {cfg.policy.kind} on {device}; reward: {desc}; {len(prompts)} prompts; "
                 f"{cfg.steps} steps × {cfg.prompts_per_step} prompts × G={cfg.group_size}"
                 + (f" × {ctx.world_size} ranks" if ctx.active else ""))
    return train(policy, rewarder, prompts, cfg, out, sources=sources, resume=resume, progress=progress,
                 dist_ctx=ctx)


def register(app: typer.Typer) -> None:
    @app.command("train")
    def train_cmd(
        config: Annotated[Path, typer.Option("--config", help="Training YAML (configs/train_*.yaml).")],
        rubrics: Annotated[Optional[str], typer.Option(
            "--rubrics", help="Rubric set id (or prefix) in the store, a rubric text file, or 'none'.")] = None,
        resume: Annotated[Optional[Path], typer.Option(
            "--resume", help="Run folder or checkpoint folder to resume from (exactly).")] = None,
        out: Annotated[Optional[Path], typer.Option(
            "--out", help="Run folder (default: the config's output_dir, else HOME/runs/rpo-<config digest>).")]
        = None,
        home: Home = None,
    ) -> None:
        """RPO: sample G images per prompt, rank them with the reward, update a LoRA (PPO + KL)."""
        from arr_core.rpo.config import load_train_config
        from arr_core.rpo.distributed import cleanup, exit_after_distributed_run, init_from_env
        from arr_core.rpo.trainer import config_digest

        cfg = load_train_config(config)
        ctx = init_from_env() if cfg.distributed != "none" else None
        if ctx is None:
            import os

            if int(os.environ.get("WORLD_SIZE", "1")) > 1:
                raise InputError("launched by torchrun but the config says distributed: none", file=str(config),
                                 field="distributed")
        run_dir = out or cfg.output_dir or home_dir(home) / "runs" / f"rpo-{config_digest(cfg)}"
        finished = False
        try:
            res = run_train(cfg, out=run_dir, rubrics=rubrics, resume=resume, home=home,
                            progress=lambda s: console.print(s, markup=False, soft_wrap=True), dist_ctx=ctx)
            finished = True
        finally:
            if ctx is not None:
                cleanup(ctx, synchronize=finished)
        if ctx is None or ctx.is_main:
            console.print(f"LoRA: {res.lora_dir}  (pipe.load_lora_weights('{res.lora_dir}'))")
            console.print(f"metrics: {res.metrics_path}")
        if ctx is not None and ctx.active:  # outputs written, group torn down: see exit_after_distributed_run
            exit_after_distributed_run(0)
