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
