"""The RPO training config: one airtight pydantic model, defaults from the ARR paper (FLUX.1-dev).

Paper defaults (text-to-image, FLUX): LoRA rank 16 / alpha 32 on attention projections, lr 5e-5,
weight decay 1e-4, 8 sampling steps, G = 2 images per prompt, β = 0.01, grad clip 1.0, 512².
Editing (Qwen-Image-Edit) uses rank 32 / alpha 64, lr 1e-5, 10 steps, β 0.02 (configs/).
Every field is read by the trainer or the CLI; unknown fields are errors (``extra="forbid"``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, model_serializer, model_validator

from arr_core.judge.config import JudgeSettings, OrderMode, RewardMapping


class _Strict(BaseModel):
    # Non-finite floats are written as JSON's Infinity/NaN (pydantic's default writes null): a config
    # exported for the training side (torchrun ranks, the pipeline's exchange folder) loads back equal,
    # so a value like ``lr: .inf`` is refused by the trainer's health check, not by the JSON reader.
    model_config = ConfigDict(extra="forbid", frozen=True, ser_json_inf_nan="constants")


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


class _JudgeReward(_Strict):
    rubrics: str | None = Field(None, description="Rubric set id in the store or a rubric text file; "
                                "'none' judges without rubrics. The CLI's --rubrics wins.")
    vlm: dict[str, Any] = Field(default_factory=dict, description="VLMConfig fields of the judge "
                                "(backend scene|openai, base_url, model, concurrency, timeout_s, ...); "
                                "empty = the stage's default VLM. The API key comes from "
                                "OPENAI_API_KEY, never from this file.")

    @model_validator(mode="after")
    def _vlm(self) -> _JudgeReward:
        if "api_key" in self.vlm:
            raise ValueError("reward.vlm.api_key: keep secrets out of config files; set OPENAI_API_KEY")
        if self.vlm:
            from arr_core.vlm.config import VLMConfig

            VLMConfig.model_validate(self.vlm)  # fail at load time, naming the field
        return self


class RankJudgeReward(_JudgeReward, JudgeSettings):
    """The paper's judge: the VLM ranks each group (pairwise for G = 2, listwise above); ``order`` is
    the judge's setting (``arr_core.judge.config.JudgeSettings``)."""

    mode: Literal["rank"] = "rank"
    mapping: RewardMapping | None = Field(None, description="Rank → reward; None = paper (1.0/−0.1) for "
                                          "G = 2, linear for G > 2.")


class ChecklistJudgeReward(_JudgeReward):
    """Yes/no/n.a. per rubric for each image (``arr_core.judge.checklist``); equal scores tie."""

    mode: Literal["checklist"]
    hard_themes: list[str] = Field(default_factory=list, description="Rubric themes an image must "
                                   "satisfy for any credit (an image failing one scores 0).")

    @model_validator(mode="after")
    def _themes(self) -> ChecklistJudgeReward:
        if any(not t.strip() for t in self.hard_themes):
            raise ValueError("reward.hard_themes: theme names must be non-empty")
        return self


ScaleName = Literal["binary", "1-5"]


class _ScoresSettings(_Strict):
    """How the per-criterion judge scores (``arr_core.judge.scores``)."""

    default_scale: ScaleName = Field("1-5", description="Scale of a criterion the rubric set and ``scales`` "
                                     "leave open: 'binary' (0/1) or '1-5'.")
    scales: dict[str, ScaleName] = Field(default_factory=dict, description="Criterion text or theme name → "
                                         "scale; a scale the rubric set carries (metadata.scales) wins.")
    weights: dict[str, float] = Field(default_factory=dict, description="Criterion text or theme name → "
                                      "weight (>= 0) in the composite; unnamed criteria weigh 1.")

    @model_validator(mode="after")
    def _weights(self) -> _ScoresSettings:
        bad = {k: w for k, w in self.weights.items() if not w >= 0}
        if bad:
            raise ValueError(f"weights must be >= 0, got {bad}")
        return self


class ScoresJudgeReward(_JudgeReward, _ScoresSettings):
    """A score per rubric criterion for each image, one VLM request per image; the reward is the
    composite (weighted mean of the normalised scores)."""

    mode: Literal["scores"]


