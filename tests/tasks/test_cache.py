"""Cache keys are content digests: secrets, paths of outputs and object identity never enter them."""

from __future__ import annotations

import types
from pathlib import Path

import pytest
from pydantic import SecretStr

import tasks  # noqa: F401  (offline defaults)
from tasks import _cache


def _ctx(fn):
    return types.SimpleNamespace(task=types.SimpleNamespace(name=fn.__name__, fn=fn))


def stage_a(config: dict, dataset_digest: str, home: str) -> None:
    return None


def stage_b(config: dict, dataset_digest: str, home: str) -> None:
    return None


def test_redact_drops_secret_keys_and_values() -> None:
    cfg = {"vlm": {"model": "m", "api_key": SecretStr("sk-1"), "base_url": "http://x"},
           "auth_token": "t", "nested": [{"password": "p", "keep": 1}], "opaque": SecretStr("s")}
    assert _cache.redact(cfg) == {"vlm": {"model": "m", "base_url": "http://x"}, "nested": [{"keep": 1}]}


def test_key_follows_listed_content_only() -> None:
    key = _cache.keyed_by("config", "dataset_digest")
    ctx = _ctx(stage_a)
    base = key(ctx, {"config": {"k": 5}, "dataset_digest": "d1", "home": "/a"})
    assert key(ctx, {"config": {"k": 5}, "dataset_digest": "d1", "home": "/elsewhere"}) == base
    assert key(ctx, {"config": {"k": 5, "api_key": "sk-other"}, "dataset_digest": "d1", "home": "/a"}) == base
    assert key(ctx, {"config": {"k": 6}, "dataset_digest": "d1", "home": "/a"}) != base
    assert key(ctx, {"config": {"k": 5}, "dataset_digest": "d2", "home": "/a"}) != base
    # Another task's source gives another key for equal inputs.
    assert key(_ctx(stage_b), {"config": {"k": 5}, "dataset_digest": "d1", "home": "/a"}) != base


def test_key_names_missing_parameters() -> None:
    with pytest.raises(KeyError, match="prompt_version"):
        _cache.keyed_by("prompt_version")(_ctx(stage_a), {"config": {}})


def test_code_version_follows_file_content(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pkg = tmp_path / "arr_core" / "demo"
    pkg.mkdir(parents=True)
    (pkg / "a.py").write_text("x = 1\n")
    monkeypatch.setattr(_cache, "_ROOT", tmp_path)
    _cache.code_version.cache_clear()
    v1 = _cache.code_version("demo")
    (pkg / "a.py").write_text("x = 2\n")
    _cache.code_version.cache_clear()
    v2 = _cache.code_version("demo")
    (pkg / "a.py").write_text("x = 1\n")
    _cache.code_version.cache_clear()
    assert v1 != v2 and _cache.code_version("demo") == v1
    _cache.code_version.cache_clear()


def test_was_cached_reads_prefect_state_names() -> None:
    from prefect.states import Completed

    assert _cache.was_cached(Completed(name="Cached"))
    assert not _cache.was_cached(Completed())
