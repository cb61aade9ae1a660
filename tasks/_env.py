"""Offline defaults for Prefect and MLflow, applied before either is imported.

Prefect's ephemeral server and MLflow's tracking client both read their settings from the
environment when first imported, so ``apply_defaults`` must run first: ``tasks/__init__.py`` calls
it on import, and the CLI calls it again with the chosen ``--home`` before it imports anything heavy.

Everything here only fills gaps (Prefect reads PREFECT_HOME once per process, so pick the state
folder before the first flow runs): a variable the user already set (``PREFECT_API_URL``,
``MLFLOW_TRACKING_URI``, ``PREFECT_HOME`` ...) always wins.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from arr_core.home import resolve_home

# Quiet and robust offline: no analytics, no telemetry, and a start-up timeout that a fresh
# PREFECT_HOME on a busy 2-core machine does not hit (the default 20 s sometimes is).
_QUIET = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
    "DO_NOT_TRACK": "true",  # the string "true": MLflow ignores "1"
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "HF_HUB_OFFLINE": "1",
    "PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW": "ignore",
}


def prefect_home(home: Path) -> Path:
    return home / "prefect"


def results_dir(home: Path) -> Path:
    """Where Prefect persists task results (the cache): a ``Path``, never a string (a string is read
    as a storage block name)."""
    return home / "prefect" / "results"


def mlflow_dir(home: Path) -> Path:
    return home / "mlflow"


def default_tracking_uri(home: Path) -> str:
    return f"sqlite:///{(mlflow_dir(home) / 'mlflow.db').as_posix()}"


# Variables this module set itself (not the user): a later call for another state folder may move them.
_OURS: set[str] = set()


def _default(key: str, value: str) -> None:
    if key not in os.environ or key in _OURS:
        os.environ[key] = value
        _OURS.add(key)


def apply_defaults(home: str | os.PathLike[str] | None = None) -> Path:
    """Fill offline defaults into ``os.environ`` and return the resolved state folder.

    Sets ``ARR_HOME`` to the resolved folder (so worker subprocesses and tasks agree), then, only
    where unset: analytics/telemetry off, the ephemeral-server start-up timeout, ``PREFECT_HOME``
    under the state folder, and an SQLite MLflow tracking URI under the state folder.
    """
    resolved = resolve_home(home)
    os.environ["ARR_HOME"] = str(resolved)
    for key, value in _QUIET.items():
        os.environ.setdefault(key, value)
    if "PREFECT_API_URL" not in os.environ:
        # Only the ephemeral server keeps its database under PREFECT_HOME; a user's server is theirs.
        _default("PREFECT_HOME", str(prefect_home(resolved)))
    # Task results (the cache) under the state folder, also for flows started by a worker.
    _default("PREFECT_RESULTS_LOCAL_STORAGE_PATH", str(results_dir(resolved)))
    _default("MLFLOW_TRACKING_URI", default_tracking_uri(resolved))
    mlflow_dir(resolved).mkdir(parents=True, exist_ok=True)
    return resolved


_LOCAL_API: threading.Thread | None = None


def start_local_api_early() -> None:
    """Start Prefect's temporary local API server (a subprocess) in a background thread, so its
    start-up overlaps with the imports and MLflow set-up that come before the first flow run.

    Only without ``PREFECT_API_URL``. Prefect keeps one such server per process (a singleton), so the
    flow run reuses this one; call :func:`wait_local_api` before the first flow run (a run that found
    the server marked as starting but not yet healthy would fail its first requests).
    """
    global _LOCAL_API
    if os.environ.get("PREFECT_API_URL") or _LOCAL_API is not None:
        return

    def start() -> None:
        try:
            from prefect.server.api.server import SubprocessASGIServer

            SubprocessASGIServer().start()
        except Exception:  # the flow run starts it again and reports the error
            pass

    _LOCAL_API = threading.Thread(target=start, name="prefect-local-api", daemon=True)
    _LOCAL_API.start()


def wait_local_api() -> None:
    if _LOCAL_API is not None:
        _LOCAL_API.join()
