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


def test_redact_masks_credentials_embedded_in_urls() -> None:
    """Issue 20: a base_url with user:key@ reached MLflow and Prefect parameters verbatim."""
    out = _cache.redact({"vlm": {"base_url": "https://bob:sk-live-123@api.example.com/v1", "model": "m@x"},
                         "urls": ["http://u:p@127.0.0.1:8000/v1", "http://127.0.0.1:8000/v1"]})
    assert out == {"vlm": {"base_url": "https://***@api.example.com/v1", "model": "m@x"},
                   "urls": ["http://***@127.0.0.1:8000/v1", "http://127.0.0.1:8000/v1"]}
    assert "sk-live-123" not in str(out)


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


def _code_version_in(root: Path) -> str:
    """``tasks._cache.code_version()`` computed by a fresh interpreter over the tree at ``root``."""
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-c", "from tasks._cache import code_version; print(code_version())"],
                       cwd=root, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stdout.strip()


def _copy_tree(dst: Path, *, wheel: bool) -> Path:
    """A copy of the project: a checkout (``sql/`` at the top) or a wheel install (``arr_core/_sql``)."""
    import shutil

    repo = Path(__file__).resolve().parents[2]
    ignore = shutil.ignore_patterns("__pycache__", "assets")
    shutil.copytree(repo / "arr_core", dst / "arr_core", ignore=ignore)
    shutil.copytree(repo / "tasks", dst / "tasks", ignore=ignore)
    shutil.copytree(repo / "sql", dst / ("arr_core/_sql" if wheel else "sql"))
    return dst


@pytest.mark.slow
def test_code_version_covers_every_builder_and_the_sql(tmp_path: Path) -> None:
    """The stage cache key's code version changes when any project module a stage runs changes (here
    the recipe's policy builder, which the old hand-kept package list missed) and when a SQL file
    changes, in a checkout and in a wheel install; it does not change for an edit outside them."""
    checkout = _copy_tree(tmp_path / "checkout", wheel=False)
    v0 = _code_version_in(checkout)
    recipe = checkout / "arr_core" / "recipes" / "rpo.py"
    recipe.write_text(recipe.read_text().replace('side = cfg.resolution or 512', 'side = cfg.resolution or 1024'))
    v1 = _code_version_in(checkout)
    query = next((checkout / "sql" / "queries").glob("*.sql"))
    query.write_text(query.read_text() + "\n-- edited\n")
    v2 = _code_version_in(checkout)
    (checkout / "notes.txt").write_text("not code")
    assert len({v0, v1, v2}) == 3 and _code_version_in(checkout) == v2

    wheel = _copy_tree(tmp_path / "wheel", wheel=True)
    w0 = _code_version_in(wheel)
    query = next((wheel / "arr_core" / "_sql" / "queries").glob("*.sql"))
    query.write_text(query.read_text() + "\n-- edited\n")
    assert _code_version_in(wheel) != w0


def test_code_version_includes_the_named_task_module(tmp_path: Path) -> None:
    mod = tmp_path / "stage.py"
    mod.write_text("x = 1\n")
    _cache.code_version.cache_clear()
    v1 = _cache.code_version(str(mod))
    mod.write_text("x = 2\n")
    _cache.code_version.cache_clear()
    v2 = _cache.code_version(str(mod))
    _cache.code_version.cache_clear()
    assert v1 != v2 and v1 != _cache.code_version()


def test_was_cached_reads_prefect_state_names() -> None:
    from prefect.states import Completed

    assert _cache.was_cached(Completed(name="Cached"))
    assert not _cache.was_cached(Completed())
