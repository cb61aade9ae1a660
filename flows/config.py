"""The whole-pipeline config: one typed pydantic model composed of the stage configs.

``PipelineConfig`` = data (where the preference pairs come from) + ``vlm`` (``VLMConfig``) +
``induce`` (``InduceConfig``) + judge check + ``training`` (``TrainConfig`` plus how it is
dispatched) + evaluation + MLflow. It is what ``arr pipeline run --config FILE`` reads and what the
Prefect ``pipeline`` flow takes as its parameter. Stage configs keep their own defaults (paper
values); model and dataset locations have no default: ``data.pairs`` (or an explicit scene-world
generator) and ``training.config.policy.folder`` (for real models) must be given.

``demo_config()`` is the embedded default behind ``arr demo``: scene-world pairs made on the fly,
the offline scene VLM, the shipped toy policy, training in-process.

Secrets never live here: an API key comes from the environment (``OPENAI_API_KEY``) or a
``${VAR}`` reference; it is removed before anything is logged, cached or sent to a deployment.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from arr_core.digest import digest_obj
from arr_core.judge.config import JudgeSettings
from arr_core.rpo.config import TrainConfig
from arr_core.vlm.config import VLMConfig

try:  # the induction stage's config; until it lands, induction settings are a free mapping
    from arr_core.rubrics.config import InduceConfig
except ModuleNotFoundError as _exc:  # pragma: no cover - removed once arr_core.rubrics.config exists
    if _exc.name != "arr_core.rubrics.config":
        raise

    class InduceConfig(BaseModel):  # type: ignore[no-redef]
        model_config = ConfigDict(extra="allow")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# How pydantic (and so Prefect, when it stores flow-run parameters) writes a SecretStr.
SECRET_MASK = "**********"


def unmask(vlm: VLMConfig | None) -> VLMConfig | None:
    """A config read back from stored parameters has the mask for its key: drop it so the VLM config
    takes the key from the environment again (``OPENAI_API_KEY``), as a retried flow run must."""
    if vlm is None or vlm.api_key is None or vlm.api_key.get_secret_value() != SECRET_MASK:
        return vlm
    return VLMConfig.model_validate(vlm.model_dump(exclude={"api_key"}))


def _induce_uses_vlm(induce: Any, vlm: VLMConfig) -> Any:
    """``vlm`` is every stage's default VLM: induction uses it unless ``induce.generator`` is set."""
    if "generator" not in getattr(induce, "model_fields_set", set()):
        induce = induce.model_copy(update={"generator": vlm})
    if isinstance(getattr(induce, "generator", None), VLMConfig):
        induce = induce.model_copy(update={"generator": unmask(induce.generator),
                                           "verifier": unmask(induce.verifier)})
    return induce


class WorldPairs(_Strict):
    """Scene-world preference pairs generated on the fly (the demo's data source)."""

    task: Literal["t2i", "edit"] = "t2i"
    n: int = Field(96, ge=4, description="number of pairs")
    seed: int = 0
    size: int = Field(64, ge=16, description="image side in pixels")


class DataStage(_Strict):
    """Where the preference pairs come from: a file (``pairs``) or the scene world (``world``)."""

    pairs: Path | None = Field(None, description="ARR reference JSON/JSONL/YAML or the project's "
                               "JSONL/Parquet; no default")
    world: WorldPairs | None = Field(None, description="generate scene-world pairs instead of a file")
    root: Path | None = Field(None, description="folder that relative image paths are relative to (default: "
                              "the pairs file's folder; the ARR reference's examples use the repository root)")
    task: Literal["t2i", "edit"] | None = Field(None, description="force the task (default: detected)")
    format: str | None = Field(None, description="dataset format of data.pairs: arr, hpdv3, mmrb2, "
                               "editreward-bench, pickapic, hpdv2, imagereward, imagerewarddb (default: "
                               "detected from the fields)")
    allow_ties: bool = Field(False, description="load pairs whose human label ties (EditReward-Bench A=B, "
                             "Pick-a-Pic 0.5/0.5) instead of refusing the file; they are set aside from every "
                             "split and counted (n_tied_labels)")
    seed_fraction: float = Field(0.6, gt=0, lt=1, description="share of pairs used for induction")
    validation_fraction: float = Field(0.2, ge=0, lt=1, description="share held out for the judge check")
    split_salt: str = Field("", description="changes the deterministic split")
    max_seed_pairs: int | None = Field(None, ge=1, description="cap on induction pairs (first by id)")

    @field_validator("format")
    @classmethod
    def _known_format(cls, v: str | None) -> str | None:
        from arr_core.data.formats import format_named

        if v is None:
            return None
        try:
            return format_named(v).name
        except ValueError as e:  # InputError: "unknown format 'x' (known: …)"
            raise ValueError(getattr(e, "reason", str(e))) from None

    @model_validator(mode="after")
    def _one_source(self) -> DataStage:
        if (self.pairs is None) == (self.world is None):
            raise ValueError("give exactly one of data.pairs (a file) or data.world (scene-world pairs)")
        if self.seed_fraction + self.validation_fraction > 1:
            raise ValueError(f"data.seed_fraction + data.validation_fraction must be <= 1, got "
                             f"{self.seed_fraction} + {self.validation_fraction}")
        return self

    def split_kw(self) -> dict[str, Any]:
        return {"seed_fraction": self.seed_fraction, "validation_fraction": self.validation_fraction,
                "salt": self.split_salt}


