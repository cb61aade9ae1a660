"""Wiring helpers shared by the flows: run a stage task, notice cache hits, link lineage."""

from __future__ import annotations

from typing import Any

from tasks._cache import was_cached
from tasks.lineage import link_stage


def run_task(task_fn: Any, *args: Any, **kwargs: Any) -> tuple[Any, bool]:
    """Submit a task, wait for it, return (result, came_from_cache). A failure raises here, so the
    flow fails instead of finishing "Completed" around a failed task."""
    fut = task_fn.submit(*args, **kwargs)
    result = fut.result()
    return result, was_cached(fut.state)


def linked(result: dict[str, Any], cached: bool, parent_run_id: str | None, experiment: str,
           home: str, rubric_set_id: str | None = None) -> dict[str, Any]:
    """Attach the stage to the pipeline's MLflow run (see ``tasks.lineage.link_stage``)."""
    out = {**result, "cached": cached}
    if parent_run_id:
        out["pipeline_child_run_id"] = link_stage(result, cached, parent_run_id, experiment, home,
                                                     rubric_set_id)
    return out