ComponentKind = Literal["rubric_judge", "rubric_scores", "vlm_questions", "checker", "http"]
# The fields each component kind reads besides the common ones (kind, name, weight, required,
# normalize, min_confidence).
COMPONENT_FIELDS: dict[str, tuple[str, ...]] = {
    "rubric_judge": ("order", "mapping"),
    "rubric_scores": ("default_scale", "scales", "weights"),
    "vlm_questions": ("questions",),
    "checker": ("checker",),
    "http": ("url", "timeout_s"),
}


class RewardComponent(_ScoresSettings):
    """One term of a hybrid reward (``arr_core.judge.hybrid``)."""

    kind: ComponentKind = Field(description="rubric_judge: the rank judge; rubric_scores: per-criterion "
                                "scores; vlm_questions: yes/no checkpoints per prompt; checker: a rule-based "
                                "verifier; http: a scalar reward model over JSON-over-HTTP (docs/rewards.md).")
    name: str | None = Field(None, description="Unique name in metrics (default: the kind).")
    weight: float = Field(1.0, description="Weight of the normalised values in the sum.")
    required: bool = Field(True, description="A failure in any group fails the step (no group of the batch "
                           "gets a verdict, no update; counted; two such steps in a row stop training), an "
                           "endpoint that fails the whole batch stops training at once, a gated verdict makes "
                           "its group abstain; optional: the group gets 0 from this component, counted.")
    normalize: Literal["none", "zscore", "rank"] = Field("none", description="Per-group normalisation of "
                                                         "the values before weighting.")
    min_confidence: float | None = Field(None, ge=0, le=1, description="Drop verdicts whose confidence is "
                                         "below this (components that return one: checker, http).")
    order: OrderMode = Field("swap", description="rubric_judge: image order mode.")
    mapping: RewardMapping | None = Field(None, description="rubric_judge: rank → reward mapping.")
    questions: Path | None = Field(None, description="vlm_questions: JSONL of {prompt, questions: [...]}; "
                                   "empty = one question per prompt, 'Does the image show <prompt>?'.")
    checker: str | None = Field(None, description="checker: 'scene' (the toy world's detector) or a "
                                "registered verifier 'package.module:function' (fn(prompt, image) -> score "
                                "or (score, confidence)).")
    url: str | None = Field(None, description="http: the reward model's URL (POST, docs/rewards.md).")
    timeout_s: float = Field(60.0, gt=0, description="http: request timeout.")

    @model_validator(mode="after")
    def _kind_fields(self) -> RewardComponent:
        common = {"kind", "name", "weight", "required", "normalize", "min_confidence"}
        stray = sorted(set(self.model_fields_set) - common - set(COMPONENT_FIELDS[self.kind]))
        if stray:
            raise ValueError(f"component {self.name or self.kind}: field(s) {stray} do not apply to kind "
                             f"{self.kind!r} (it reads {list(COMPONENT_FIELDS[self.kind]) or 'no others'})")
        if self.kind == "checker" and not self.checker:
            raise ValueError("a checker component needs checker: 'scene' or 'package.module:function'")
        if self.kind == "http" and not (self.url or "").startswith(("http://", "https://")):
            raise ValueError(f"an http component needs url: http(s)://…, got {self.url!r}")
        if self.weight != self.weight or abs(self.weight) == float("inf"):
            raise ValueError(f"weight must be finite, got {self.weight}")
        return self

    @model_serializer(mode="wrap")
    def _dump_kind_fields(self, handler: Any) -> dict[str, Any]:
        # only the fields this kind reads: a dump (the pipeline exports the training config as JSON)
        # must validate again, and _kind_fields refuses the other kinds' fields
        keep = {"kind", "name", "weight", "required", "normalize", "min_confidence", *COMPONENT_FIELDS[self.kind]}
        return {k: v for k, v in handler(self).items() if k in keep}

    @property
    def label(self) -> str:
        return self.name or self.kind


class HybridReward(_JudgeReward):
    """A weighted sum of reward components (``reward: {components: [...]}``); ``rubrics`` and ``vlm``
    serve the VLM-bound components."""

    mode: Literal["hybrid"] = "hybrid"
    components: list[RewardComponent] = Field(min_length=1)

    @model_validator(mode="after")
    def _names(self) -> HybridReward:
        names = [c.label for c in self.components]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"reward.components: names {dup} repeat; give each component a unique name")
        return self