class JudgeStage(JudgeSettings):
    """Check the induced rubrics: judge held-out pairs with and without them."""

    enabled: bool = True
    split: Literal["validation", "test"] = "validation"
    max_pairs: int | None = Field(200, ge=1, description="cap on judged pairs (first by id)")
    compare_no_rubrics: bool = Field(True, description="also judge without rubrics (the baseline)")
    protocol: Literal["check", "paper"] = Field(
        "check", description="check: accuracy in 'order' mode with (and without) the rubrics; paper: the ARR "
        "paper's protocol (order single, forward and reversed: order-balanced accuracy, position bias, per "
        "subset, cost; no-rubric baseline always; an HTML report stored as an evaluation)")
    zeroshot_ks: list[int] = Field(default_factory=list, description="paper protocol: also judge with k "
                                   "zero-shot rubrics per prompt, one condition per k (e.g. [1, 5, 10, 20])")

    @field_validator("zeroshot_ks")
    @classmethod
    def _positive_ks(cls, v: list[int]) -> list[int]:
        if any(k < 1 for k in v):
            raise ValueError(f"every k must be >= 1, got {v}")
        return v


class TrainingStage(_Strict):
    """RPO training and where it runs."""

    enabled: bool = True
    config: TrainConfig
    dispatch: Literal["in-process", "work-pool"] = Field(
        "in-process", description="'work-pool': run_deployment onto the rpo-train deployment")
    deployment: str = Field("rpo-train/rpo-train", description="FLOW_NAME/DEPLOYMENT_NAME for work-pool")
    worker_wait_s: float = Field(120.0, gt=0, description="fail when no worker picked the run up by then")
    timeout_s: float = Field(24 * 3600.0, gt=0, description="give up waiting for the training run")
    gpus: int | None = Field(None, ge=1, description="processes per node under torchrun; None: the work "
                             "pool's ARR_GPUS job variable (1 in-process)")
    shared_dir: Path | None = Field(None, description="folder both sides can read (rubric set and "
                                    "config out, LoRA back); default ARR_HOME/exchange")


class EvaluateStage(_Strict):
    """Generation benchmarks of the trained policy against its base."""

    enabled: bool = True
    prompts: int = Field(60, ge=1, description="held-out scene-world prompts (GenEval format)")
    prompt_seed: int = Field(10_000, description="seed of the held-out prompts (differs from training)")
    images_per_prompt: int = Field(2, ge=1)
    num_steps: int | None = Field(None, ge=2, description="sampling steps (default: training's)")
    win_rate: bool = Field(True, description="judge trained vs base images with the rubric judge")
    report: bool = Field(True, description="write the HTML report")
    checkpoints: int | Literal["all", "last", "none"] = Field(
        4, description="held-out scores at the training run's saved checkpoints (their LoRAs scored like the "
        "trained one; report curve, MLflow geneval.checkpoint by step): all, last, none, or N = at most N "
        "evenly spaced (first and newest included)")

    @field_validator("checkpoints")
    @classmethod
    def _checkpoints(cls, v: int | str) -> int | str:
        if isinstance(v, int) and v < 0:
            raise ValueError(f"checkpoints must be all, last, none or an integer >= 0, got {v}")
        return v


class MlflowStage(_Strict):
    experiment: str = "arr-pipeline"


class PipelineConfig(_Strict):
    """Everything one pipeline run needs. Its stage sections are the stages' own configs."""

    name: str = Field("arr-pipeline", description="run name in Prefect and MLflow")
    data: DataStage
    vlm: VLMConfig = Field(default_factory=VLMConfig, description="every stage's VLM (induction's too, "
                           "unless induce.generator is set)")
    induce: InduceConfig = Field(default_factory=InduceConfig)
    judge: JudgeStage = Field(default_factory=JudgeStage)
    training: TrainingStage
    evaluate: EvaluateStage = Field(default_factory=EvaluateStage)
    mlflow: MlflowStage = Field(default_factory=MlflowStage)

    @model_validator(mode="after")
    def _default_vlm(self) -> PipelineConfig:
        self.vlm = unmask(self.vlm)
        self.induce = _induce_uses_vlm(self.induce, self.vlm)
        if self.training.config.reward.rubrics is not None:
            raise ValueError("training.config.reward.rubrics must be empty: the pipeline trains with the "
                             "rubric set its induce stage produced")
        return self

    def digest(self, section: str | None = None) -> str:
        """Content digest of the config (or one section) without secrets: part of cache keys."""
        data = self.model_dump(mode="json")
        data["vlm"].pop("api_key", None)
        return digest_obj(data if section is None else data[section], 16)


