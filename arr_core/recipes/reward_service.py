"""The reward service recipe (``arr serve reward``): the training config's ``reward`` section, served
over HTTP for trainers of other frameworks (``arr_core.judge.service``; protocol in docs/rewards.md).

The config file (``--config``) holds the reward section exactly as a training config does (rank,
checklist, per-criterion scores or a hybrid of components) plus the service's own limits. The
judge's VLM comes from ``reward.vlm`` (else the offline scene VLM); its API key from
OPENAI_API_KEY. The service keeps no store: the VLM cache and judgments stay in memory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from arr_core.rpo.config import RankJudgeReward, RewardConfig


class RewardServiceConfig(BaseModel):
    """``arr serve reward --config FILE``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    task: Literal["t2i", "edit"] = Field("t2i", description="What the groups are: text-to-image images, or "
                                         "edits of a source image (then every group needs its source).")
    reward: RewardConfig = Field(default_factory=RankJudgeReward, description="As in the training config.")
    image_root: Path | None = Field(None, description="Folder request images may be read from by path "
                                    "(resolved, nothing outside it); None = base64 images only.")
    max_concurrency: int = Field(4, ge=1, description="Requests scored at once.")
    max_queue: int = Field(16, ge=0, description="Requests waiting beyond max_concurrency before 503 busy.")
    max_images: int = Field(64, ge=2, description="Images per request.")
    max_failure_rate: float = Field(0.2, ge=0, le=1, description="Share of a request's VLM calls that may "
                                    "fail in transport before the request is a 503 naming the endpoint.")
    max_request_mb: float = Field(128.0, gt=0, description="Largest request body (MiB); a larger one is a 413 "
                                  "before it is read in full.")
    seed: int = Field(0, description="Seed of the judge's random order mode.")


def load_service_config(path: str | Path | None) -> RewardServiceConfig:
    """The service config from a YAML file (errors name the file and field), or the defaults."""
    if path is None:
        return RewardServiceConfig()
    from arr_core.config_io import load_config

    return load_config(path, RewardServiceConfig)


def build_app(cfg: RewardServiceConfig, rubric_set: Any, *, vlm: Any = None) -> tuple[Any, str]:
    """(FastAPI app, description) serving ``cfg.reward`` with ``rubric_set`` (None: no rubrics)."""
    from arr_core.errors import InputError
    from arr_core.failures import endpoint_name
    from arr_core.judge.service import ServiceSettings, create_app
    from arr_core.recipes.rpo import reward_from_config, scores_rewarder
    from arr_core.vlm.config import VLMConfig, build_client

    vcfg = VLMConfig.model_validate(cfg.reward.vlm) if cfg.reward.vlm else (vlm or VLMConfig())
    client = build_client(vcfg, None)

    def make(c: Any) -> Any:
        return reward_from_config(cfg.reward, cfg.task, rubric_set, c, seed=cfg.seed)[0]

    _, what = reward_from_config(cfg.reward, cfg.task, rubric_set, client, seed=cfg.seed)  # input errors now
    pointwise = None
    if cfg.reward.mode == "scores":
        def pointwise(c: Any) -> Any:
            return scores_rewarder(cfg.reward, cfg.task, rubric_set, c)[0]
    if rubric_set is not None and rubric_set.task != cfg.task:
        raise InputError(f"rubric set {rubric_set.id} is for task {rubric_set.task!r}, the service for "
                         f"{cfg.task!r}", field="--rubrics")
    settings = ServiceSettings(task=cfg.task, image_root=cfg.image_root, max_concurrency=cfg.max_concurrency,
                               max_queue=cfg.max_queue, max_images=cfg.max_images,
                               max_failure_rate=cfg.max_failure_rate,
                               max_request_bytes=int(cfg.max_request_mb * 1024 * 1024))
    desc = what.replace("judge", f"judge {vcfg.backend}:{vcfg.model}", 1)
    return create_app(make, client, settings, description=desc, endpoint=endpoint_name(client),
                      pointwise=pointwise), desc
