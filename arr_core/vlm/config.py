"""VLM configuration: which backend, where, which model, and how the client behaves.

String fields accept ``${ENV_VAR}`` references, expanded when the config is built (an unset variable
raises, naming it). For the OpenAI backend, an unset ``api_key`` / ``base_url`` falls back to the
usual ``OPENAI_API_KEY`` / ``OPENAI_BASE_URL``. The key is a ``SecretStr``: it prints as ``**********``
in ``repr`` and ``model_dump`` and is only revealed to the openai client.
"""

from __future__ import annotations

import os
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    field_serializer,
    field_validator,
    model_validator,
)

SCENE_MODEL = "scene-vlm-1"
REQUEST_KINDS = ("judge", "generate", "revise", "categorize", "check", "checklist")


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
    json_mode: bool = Field(False, description="send response_format={'type': 'json_object'} (when structured "
                            "output is off or rejected)")
    # ---- request parameters (adapted to the endpoint: docs/vlm.md "Real endpoints")
    max_tokens: dict[str, int] = Field(default_factory=dict, description="output-token budget per request "
                                       "kind (judge, generate, revise, categorize, check, checklist); a kind "
                                       "not listed uses its template's budget (judge 512, generate/revise "
                                       "1024, categorize 2048, check/checklist by list length)")
    max_tokens_cap: int = Field(16384, ge=1, description="an answer cut off by the budget "
                                "(finish_reason length, e.g. a thinking model's reasoning) is asked again with "
                                "twice the budget, up to this")
    token_param: Literal["auto", "max_tokens", "max_completion_tokens"] = Field(
        "auto", description="name of the budget parameter; auto sends max_tokens and switches once per "
        "endpoint+model when a 400 names it (GPT-5 and o-series want max_completion_tokens)")
    temperature: float | None = Field(0.0, ge=0.0, le=2.0, description="sampling temperature; None: not sent "
                                      "(the endpoint's default). A 400 naming it drops it (adapt_params)")
    reasoning_effort: str | None = Field(None, description="sent as reasoning_effort (OpenAI o-series/GPT-5, "
                                         "Gemini: minimal|low|medium|high); None: not sent")
    adapt_params: bool = Field(True, description="leave out temperature, seed, reasoning_effort or structured "
                               "output once a 400 names them (logged once per endpoint+model)")
    structured_output: bool = Field(True, description="send each request kind's JSON schema as response_format "
                                    "json_schema (vLLM, SGLang, OpenAI); falls back to text parsing when rejected")
    # ---- images
    max_side: int | None = Field(1024, ge=16, description="downscale images (Lanczos) so the longer side is at "
                                 "most this; None: as given")
    image_format: Literal["auto", "png", "jpeg", "webp"] = Field(
        "auto", description="auto: PNG up to 256 px, JPEG above (a JPEG/WebP input that fits is sent as is)")
    jpeg_quality: int = Field(90, ge=1, le=95, description="JPEG/WebP quality")
    max_request_bytes: int | None = Field(15_000_000, ge=1024, description="a larger request has its images "
                                          "shrunk, or is refused before sending (Gemini caps requests at 20 MB)")
    max_images_per_request: int | None = Field(None, ge=1, description="refuse requests with more images before "
                                               "sending (vLLM --limit-mm-per-prompt); None: learnt from the "
                                               "server's 400")
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

    @field_validator("max_tokens")
    @classmethod
    def _budgets(cls, v: dict[str, int]) -> dict[str, int]:
        bad = {k: n for k, n in v.items() if k not in REQUEST_KINDS or n < 1}
        if bad:
            raise ValueError(f"max_tokens maps request kinds ({', '.join(REQUEST_KINDS)}) to budgets >= 1, got {bad}")
        return v

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

    @field_serializer("base_url", when_used="json")
    def _mask_url_credentials(self, v: str | None) -> str | None:
        """Stored forms (Prefect parameters, MLflow, JSON files) never carry credentials embedded in the
        URL; like the API key, give them to workers through their environment."""
        from arr_core.secrets import redact_url

        return redact_url(v)

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
                         backoff_s=cfg.backoff_s, total_retry_budget_s=cfg.total_retry_budget_s,
                         token_param=cfg.token_param, adapt_params=cfg.adapt_params)


def build_client(cfg: VLMConfig, store: Any | None = None) -> Any:
    """A ``VLMClient`` for the config, caching in ``store`` (None: memory only)."""
    from arr_core.data.images import ImagePolicy
    from arr_core.vlm.client import VLMClient

    return VLMClient(build_backend(cfg), store=store, cache_mode=cfg.cache_mode,
                     concurrency=cfg.concurrency, max_reasks=cfg.max_reasks, json_mode=cfg.json_mode,
                     image_policy=ImagePolicy(max_side=cfg.max_side, fmt=cfg.image_format, quality=cfg.jpeg_quality),
                     budgets=dict(cfg.max_tokens), max_tokens_cap=cfg.max_tokens_cap, temperature=cfg.temperature,
                     reasoning_effort=cfg.reasoning_effort, structured_output=cfg.structured_output,
                     max_request_bytes=cfg.max_request_bytes, max_images_per_request=cfg.max_images_per_request)
