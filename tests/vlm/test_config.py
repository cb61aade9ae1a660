"""VLMConfig: ${ENV} expansion, OPENAI_* fallbacks, cross-field checks, and the key kept secret."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from arr_core.sim.scene_vlm import SceneVLM
from arr_core.vlm.config import VLMConfig, build_client
from arr_core.vlm.openai_backend import OpenAIBackend


def test_env_expansion_and_openai_fallbacks(monkeypatch):
    monkeypatch.setenv("MY_VLM_HOST", "127.0.0.1:9999")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-env-123")
    monkeypatch.setenv("OPENAI_BASE_URL", "http://fallback/v1")
    cfg = VLMConfig(backend="openai", base_url="http://${MY_VLM_HOST}/v1", model="qwen")
    assert cfg.base_url == "http://127.0.0.1:9999/v1"
    assert cfg.api_key.get_secret_value() == "sk-from-env-123"
    assert VLMConfig(backend="openai", model="qwen").base_url == "http://fallback/v1"
    monkeypatch.setenv("OTHER_KEY", "sk-other")
    assert VLMConfig(backend="openai", model="m", api_key="${OTHER_KEY}").api_key.get_secret_value() == "sk-other"


def test_unset_variable_and_missing_model_raise(monkeypatch):
    monkeypatch.delenv("NOPE_NOT_SET", raising=False)
    with pytest.raises(ValidationError, match="NOPE_NOT_SET"):
        VLMConfig(backend="openai", model="m", base_url="http://${NOPE_NOT_SET}/v1")
    with pytest.raises(ValidationError, match="model"):
        VLMConfig(backend="openai")
    with pytest.raises(ValidationError):
        VLMConfig(backend="scene", concurrency=0)
    with pytest.raises(ValidationError):
        VLMConfig(backend="scene", unknown_field=1)


def test_key_is_redacted_everywhere_but_the_backend(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    cfg = VLMConfig(backend="openai", model="m", base_url="http://127.0.0.1:1/v1", api_key="sk-TOPSECRET-42")
    for text in (repr(cfg), str(cfg), str(cfg.model_dump()), cfg.model_dump_json(), str(cfg.safe_dump())):
        assert "sk-TOPSECRET-42" not in text
    assert "api_key" not in cfg.safe_dump()
    client = build_client(cfg)
    assert isinstance(client.backend, OpenAIBackend)
    assert "TOPSECRET" not in repr(client.backend) and "TOPSECRET" not in str(client.stats())


def test_scene_defaults():
    cfg = VLMConfig()
    assert cfg.backend == "scene" and cfg.model == "scene-vlm-1"
    client = build_client(cfg)
    assert isinstance(client.backend, SceneVLM) and client.concurrency == 8


def test_request_parameter_and_image_fields_reach_the_client_and_backend():
    from arr_core.data.images import ImagePolicy

    dflt = VLMConfig()
    assert (dflt.token_param, dflt.temperature, dflt.max_side, dflt.image_format, dflt.jpeg_quality) == \
        ("auto", 0.0, 1024, "auto", 90)
    assert dflt.max_request_bytes == 15_000_000 and dflt.structured_output and dflt.max_tokens_cap == 16384
    cfg = VLMConfig(backend="openai", model="m", base_url="http://127.0.0.1:1/v1", api_key="k",
                    max_tokens={"judge": 2048}, token_param="max_completion_tokens", temperature=None,
                    reasoning_effort="low", image_format="webp", jpeg_quality=80, max_side=768,
                    max_images_per_request=2, structured_output=False)
    client = build_client(cfg)
    assert client.image_policy == ImagePolicy(max_side=768, fmt="webp", quality=80)
    assert client.budgets == {"judge": 2048} and client.temperature is None and client.reasoning_effort == "low"
    assert client.max_images_per_request == 2 and not client.structured_output
    assert client.backend.token_param == "max_completion_tokens"
    with pytest.raises(ValidationError, match="request kinds"):
        VLMConfig(max_tokens={"judging": 100})
    with pytest.raises(ValidationError):
        VLMConfig(token_param="max_output_tokens")
    with pytest.raises(ValidationError):
        VLMConfig(image_format="gif")
    assert "temperature" in VLMConfig(temperature=None).safe_dump()


def test_credentials_in_base_url_never_reach_stored_json() -> None:
    """Issue 20: a base_url with user:key@ was stored verbatim in Prefect parameters and MLflow."""
    from arr_core.vlm.config import VLMConfig

    cfg = VLMConfig(backend="openai", model="m", base_url="https://bob:sk-live-9@api.example.com/v1")
    assert "sk-live-9" not in cfg.model_dump_json() and "https://***@api.example.com/v1" in cfg.model_dump_json()
    assert cfg.base_url == "https://bob:sk-live-9@api.example.com/v1"  # the client still connects with it