# The reward is one of the judge modes, told apart by ``mode`` (default ``rank``), or a list of
# components (``components``: hybrid). Benchmark stand-ins (a fixed-latency judge, the shuffled
# control) are not configuration: the benchmarks build them (``arr_core.sim.rewards``) and hand them
# to the recipe.
def _reward_mode(v: Any) -> str:
    if isinstance(v, dict) and "components" in v:
        return v.get("mode") or "hybrid"
    return (v.get("mode") if isinstance(v, dict) else getattr(v, "mode", None)) or "rank"


RewardConfig = Annotated[Union[Annotated[RankJudgeReward, Tag("rank")],
                               Annotated[ChecklistJudgeReward, Tag("checklist")],
                               Annotated[ScoresJudgeReward, Tag("scores")],
                               Annotated[HybridReward, Tag("hybrid")]],
                         Discriminator(_reward_mode)]


class ExperimentalConfig(_Strict):
    """Options validated only in the scene-world simulator (docs/experiments/), off by default."""

    noise_block: int = Field(1, ge=1, description="Step noise on noise_block × noise_block tiles of "
                             "image-shaped latents (1 = per element, the references). > 1 explores only "
                             "coarse directions, with the score correction projected to keep the "
                             "marginals (arr_core/rpo/sde.py); toy and sd3 latents only. Evidence: the "
                             "64 px toy benchmark (docs/experiments/), nothing on real models.")
    hard_only: bool = Field(False, description="Checklist judge with hard_themes: every image that "
                            "passes the hard themes scores 1, so the other rubrics do not order passing "
                            "images. Evidence: the 64 px toy benchmark only, where the hard theme's "
                            "verdict is the simulator's ground truth.")


class LoraConfigModel(_Strict):
    rank: int = Field(16, ge=1)
    alpha: float = Field(32.0, gt=0)
    dropout: float = Field(0.0, ge=0, lt=1, description="Non-zero dropout breaks ratio = 1 unless "
                           "identical masks are drawn; keep 0 (the paper and references do).")
    targets: list[str] | None = Field(None, description="Module names; None = the policy's attention "
                                      "projections (Policy.lora_targets).")


class DPOPairsConfig(_Strict):
    """Where the DPO pairs come from (``arr_core/rpo/dpo.py``)."""

    source: Literal["dataset", "generated"] = Field(
        description="'dataset': preference records (arr_core.data: JSON/JSONL/Parquet, label_rank or "
        "label_score); 'generated': the base policy samples two images per training prompt and the "
        "rubric judge (reward section) labels them in both orders; ties and disagreeing orders are dropped.")
    path: Path | None = Field(None, description="Preference dataset file or folder (source: dataset).")
    count: int | None = Field(None, ge=1, description="source generated: number of prompts to sample a "
                              "pair for (the first of the prompt list); None = every prompt. source "
                              "dataset: use at most this many records (in file order).")
    sample_steps: int = Field(8, ge=2, description="source generated: ODE (Euler) steps of the base "
                              "policy's samples.")
    seed: int = Field(0, description="source generated: seed of the two images' initial noise.")

    @model_validator(mode="after")
    def _path(self) -> DPOPairsConfig:
        if self.source == "dataset" and self.path is None:
            raise ValueError("dpo.pairs.path is required when dpo.pairs.source is 'dataset'")
        if self.source == "generated" and self.path is not None:
            raise ValueError("dpo.pairs.path must be empty when dpo.pairs.source is 'generated'")
        return self


class DPOConfig(_Strict):
    """Offline Diffusion-DPO for flow models (``algorithm: dpo``; arr_core/rpo/dpo.py)."""

    pairs: DPOPairsConfig
    beta: float = Field(2500.0, gt=0, description="Coefficient of (Δ_policy − Δ_ref) inside −log σ(−β·…). "
                        "Diffusion-DPO's code scales by β_dpo/2, so β = 2500 here is its SD1.5 β_dpo = 5000.")
    weighting: Literal["none", "margin"] = Field(
        "none", description="Per-pair weight: 'margin' = the composite-score margin of the pair (dataset: "
        "label_score difference; generated: the composites of reward.mode 'scores') divided by the mean margin "
        "of the pairs (mean weight 1).")
    sigma_sampling: Literal["uniform", "logit_normal"] = Field(
        "uniform", description="Noise level σ per pair: uniform on (0, 1) (Diffusion-DPO's uniform "
        "timesteps) or logit-normal (SD3's training density).")
    logit_mean: float = Field(0.0, description="logit_normal: mean of logit(σ).")
    logit_std: float = Field(1.0, gt=0, description="logit_normal: std of logit(σ).")
    pairs_per_step: int = Field(8, ge=1, description="Pairs per optimizer step (per rank).")
    micro_batch: int = Field(4, ge=1, description="Pairs per forward (winner and loser together: 2× "
                             "this many images); gradients accumulate over pairs_per_step / micro_batch.")

    @model_validator(mode="after")
    def _batch(self) -> DPOConfig:
        if self.pairs_per_step % self.micro_batch:
            raise ValueError(f"dpo.pairs_per_step ({self.pairs_per_step}) must be a multiple of "
                             f"dpo.micro_batch ({self.micro_batch})")
        return self


