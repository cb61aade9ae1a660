"""Offline defaults for Prefect and MLflow, applied before either is imported.

Prefect's ephemeral server and MLflow's tracking client both read their settings from the
environment when first imported, so ``apply_defaults`` must run first: ``tasks/__init__.py`` calls
it on import, and the CLI calls it again with the chosen ``--home`` before it imports anything heavy.

Everything here only fills gaps (Prefect reads PREFECT_HOME once per process, so pick the state
folder before the first flow runs): a variable the user already set (``PREFECT_API_URL``,
``MLFLOW_TRACKING_URI``, ``PREFECT_HOME`` ...) always wins.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
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


# Variables this module set itself, with every value it has set: a later call for another state
# folder may move them, unless someone set them to a value of their own since (then the variable is
# theirs). Every value, not only the last: a test's monkeypatch (or a caller) that restores an earlier
# value of ours must not make it look like the user's, or later state folders would share it.
_OURS: dict[str, set[str]] = {}


def _default(key: str, value: str) -> None:
    if key not in os.environ or os.environ[key] in _OURS.get(key, set()):
        os.environ[key] = value
        _OURS.setdefault(key, set()).add(value)


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
            parent_bound_local_api().start()
        except Exception:  # the flow run starts it again and reports the error
            pass

    _LOCAL_API = threading.Thread(target=start, name="prefect-local-api", daemon=True)
    _LOCAL_API.start()


def wait_local_api() -> None:
    if _LOCAL_API is not None:
        _LOCAL_API.join()


# Run in the server's own interpreter in place of ``python -m uvicorn ...``: a thread that polls the
# parent pid and, once the parent is gone (its children are re-parented), stops the server (SIGTERM:
# uvicorn shuts down cleanly; SIGKILL-equivalent ``os._exit`` if that takes over 10 s); then uvicorn runs
# in-process with Prefect's own arguments (so its exit code 3, "port in use", still reaches Prefect).
# Not PR_SET_PDEATHSIG: Linux sends that signal when the *thread* that forked the child ends, and the
# server is started from a short-lived background thread (``start_local_api_early``).
_WATCH_PARENT = """
import os, runpy, signal, sys, threading, time
parent = int(sys.argv[1])
def watch():
    while os.getppid() == parent:
        time.sleep(0.25)
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(10)
    os._exit(1)
threading.Thread(target=watch, name="parent-watch", daemon=True).start()
sys.argv = sys.argv[3:]
runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
"""


class _ParentBoundPopen:
    """``subprocess`` as Prefect's server module sees it while it starts the server: ``Popen`` of
    ``[python, -m, MODULE, ...]`` becomes ``[python, -c, _WATCH_PARENT, PARENT_PID, -m, MODULE, ...]``;
    every other name is the real module's."""

    def __getattr__(self, name: str) -> object:
        return getattr(subprocess, name)

    @staticmethod
    def Popen(args: list[str], **kwargs: object) -> subprocess.Popen:  # noqa: N802 (subprocess's name)
        args = list(args)
        if len(args) >= 3 and args[0] == sys.executable and args[1] == "-m":
            args = [sys.executable, "-c", _WATCH_PARENT, str(os.getpid()), *args[1:]]
        return subprocess.Popen(args, **kwargs)  # type: ignore[call-overload]


def parent_bound_local_api() -> object:
    """Prefect's temporary local API server (its ``SubprocessASGIServer``, same port choice, health
    wait and ``stop``) whose process ends when this process ends, also on ``kill -9`` (within ~0.3 s
    plus uvicorn's shutdown), instead of living on (~230 MB).

    Registered as Prefect's port-less singleton (``SubprocessASGIServer._instances[None]``, as
    ``prefect.testing.utilities.prefect_test_harness`` does), so every ``SubprocessASGIServer()`` call
    of the flow engine, the event and log clients returns this one. A server already running the
    plain way is returned as it is.
    """
    from prefect.server.api.server import SubprocessASGIServer

    cls = _parent_bound_server_class()
    existing = SubprocessASGIServer._instances.get(None)
    if existing is not None and (isinstance(existing, cls) or existing.running):
        return existing
    SubprocessASGIServer._instances.pop(None, None)
    return cls()


@functools.cache
def _parent_bound_server_class() -> type:
    from prefect.server.api import server as prefect_server

    class ParentBoundServer(prefect_server.SubprocessASGIServer):
        def _run_uvicorn_command(self) -> subprocess.Popen:
            real = prefect_server.subprocess
            prefect_server.subprocess = _ParentBoundPopen()  # type: ignore[assignment]
            try:
                return super()._run_uvicorn_command()
            finally:
                prefect_server.subprocess = real

    return ParentBoundServer
