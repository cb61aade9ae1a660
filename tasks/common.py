"""Small pieces every task uses: the state folder, the store, the test-only failure switch."""

from __future__ import annotations

import os
from pathlib import Path

from arr_core.home import resolve_home

# Test switch: ARR_FAIL_STAGE=train (comma-separated stage names) makes those stages raise, so the
# rerun-after-failure path can be exercised without breaking real code.
FAIL_ENV = "ARR_FAIL_STAGE"


class InjectedFailure(RuntimeError):
    """Raised by :func:`fail_point` when the test switch names the stage."""


def fail_point(stage: str) -> None:
    wanted = {s.strip() for s in os.environ.get(FAIL_ENV, "").split(",") if s.strip()}
    if stage in wanted:
        raise InjectedFailure(f"stage '{stage}' failed on purpose ({FAIL_ENV}={os.environ[FAIL_ENV]})")


def home_path(home: str | Path | None) -> Path:
    return resolve_home(home)


def open_store(home: str | Path | None):  # -> arr_core.store.store.Store
    from arr_core.store.store import Store

    return Store(resolve_home(home))


def is_transient(exc: BaseException) -> bool:
    """Errors a retry can fix: an endpoint that failed (it may answer again), a store locked by another
    writer, a dropped connection or a timeout. Bad input, missing files and bugs fail at once."""
    from arr_core.errors import EndpointError, InputError, StoreLockedError

    if isinstance(exc, (InputError, FileNotFoundError, PermissionError, InjectedFailure)):
        return False
    return isinstance(exc, (EndpointError, StoreLockedError, ConnectionError, TimeoutError))


def retry_transient(task: object, task_run: object, state: object) -> bool:
    """Prefect ``retry_condition_fn``: retry a failed task run only for a transient error."""
    data = getattr(state, "data", None)
    if not isinstance(data, BaseException):
        try:
            data = state.result(raise_on_failure=False)  # type: ignore[attr-defined]
        except Exception:
            return False
    return isinstance(data, BaseException) and is_transient(data)