class TrainConfig(_Strict):
    """One RPO run. Sizes are per process (rank) under torchrun."""

    policy: PolicyConfig
    prompts: PromptsConfig | None = Field(None, description="Training prompts; required except for "
                                          "algorithm dpo with dpo.pairs.source 'dataset'.")
    reward: RewardConfig = RankJudgeReward()
    algorithm: Literal["rpo", "dpo"] = Field("rpo", description="'rpo': online RPO (the paper); 'dpo': "
                                             "offline Diffusion-DPO on preference pairs (the dpo section).")
    dpo: DPOConfig | None = Field(None, description="algorithm dpo: pairs source and DPO settings.")
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
    rollout_batch_size: Annotated[int, Field(ge=1)] | Literal["auto"] = Field(
        2, description="Prompts per rollout batch; also the training micro-batch (same batch size keeps the "
        "on-policy ratio exactly 1). 'auto': chosen when training starts from free device memory and one "
        "image's measured peak (arr_core/rpo/kernels.py: choose_batch_size); 2 where memory cannot be "
        "measured (CPU); a resumed run keeps its size.")
    noise: Literal["flow_grpo", "dance_grpo"] = "flow_grpo"
    a: float = Field(0.7, ge=0, description="Flow-GRPO noise level (0.7 SD3.5, 0.9 FLUX in its code).")
    eta: float = Field(0.3, ge=0, description="DanceGRPO noise level.")
    shared_initial_noise: bool = Field(False, description="The G images of a prompt start from the same noise.")
    judged_image: Literal["clean_estimate", "last_sample", "deterministic_last_step"] = Field(
        "clean_estimate", description="What the judge sees. 'clean_estimate' (ARR's and DanceGRPO's code): "
        "x̂₀ = x − σ·v from the last step's velocity, i.e. that step's Euler (ODE) result. "
        "'deterministic_last_step' (Flow-GRPO): the last step is an Euler step in the rollout itself (no "
        "density; it must not be trained), giving the same image. 'last_sample': the last stochastic SDE "
        "sample (the only behaviour before this option; on FLUX it carries extra noise of std ≈ 0.26).")

    # Objective
    beta: float = Field(0.01, ge=0, description="Weight of the analytic KL to the LoRA-off reference.")
    clip_range: float = Field(0.2, gt=0, description="PPO ε (ARR's code 0.2; Flow-GRPO 1e-4).")
    advantage: Literal["centered", "raw"] = Field("centered", description="'raw' = the paper's code.")
    adv_clip: float = Field(5.0, gt=0)
    trained_window: tuple[int, int] | None = Field(None, description="Denoising steps [start, end) that "
                                                   "get a loss term; None = all but the last (the paper).")
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
    attention_backend: Literal["auto", "flash", "efficient", "cudnn", "math"] = Field(
        "auto", description="SDPA kernels allowed during rollouts and training (arr_core/rpo/kernels.py). "
        "'auto': flash, efficient or math, never cuDNN (its backward crashed FLUX.1-dev on an H200). "
        "'efficient' and 'cudnn' exist on CUDA only.")
    compile: bool | Literal["auto"] = Field(
        "auto", description="Regional torch.compile of the transformer's repeated blocks, with a warm-up "
        "before the first step (excluded from step times). 'auto': on for CUDA without FSDP, off otherwise.")
    max_inflight_judge_batches: int = Field(2, ge=0, description="Bound on rollout batches awaiting the "
                                            "judge while the next is sampled; 0 = blocking: each batch is "
                                            "judged before the next is sampled (the released code's pattern).")
    sample_grid_every: int = Field(10, ge=0, description="Save a PNG grid of the step's rollouts every N "
                                   "steps (0 = never).")
    checkpoint_every: int = Field(50, ge=0, description="Save a resumable checkpoint every N steps "
                                  "(0 = only at the end).")
    experimental: ExperimentalConfig = Field(default_factory=ExperimentalConfig, description="Options "
                                             "validated only in the simulator; off by default.")
    distributed: Literal["none", "ddp", "fsdp"] = Field("none", description="Under torchrun: 'ddp' = all-"
                                                        "reduce LoRA grads; 'fsdp' = shard the base model.")

    @model_validator(mode="after")
    def _cross(self) -> TrainConfig:
        if self.rollout_batch_size != "auto" and self.prompts_per_step % self.rollout_batch_size:
            raise ValueError(f"prompts_per_step ({self.prompts_per_step}) must be a multiple of "
                             f"rollout_batch_size ({self.rollout_batch_size})")
        if self.trained_window is not None:
            st, e = self.trained_window
            if not 0 <= st < e <= self.num_steps:
                raise ValueError(f"trained_window {list(self.trained_window)} must satisfy "
                                 f"0 <= start < end <= num_steps ({self.num_steps})")
        if isinstance(self.accumulate, int) and self.accumulate < 1:
            raise ValueError(f"accumulate must be 'all' or >= 1, got {self.accumulate}")
        if self.policy.kind == "toy" and self.resolution is not None:
            raise ValueError("resolution must be empty for the toy policy (its size is fixed by the checkpoint)")
        nb = self.experimental.noise_block
        if nb > 1 and self.policy.kind in ("flux", "qwen_edit"):
            raise ValueError(f"experimental.noise_block {nb} needs image-shaped latents (batch, c, h, w); "
                             f"policy.kind {self.policy.kind!r} packs its latents into sequences")
        if self.experimental.hard_only and not (self.reward.mode == "checklist" and self.reward.hard_themes):
            raise ValueError("experimental.hard_only needs reward.mode: checklist and reward.hard_themes "
                             "(it scores images by the hard themes alone)")
        if self.judged_image == "deterministic_last_step" and self.num_steps - 1 in self.trained_step_indices():
            raise ValueError("judged_image 'deterministic_last_step' makes the last step an Euler step, which "
                             "has no density: trained_window must end before num_steps")
        if (self.algorithm == "dpo") != (self.dpo is not None):
            raise ValueError("algorithm 'dpo' needs a dpo section (dpo.pairs.source, ...), and a dpo section "
                             "needs algorithm: dpo")
        if self.dpo is not None:
            if self.distributed != "none":
                raise ValueError("algorithm 'dpo' runs in one process: distributed must be 'none'")
            order = getattr(self.reward, "order", "swap")
            if self.dpo.pairs.source == "generated" and order != "swap":
                raise ValueError("dpo.pairs.source 'generated' labels each pair in both orders: reward.order "
                                 f"must be 'swap', got {order!r}")
        if self.prompts is None and not (self.dpo is not None and self.dpo.pairs.source == "dataset"):
            raise ValueError("prompts is required (only algorithm dpo with dpo.pairs.source 'dataset' "
                             "trains without a prompt list)")
        if self.policy.kind == "qwen_edit" and self.prompts is not None and self.prompts.source == "world":
            raise ValueError("policy.kind 'qwen_edit' needs edit instructions with source images "
                             "(prompts.source 'file')")
        return self

    def sde_step_mask(self) -> list[bool]:
        """Per denoising step: True where rollouts take a stochastic (SDE) step, False for Euler."""
        if self.sde_steps == "all":
            mask = [True] * self.num_steps
        else:
            trained = set(self.trained_step_indices())
            mask = [i in trained for i in range(self.num_steps)]
        if self.judged_image == "deterministic_last_step":
            mask[-1] = False
        return mask

    def trained_step_indices(self) -> list[int]:
        """Integer indices of the denoising steps that get a loss term."""
        n = self.num_steps
        if self.trained_window is None:
            return list(range(n - 1))
        return list(range(*self.trained_window))


def load_train_config(path: str | Path, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Read a YAML file into a ``TrainConfig`` (``arr_core.config_io``); ``overrides`` (dotted keys,
    e.g. ``"reward.rubrics"``) are applied before validation. Errors name the file and the field."""
    from arr_core.config_io import load_config

    return load_config(path, TrainConfig, overrides=overrides)