class ReinductionConfig(_Strict):
    """The scheduled ``rubric-reinduction`` deployment: induce on new preference data on top of the
    newest rubric set, make a new version only when the content changes, optionally judge it."""

    name: str = "rubric-reinduction"
    data: DataStage = Field(description="the preference-data location (data.pairs), read on every run")
    parent: str | None = Field("latest", description="'latest': the newest extendable rubric set of the task "
                               "made under this config's name (never another experiment's in the same "
                               "store); an id; or null to induce from scratch")
    vlm: VLMConfig = Field(default_factory=VLMConfig)
    induce: InduceConfig = Field(default_factory=InduceConfig)
    evaluate: bool = Field(False, description="run the judge check when a new version was made")
    judge: JudgeStage = Field(default_factory=JudgeStage)
    mlflow: MlflowStage = Field(default_factory=lambda: MlflowStage(experiment="arr-reinduction"))

    @model_validator(mode="after")
    def _default_vlm(self) -> ReinductionConfig:
        self.vlm = unmask(self.vlm)
        self.induce = _induce_uses_vlm(self.induce, self.vlm)
        return self


# Fields the VLM config expands itself (it raises naming the field); left as written here.
_SELF_EXPANDING = ("vlm.",)


def _resolve_paths(raw: dict[str, Any], base: Path) -> None:
    """Relative file locations in a config file are relative to the file, not the current folder."""
    def fix(node: dict[str, Any] | None, key: str) -> None:
        if isinstance(node, dict) and isinstance(node.get(key), str) and not Path(node[key]).is_absolute():
            node[key] = str((base / node[key]).resolve())

    fix(raw.get("data"), "pairs")
    fix(raw.get("data"), "root")
    training = raw.get("training") or {}
    fix(training, "shared_dir")
    cfg = training.get("config") or {}
    fix(cfg.get("policy"), "folder")
    fix(cfg.get("prompts"), "path")


def pipeline_config_from_dict(raw: dict[str, Any], *, file: str = "<config>",
                              model: type[BaseModel] = PipelineConfig) -> Any:
    """Validate a mapping; the first error names the file and the dotted field."""
    from arr_core.config_io import validate

    return validate(model, raw, file)


def load_pipeline_config(path: str | Path, model: type[BaseModel] = PipelineConfig) -> Any:
    """Read a YAML pipeline config (``arr_core.config_io``: ``${VAR}`` / ``${VAR:-default}`` expanded
    except in ``vlm``, which expands its own fields; relative paths are relative to the file);
    ``model=ReinductionConfig`` reads the re-induction deployment's config."""
    from arr_core.config_io import expand_env, read_yaml

    raw = read_yaml(path, "pipeline sections (data, training, ...)")
    raw = expand_env(raw, "", str(path), skip=_SELF_EXPANDING)
    _resolve_paths(raw, Path(path).resolve().parent)
    return pipeline_config_from_dict(raw, file=str(path), model=model)


def demo_config(**overrides: Any) -> PipelineConfig:
    """The embedded defaults of ``arr demo`` (also ``configs/pipeline_demo.yaml``): a small scene
    world, the offline VLM, the shipped toy policy trained in-process, a quick evaluation.

    Sizes are chosen for the demo's budget on a 2-core CPU (cold run ≤ 10 minutes), not for quality.
    """
    raw: dict[str, Any] = {
        "name": "arr-demo",
        "data": {"world": {"task": "t2i", "n": 64, "seed": 0, "size": 64}},
        "vlm": {"backend": "scene"},
        "induce": {},
        "judge": {"order": "swap", "max_pairs": 64},
        "training": {
            "dispatch": "in-process",
            "config": {
                "policy": {"kind": "toy", "dtype": "float32", "device": "cpu"},
                "prompts": {"source": "world", "count": 64, "seed": 1},
                # the rank judge; the scene checker only observes (weight 0: rewards unchanged), so
                # metrics and the report have an absolute per-step score, reward/checker/mean
                "reward": {"components": [{"kind": "rubric_judge", "order": "swap"},
                                          {"kind": "checker", "checker": "scene", "weight": 0, "required": False}]},
                "steps": 16, "num_steps": 6, "prompts_per_step": 4,
                "rollout_batch_size": 2, "sample_grid_every": 4, "checkpoint_every": 4,
                "lr": 1e-3,
            },
        },
        "evaluate": {"prompts": 36, "images_per_prompt": 1},
        "mlflow": {"experiment": "arr-demo"},
    }
    for dotted, value in overrides.items():
        node = raw
        *parents, leaf = dotted.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return pipeline_config_from_dict(raw, file="<demo defaults>")
