"""Wiring helpers shared by the flows: run a stage task, notice cache hits, link lineage.

The same flow body runs in one of three modes (a context variable, set by :func:`rerun_from_cache`):

- ``prefect`` (always, unless told otherwise): tasks are submitted to Prefect, which checks the cache.
- ``probe``: no Prefect, no MLflow: each cached task's key is computed with the task's own
  ``cache_key_fn`` and its persisted result read from the results folder; a missing one raises
  :class:`NotCached`. Uncached helper tasks (loading a dataset, exporting the training inputs) run as
  plain functions; lineage and preflight are skipped.
- ``replay``: the same, after a probe found every stage cached, with lineage and preflight run as
  plain functions: the MLflow parent run, one ``arr.cached=true`` child per stage, the store's
  records, as a Prefect run would have made them, without starting a Prefect API.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Iterator
from contextvars import ContextVar
from pathlib import Path
from typing import Any

from tasks._cache import was_cached
from tasks.lineage import link_stage

_MODE: ContextVar[dict[str, Any] | None] = ContextVar("arr_wiring_mode", default=None)
# Tasks that only check (no value a later stage needs): not run while probing, run once on replay.
_CHECKS = frozenset({"preflight"})


class NotCached(Exception):
    """A probed task has no persisted result for its key: the flow must run under Prefect."""


def in_prefect() -> bool:
    return _MODE.get() is None


def run_task(task_fn: Any, *args: Any, **kwargs: Any) -> tuple[Any, bool]:
    """Submit a task, wait for it, return (result, came_from_cache). A failure raises here, so the
    flow fails instead of finishing "Completed" around a failed task."""
    mode = _MODE.get()
    if mode is not None:
        return _from_cache(mode, task_fn, args, kwargs)
    fut = task_fn.submit(*args, **kwargs)
    result = fut.result()
    return result, was_cached(fut.state)


def call(task_fn: Any, *args: Any) -> Any:
    """Call a lineage task (MLflow runs, the store's records): a Prefect task run, or while probing
    nothing (``None``), or on replay the plain function."""
    mode = _MODE.get()
    if mode is None:
        return task_fn(*args)
    return None if mode["name"] == "probe" else task_fn.fn(*args)


def subflow(flow_fn: Any, *args: Any) -> Any:
    """A stage subflow: a Prefect flow run, or its plain body while probing or replaying."""
    return flow_fn(*args) if _MODE.get() is None else flow_fn.fn(*args)


def linked(result: dict[str, Any], cached: bool, parent_run_id: str | None, experiment: str,
           home: str, rubric_set_id: str | None = None) -> dict[str, Any]:
    """Attach the stage to the pipeline's MLflow run (see ``tasks.lineage.link_stage``)."""
    out = {**result, "cached": cached}
    if parent_run_id:
        out["pipeline_child_run_id"] = call(link_stage, result, cached, parent_run_id, experiment, home,
                                            rubric_set_id)
    return out


def _from_cache(mode: dict[str, Any], task_fn: Any, args: tuple[Any, ...],
                kwargs: dict[str, Any]) -> tuple[Any, bool]:
    from prefect.cache_policies import CacheKeyFnPolicy

    name = task_fn.name
    if not isinstance(task_fn.cache_policy, CacheKeyFnPolicy):
        if name in _CHECKS:
            return (None if mode["name"] == "probe" else task_fn.fn(*args, **kwargs)), False
        # An uncached helper (dataset load, training-input export): run once, its value reused on replay.
        n = mode["calls"][name] = mode["calls"].get(name, 0) + 1
        memo = mode["memo"]
        if (name, n) not in memo:
            memo[(name, n)] = task_fn.fn(*args, **kwargs)
        return memo[(name, n)], False
    if task_fn.refresh_cache or mode["refresh"]:
        raise NotCached(f"{name}: refresh_cache is set")
    bound = inspect.signature(task_fn.fn).bind(*args, **kwargs)
    bound.apply_defaults()
    key = task_fn.cache_policy.compute_key(task_ctx=_KeyContext(task_fn), inputs=dict(bound.arguments),
                                           flow_parameters={})
    store = mode["store"]
    if not key or not store.exists(key):
        raise NotCached(f"{name}: no persisted result for key {key}")
    return store.read(key).result, True


class _KeyContext:
    """What ``tasks._cache.keyed_by`` reads from Prefect's task-run context: the task."""

    def __init__(self, task: Any) -> None:
        self.task = task


@contextlib.contextmanager
def _mode(name: str, results: Path, memo: dict[Any, Any]) -> Iterator[None]:
    from prefect.filesystems import LocalFileSystem
    from prefect.results import ResultStore
    from prefect.settings import PREFECT_TASKS_REFRESH_CACHE

    # The results folder of run_pipeline's flow (a Path, as Prefect's flow resolves it): no API needed.
    store = ResultStore(result_storage=LocalFileSystem(basepath=str(results)))
    token = _MODE.set({"name": name, "store": store, "memo": memo, "calls": {},
                       "refresh": bool(PREFECT_TASKS_REFRESH_CACHE.value())})
    try:
        yield
    finally:
        _MODE.reset(token)


def rerun_from_cache(flow_fn: Any, *args: Any, results: Path, **kwargs: Any) -> Any | None:
    """Run ``flow_fn``'s body without Prefect when every stage it runs is a cache hit.

    First a probe (no MLflow, no lineage, no preflight): any stage without a persisted result, or
    any error, returns ``None`` and the caller runs the flow under Prefect as usual (which reports
    the error properly). Then the replay records the lineage and returns the flow's summary.
    """
    memo: dict[Any, Any] = {}
    try:
        with _mode("probe", results, memo):
            flow_fn.fn(*args, **kwargs)
    except Exception:  # NotCached, or a real error the Prefect run will report with its lineage
        return None
    with _mode("replay", results, memo):
        return flow_fn.fn(*args, **kwargs)
