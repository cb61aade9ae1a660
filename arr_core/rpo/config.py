"""The RPO training config: one airtight pydantic model, defaults from the ARR paper (FLUX.1-dev).

Paper defaults (text-to-image, FLUX): LoRA rank 16 / alpha 32 on attention projections, lr 5e-5,
weight decay 1e-4, 8 sampling steps, G = 2 images per prompt, β = 0.01, grad clip 1.0, 512².
Editing (Qwen-Image-Edit) uses rank 32 / alpha 64, lr 1e-5, 10 steps, β 0.02 (configs/).
Every field is read by the trainer or the CLI; unknown fields are errors (``extra="forbid"``).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from arr_core.errors import InputError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PolicyConfig(_Strict):
    kind: Literal["toy", "flux", "sd3", "qwen_edit"] = Field(description="Which adapter builds the policy.")
    folder: Path | None = Field(None, description="Local weights folder (diffusers layout). The toy "
                                "policy alone may omit it (the shipped checkpoint is used).")
    dtype: Literal["float32", "bfloat16", "float16"] | None = Field(
        None, description="Weights dtype of the frozen base model (sampling maths stays fp32); None = "
        "bfloat16 on CUDA, float32 on CPU. The toy policy is float32 only.")
    device: str = Field("auto", description="'auto' (cuda:LOCAL_RANK if present, else cpu), 'cpu', 'cuda:1'.")
    guidance_scale: float | None = Field(
        None, ge=1.0, description="Classifier-free guidance scale for toy and sd3 (1 = off; rollouts, the "
        "trained steps and the KL reference are all guided). None = the toy checkpoint's own "
        "(toy_policy.json), 1 for sd3. FLUX uses its distilled guidance embedding instead.")

    @model_validator(mode="after")
    def _folder(self) -> PolicyConfig:
        if self.guidance_scale is not None and self.kind not in ("toy", "sd3"):
            raise ValueError(f"policy.guidance_scale applies to kinds 'toy' and 'sd3', not '{self.kind}'")
        if self.kind != "toy" and self.folder is None:
            raise ValueError(f"policy.folder is required for kind '{self.kind}' (a local diffusers folder)")
        if self.kind == "toy" and self.dtype not in (None, "float32"):
            raise ValueError("policy.dtype must be float32 (or empty) for the toy policy")
        return self


class PromptsConfig(_Strict):
    source: Literal["file", "world"] = Field(description="'file': one prompt per line (or a .jsonl with "
                                             "a 'prompt' field); 'world': the scene-world prompt sampler.")
    path: Path | None = Field(None, description="Prompt file (source: file).")
    count: int = Field(1000, ge=1, description="Number of world prompts to sample (source: world).")
    seed: int = Field(0, description="Seed of the world prompt sampler (source: world).")

    @model_validator(mode="after")
    def _path(self) -> PromptsConfig:
        if self.source == "file" and self.path is None:
            raise ValueError("prompts.path is required when prompts.source is 'file'")
        if self.source == "world" and self.path is not None:
            raise ValueError("prompts.path must be empty when prompts.source is 'world'")
        return self


class RewardConfig(_Strict):
    kind: Literal["judge", "checker", "fixed"] = Field(
        "judge", description="'judge': rubric-conditioned VLM judge; 'checker': the scene detector's "
        "prompt checks (toy world only); 'fixed': fixed-latency random winner (benchmarks).")
    rubrics: str | None = Field(None, description="Rubric set id in the store or a rubric text file; "
                                "'none' judges without rubrics. The CLI's --rubrics wins.")
    vlm: dict[str, Any] = Field(default_factory=dict, description="VLMConfig fields for kind 'judge' "
                                "(backend scene|openai, base_url, model, concurrency, timeout_s, ...). "
                                "The API key comes from OPENAI_API_KEY, never from this file.")
    order: Literal["single", "swap", "random"] = Field("swap", description="Judge image-order handling.")
    mapping: Literal["paper", "linear"] | None = Field(None, description="Rank → reward; None = paper "
                                                       "(1.0/−0.1) for G = 2, linear for G > 2.")
    mode: Literal["rank", "checklist"] = Field("rank", description="Judge mode: 'rank' (the paper's: the "
                                               "VLM ranks each group) or 'checklist' (yes/no/n.a. per "
                                               "rubric for each image; equal scores tie; "
                                               "arr_core.judge.checklist).")
    hard_themes: list[str] = Field(default_factory=list, description="Checklist mode: rubric themes an "
                                   "image must satisfy for any credit (an image failing one scores 0).")
    hard_only: bool = Field(False, description="Checklist mode with hard_themes: every image that "
                            "passes the hard themes scores 1, so the other rubrics do not order passing "
                            "images (by default they do: 1 + their share of 'yes'). Rewards come from "
                            "ranks, so this is the only choice there is about their weight.")
    latency_s: float = Field(0.0, ge=0, description="Per-batch latency of kind 'fixed'.")
    shuffled: bool = Field(False, description="Control run: permute rewards within and among groups.")

    @model_validator(mode="after")
    def _vlm(self) -> RewardConfig:
        if self.kind != "judge" and self.vlm:
            raise ValueError("reward.vlm is only read when reward.kind is 'judge'")
        if self.kind != "judge" and self.mode != "rank":
            raise ValueError(f"reward.mode '{self.mode}' is a judge mode; reward.kind is '{self.kind}'")
        if self.mode == "checklist" and self.mapping is not None:
            raise ValueError("reward.mapping is a rank-mode field; checklist scores map to rank rewards "
                             "on their own (equal scores share)")
        if self.hard_themes and self.mode != "checklist":
            raise ValueError("reward.hard_themes is only read when reward.mode is 'checklist'")
        if self.hard_only and not self.hard_themes:
            raise ValueError("reward.hard_only needs reward.mode: checklist and reward.hard_themes "
                             "(it scores images by the hard themes alone)")
        if any(not t.strip() for t in self.hard_themes):
            raise ValueError("reward.hard_themes: theme names must be non-empty")
        if "api_key" in self.vlm:
            raise ValueError("reward.vlm.api_key: keep secrets out of config files; set OPENAI_API_KEY")
        if self.vlm:
            from arr_core.vlm.config import VLMConfig

            VLMConfig.model_validate(self.vlm)  # fail at load time, naming the field
        return self


class LoraConfigModel(_Strict):
    rank: int = Field(16, ge=1)
    alpha: float = Field(32.0, gt=0)
    dropout: float = Field(0.0, ge=0, lt=1, description="Non-zero dropout breaks ratio = 1 unless "
                           "identical masks are drawn; keep 0 (the paper and references do).")
    targets: list[str] | None = Field(None, description="Module names; None = the policy's attention "
                                      "projections (Policy.lora_targets).")


class TrainConfig(_Strict):
    """One RPO run. Sizes are per process (rank) under torchrun."""

    policy: PolicyConfig
    prompts: PromptsConfig
    reward: RewardConfig = RewardConfig()
    lora: LoraConfigModel = LoraConfigModel()
    output_dir: Path | None = Field(None, description="Run folder; the CLI may override it.")

    seed: int = 0
    steps: int = Field(100, ge=1, description="Training steps (one rollout batch + its updates each).")

    # Sampling
    resolution: int | None = Field(None, ge=16, description="Image side in pixels; None = 512 (paper) "
                                   "for flux/sd3/qwen_edit; the toy policy has its own fixed size.")
    num_steps: int = Field(8, ge=2, description="Denoising steps of the SDE sampler.")
    group_size: int = Field(2, ge=2, description="G: images per prompt ranked together.")
    prompts_per_step: int = Field(8, ge=1, description="Prompts per training step (per rank).")
    rollout_batch_size: int = Field(2, ge=1, description="Prompts per rollout batch; also the training "
                                    "micro-batch (same batch size keeps the on-policy ratio exactly 1).")
    noise: Literal["flow_grpo", "dance_grpo"] = "flow_grpo"
    a: float = Field(0.7, ge=0, description="Flow-GRPO noise level (0.7 SD3.5, 0.9 FLUX in its code).")
    eta: float = Field(0.3, ge=0, description="DanceGRPO noise level.")
    noise_block: int = Field(1, ge=1, description="Step noise on noise_block × noise_block tiles of image-"
                             "shaped latents (1 = per element, the references). > 1 explores only coarse "
                             "directions, with the score correction projected to keep the marginals "
                             "(arr_core/rpo/sde.py); toy and sd3 latents only.")
    shared_initial_noise: bool = Field(False, description="The G images of a prompt start from the same noise.")

    # Objective
    beta: float = Field(0.01, ge=0, description="Weight of the analytic KL to the LoRA-off reference.")
    clip_range: float = Field(0.2, gt=0, description="PPO ε (ARR's code 0.2; Flow-GRPO 1e-4).")
    advantage: Literal["centered", "raw"] = Field("centered", description="'raw' = the paper's code.")
    adv_clip: float = Field(5.0, gt=0)
    trained_steps: Literal["all_but_last", "fraction", "window"] = "all_but_last"
    trained_fraction: float | None = Field(None, gt=0, le=1, description="'fraction': train the first "
                                           "round(f·(num_steps−1)) steps (at least 1).")
    trained_window: tuple[int, int] | None = Field(None, description="'window': steps [start, end).")
    sde_steps: Literal["all", "trained"] = Field("all", description="Where rollouts inject SDE noise. "
                                                 "'all' (Flow-GRPO): every step. 'trained' (MixGRPO): only the "
                                                 "trained steps; the others take the deterministic Euler (ODE) "
                                                 "step, so a group's reward differences come only from the "
                                                 "steps that are credited with them.")
    accumulate: int | Literal["all"] = Field("all", description="Backward units (micro-batch × trained "
                                             "step) per optimizer step; 'all' = one step per batch.")

    # Optimiser
    lr: float = Field(5e-5, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    adam_betas: tuple[float, float] = (0.9, 0.999)
    adam_eps: float = Field(1e-8, gt=0)
    warmup_steps: int = Field(0, ge=0, description="Linear LR warm-up (optimizer steps).")
    grad_clip: float = Field(1.0, gt=0)

    # Systems
    bf16_autocast: bool = Field(False, description="bf16 autocast around the network (sampling maths fp32).")
    gradient_checkpointing: bool = False
    max_inflight_judge_batches: int = Field(2, ge=1, description="Bound on rollout batches awaiting the judge.")
    sample_grid_every: int = Field(10, ge=0, description="Save a PNG grid of the step's rollouts every N "
                                   "steps (0 = never).")
    checkpoint_every: int = Field(50, ge=0, description="Save a resumable checkpoint every N steps "
                                  "(0 = only at the end).")
    distributed: Literal["none", "ddp", "fsdp"] = Field("none", description="Under torchrun: 'ddp' = all-"
                                                        "reduce LoRA grads; 'fsdp' = shard the base model.")

    @model_validator(mode="after")
    def _cross(self) -> TrainConfig:
        if self.prompts_per_step % self.rollout_batch_size:
            raise ValueError(f"prompts_per_step ({self.prompts_per_step}) must be a multiple of "
                             f"rollout_batch_size ({self.rollout_batch_size})")
        if self.trained_steps == "fraction" and self.trained_fraction is None:
            raise ValueError("trained_fraction is required when trained_steps is 'fraction'")
        if self.trained_steps != "fraction" and self.trained_fraction is not None:
            raise ValueError("trained_fraction is only read when trained_steps is 'fraction'")
        if self.trained_steps == "window":
            if self.trained_window is None:
                raise ValueError("trained_window [start, end) is required when trained_steps is 'window'")
            s, e = self.trained_window
            if not 0 <= s < e <= self.num_steps:
                raise ValueError(f"trained_window {list(self.trained_window)} must satisfy "
                                 f"0 <= start < end <= num_steps ({self.num_steps})")
        elif self.trained_window is not None:
            raise ValueError("trained_window is only read when trained_steps is 'window'")
        if isinstance(self.accumulate, int) and self.accumulate < 1:
            raise ValueError(f"accumulate must be 'all' or >= 1, got {self.accumulate}")
        if self.policy.kind == "toy" and self.resolution is not None:
            raise ValueError("resolution must be empty for the toy policy (its size is fixed by the checkpoint)")
        if self.noise_block > 1 and self.policy.kind in ("flux", "qwen_edit"):
            raise ValueError(f"noise_block {self.noise_block} needs image-shaped latents (batch, c, h, w); "
                             f"policy.kind {self.policy.kind!r} packs its latents into sequences")
        if self.reward.kind == "checker" and self.policy.kind != "toy":
            raise ValueError("reward.kind 'checker' (the scene detector) only applies to policy.kind 'toy'")
        if self.policy.kind == "qwen_edit" and self.prompts.source == "world":
            raise ValueError("policy.kind 'qwen_edit' needs edit instructions with source images "
                             "(prompts.source 'file')")
        return self

    def sde_step_mask(self) -> list[bool]:
        """Per denoising step: True where rollouts take a stochastic (SDE) step, False for Euler."""
        if self.sde_steps == "all":
            return [True] * self.num_steps
        trained = set(self.trained_step_indices())
        return [i in trained for i in range(self.num_steps)]

    def trained_step_indices(self) -> list[int]:
        """Integer indices of the denoising steps that get a loss term."""
        n = self.num_steps
        if self.trained_steps == "all_but_last":
            return list(range(n - 1))
        if self.trained_steps == "fraction":
            assert self.trained_fraction is not None
            return list(range(max(1, round(self.trained_fraction * (n - 1)))))
        assert self.trained_window is not None
        return list(range(*self.trained_window))


_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _expand_env(value: Any, path: str, file: str) -> Any:
    """Expand ``${VAR}`` / ``${VAR:-default}`` in string values; an unset VAR without default raises."""
    if isinstance(value, dict):
        return {k: _expand_env(v, f"{path}.{k}" if path else str(k), file) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand_env(v, f"{path}[{i}]", file) for i, v in enumerate(value)]
    if isinstance(value, str):
        def sub(m: re.Match[str]) -> str:
            var, default = m.group(1), m.group(2)
            if var in os.environ:
                return os.environ[var]
            if default is not None:
                return default
            raise InputError(f"environment variable {var} is not set (use ${{{var}:-default}} for a "
                             "default)", file=file, field=path)
        return _ENV.sub(sub, value)
    return value


def load_train_config(path: str | Path, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Read a YAML file into a ``TrainConfig``; ``overrides`` (dotted keys, e.g. ``"reward.rubrics"``)
    are applied before validation. Errors name the file and the field."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise InputError("config file not found", file=str(path))
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise InputError(f"not valid YAML: {e}", file=str(path)) from None
    if not isinstance(raw, dict):
        raise InputError("the top level must be a mapping of config fields", file=str(path))
    raw = _expand_env(raw, "", str(path))
    for key, val in (overrides or {}).items():
        node = raw
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = val
    try:
        return TrainConfig.model_validate(raw)
    except ValidationError as e:
        err = e.errors()[0]
        field = ".".join(str(x) for x in err["loc"]) or None
        more = f" (and {len(e.errors()) - 1} more)" if len(e.errors()) > 1 else ""
        raise InputError(f"{err['msg']}{more}", file=str(path), field=field) from None
