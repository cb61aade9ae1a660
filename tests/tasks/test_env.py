"""Offline defaults fill gaps only: the user's PREFECT_API_URL / MLFLOW_TRACKING_URI always win."""

from __future__ import annotations

from pathlib import Path

import pytest

from tasks import _env
from tasks.common import FAIL_ENV, InjectedFailure, fail_point


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for k in ("MLFLOW_TRACKING_URI", "PREFECT_API_URL", "PREFECT_HOME", "PREFECT_RESULTS_LOCAL_STORAGE_PATH",
              "PREFECT_SERVER_ANALYTICS_ENABLED", "DO_NOT_TRACK", "MLFLOW_DISABLE_TELEMETRY"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setattr(_env, "_OURS", {})
    return monkeypatch


def test_defaults_point_under_the_state_folder(tmp_path: Path, clean_env: pytest.MonkeyPatch) -> None:
    import os

    home = _env.apply_defaults(tmp_path / "h1")
    assert os.environ["ARR_HOME"] == str(home)
    assert os.environ["MLFLOW_TRACKING_URI"] == f"sqlite:///{home}/mlflow/mlflow.db"
    assert os.environ["PREFECT_HOME"] == str(home / "prefect")
    assert os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] == "false"
    assert os.environ["DO_NOT_TRACK"] == "true" and os.environ["MLFLOW_DISABLE_TELEMETRY"] == "true"
    assert os.environ["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"]
    # Our own defaults follow a new state folder ...
    home2 = _env.apply_defaults(tmp_path / "h2")
    assert os.environ["MLFLOW_TRACKING_URI"] == f"sqlite:///{home2}/mlflow/mlflow.db"


def test_user_settings_win(tmp_path: Path, clean_env: pytest.MonkeyPatch) -> None:
    import os

    clean_env.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    clean_env.setenv("PREFECT_API_URL", "http://127.0.0.1:4200/api")
    _env.apply_defaults(tmp_path / "h")
    assert os.environ["MLFLOW_TRACKING_URI"] == "http://127.0.0.1:5000"
    assert "PREFECT_HOME" not in os.environ  # the user's server keeps its own database


def test_a_variable_set_after_ours_is_no_longer_ours(tmp_path: Path, clean_env: pytest.MonkeyPatch) -> None:
    import os

    _env.apply_defaults(tmp_path / "h1")
    clean_env.setenv("MLFLOW_TRACKING_URI", "sqlite:///elsewhere.db")  # e.g. a test fixture, after us
    _env.apply_defaults(tmp_path / "h2")
    assert os.environ["MLFLOW_TRACKING_URI"] == "sqlite:///elsewhere.db"


def test_an_earlier_value_of_ours_restored_is_still_ours(tmp_path: Path, clean_env: pytest.MonkeyPatch) -> None:
    """A test that deletes the variable, lets apply_defaults set it for its own folder, and has
    monkeypatch restore our earlier value afterwards: the restored value is still ours, so the next
    state folder gets its own tracking database (the slow tier's pipeline tests shared one before)."""
    import os

    _env.apply_defaults(tmp_path / "h1")
    first = os.environ["MLFLOW_TRACKING_URI"]
    _env.apply_defaults(tmp_path / "h2")  # e.g. inside a test with the variable deleted beforehand
    clean_env.setenv("MLFLOW_TRACKING_URI", first)  # monkeypatch's restore
    _env.apply_defaults(tmp_path / "h3")
    assert os.environ["MLFLOW_TRACKING_URI"] == _env.default_tracking_uri(tmp_path / "h3")


def test_fail_point_is_a_test_switch(monkeypatch: pytest.MonkeyPatch) -> None:
    fail_point("train")
    monkeypatch.setenv(FAIL_ENV, "judge, train")
    with pytest.raises(InjectedFailure, match="stage 'train' failed on purpose"):
        fail_point("train")
    fail_point("induce")


def test_parent_bound_local_api_is_prefects_singleton() -> None:
    """Every ``SubprocessASGIServer()`` of the flow engine gets the server that dies with its parent
    (started nowhere here: ``tests/reliability/test_kill9.py`` kills real processes)."""
    from prefect.server.api.server import SubprocessASGIServer

    saved = SubprocessASGIServer._instances.pop(None, None)
    try:
        bound = _env.parent_bound_local_api()
        assert type(bound) is not SubprocessASGIServer and isinstance(bound, SubprocessASGIServer)
        assert SubprocessASGIServer() is bound and _env.parent_bound_local_api() is bound
        assert not bound.running
    finally:
        SubprocessASGIServer._instances.pop(None, None)
        if saved is not None:
            SubprocessASGIServer._instances[None] = saved


def test_prefect_retries_only_transient_errors() -> None:
    """`retry_condition_fn` of the pipeline tasks: endpoint failures, store locks, dropped connections
    and timeouts are retried; bad input, missing files and the test switch fail at once."""
    from prefect.states import Failed

    from arr_core.errors import EndpointError, InputError, StoreLockedError
    from tasks.common import retry_transient

    for exc, retried in ((EndpointError("x"), True), (StoreLockedError("x"), True), (ConnectionResetError(), True),
                         (TimeoutError(), True), (InputError("x"), False), (FileNotFoundError("x"), False),
                         (ValueError("x"), False), (InjectedFailure("x"), False)):
        assert retry_transient(None, None, Failed(data=exc)) is retried, exc
