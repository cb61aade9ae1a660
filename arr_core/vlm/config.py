"""VLM configuration: which backend, where, which model, and how the client behaves.

String fields accept ``${ENV_VAR}`` references, expanded when the config is built (an unset variable
raises, naming it). For the OpenAI backend, an unset ``api_key`` / ``base_url`` falls back to the
usual ``OPENAI_API_KEY`` / ``OPENAI_BASE_URL``. The key is a ``SecretStr``: it prints as ``**********``
in ``repr`` and ``model_dump`` and is only revealed to the openai client.
"""

from __future__ import annotations

import os
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

SCENE_MODEL = "scene-vlm-1"


def expand_env(value: str, field: str = "value") -> str:
    """Replace every ``${NAME}`` / ``${NAME:-default}`` (``arr_core.config_io.expand_env``); an unset
    NAME without a default raises, naming the field."""
    from arr_core.config_io import expand_env as _expand

    return _expand(value, field)


class VLMConfig(BaseModel):
    """How to reach the VLM. Defaults run the offline scene VLM with no server."""

    model_config = ConfigDict(extra="forbid")

    backend: Literal["scene", "openai"] = Field("scene", description="scene: the offline simulator; "
                                                "openai: any OpenAI-compatible endpoint")
    base_url: str | None = Field(None, description="e.g. http://127.0.0.1:8000/v1; default OPENAI_BASE_URL")
    api_key: SecretStr | None = Field(None, description="default OPENAI_API_KEY; never logged or stored")
    model: str | None = Field(None, description="served model name; the scene VLM defaults to scene-vlm-1")
    concurrency: int = Field(8, ge=1, description="requests in flight at most")
    timeout_s: float = Field(60.0, gt=0, description="per-request timeout")
    max_retries: int = Field(5, ge=0, description="transport retries (429, 5xx, timeouts, connection)")
    backoff_s: float = Field(0.5, ge=0, description="first retry delay; doubles per retry, with jitter")
    total_retry_budget_s: float = Field(300.0, ge=0, description="time budget for one call's retries")
    max_reasks: int = Field(2, ge=0, description="re-asks after an unusable answer, then abstain")
    json_mode: bool = Field(False, description="send response_format={'type': 'json_object'}")
    max_side: int | None = Field(None, ge=16, description="downscale images so the longer side is at most this")
    cache_mode: Literal["readwrite", "readonly", "off"] = "readwrite"
    seed: int = Field(0, description="seed of the scene VLM's noise")

    @field_validator("base_url", "model", mode="before")
    @classmethod
    def _expand_str(cls, v: Any, info: Any) -> Any:
        return expand_env(v, info.field_name) if isinstance(v, str) else v

    @field_validator("api_key", mode="before")
    @classmethod
    def _expand_key(cls, v: Any) -> Any:
        if isinstance(v, SecretStr):
            v = v.get_secret_value()
        return expand_env(v, "api_key") if isinstance(v, str) else v

    @model_validator(mode="after")
    def _defaults_and_checks(self) -> VLMConfig:
        if self.backend == "openai":
            if self.api_key is None and os.environ.get("OPENAI_API_KEY"):
                self.api_key = SecretStr(os.environ["OPENAI_API_KEY"])
            if self.base_url is None and os.environ.get("OPENAI_BASE_URL"):
                self.base_url = os.environ["OPENAI_BASE_URL"]
            if not self.model:
                raise ValueError("backend 'openai' needs 'model' (the served model name)")
        elif self.model is None:
            self.model = SCENE_MODEL
        return self

    def safe_dump(self) -> dict[str, Any]:
        """A dict for logs and MLflow params: the key is left out entirely."""
        return self.model_dump(mode="json", exclude={"api_key"})


def build_backend(cfg: VLMConfig) -> Any:
    """The backend a config names (imports the scene world only when it is used)."""
    if cfg.backend == "scene":
        from arr_core.sim.scene_vlm import SceneVLM

        return SceneVLM(seed=cfg.seed, model=cfg.model or SCENE_MODEL)
    from arr_core.vlm.openai_backend import OpenAIBackend

    return OpenAIBackend(cfg.base_url, cfg.api_key.get_secret_value() if cfg.api_key else None,
                         cfg.model or "", timeout_s=cfg.timeout_s, max_retries=cfg.max_retries,
                         backoff_s=cfg.backoff_s, total_retry_budget_s=cfg.total_retry_budget_s)


def build_client(cfg: VLMConfig, store: Any | None = None) -> Any:
    """A ``VLMClient`` for the config, caching in ``store`` (None: memory only)."""
    from arr_core.vlm.client import VLMClient

    return VLMClient(build_backend(cfg), store=store, cache_mode=cfg.cache_mode,
                     concurrency=cfg.concurrency, max_reasks=cfg.max_reasks, json_mode=cfg.json_mode,
                     max_side=cfg.max_side)
