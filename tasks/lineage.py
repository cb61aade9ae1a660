"""Lineage tasks: the pipeline's parent MLflow run, a child run per stage, and the store's record of
which MLflow run produced (or reused) which entity.

A stage that executes creates its own child run (explicit ``parent_run_id``) while it works. A stage
whose result came from the cache did no work, so the pipeline adds a small child run for it that
says so (tag ``arr.cached=true``) and points at the run that did the work (``arr.source_run_id``),
carrying the same entity tags and summary metrics: every pipeline run then has one child per stage.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks import _mlflow as mlf
from tasks._artifacts import publish_stage
from tasks.common import home_path, open_store


@task(cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2)
def start_pipeline_run(experiment: str, run_name: str, params: dict[str, Any], config_digest: str,
                       home: str) -> str:
    """Create the parent run (params = flattened pipeline config without secrets); return its id.
    Runs that a killed process left RUNNING in the experiment are ended as KILLED first."""
    mlf.mark_orphaned_runs(experiment, home_path(home))
    run_id = mlf.start_run(experiment, run_name, home=home_path(home),
                           tags={"arr.kind": "pipeline", "arr.config_digest": config_digest})
    mlf.log_params(run_id, params)
    return run_id


@task(cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2)
def finish_pipeline_run(run_id: str, summary: dict[str, Any], status: str, home: str) -> None:
    """Summary metrics and entity tags on the parent run (what ``arr runs compare`` reads), the
    redacted summary as an artifact, then end it."""
    import json
    import tempfile

    data = summary.get("inputs") or {}
    if data.get("digest"):
        mlf.log_input(run_id, name=data.get("name") or "preference-pairs", digest=data["digest"],
                      source_uri=data.get("source_uri") or "", context="preference_pairs")
    mlf.log_metrics(run_id, summary.get("metrics", {}))
    mlf.set_tags(run_id, summary.get("tags", {}))
    with tempfile.TemporaryDirectory() as tmp:
        p = Path(tmp) / "pipeline_summary.json"
        p.write_text(json.dumps(summary, indent=2, default=str), encoding="utf-8")
        mlf.log_artifact(run_id, p)
    mlf.end_run(run_id, status)
    stages = summary.get("stages") or {}
    publish_stage("pipeline", f"pipeline {summary.get('name')}: {status}",
                  {"status": status, **summary.get("tags", {}), **summary.get("metrics", {})},
                  table=[{"stage": n, "cached": bool(s.get("cached")),
                          "entity": s.get("entity_id") or s.get("dataset_id"),
                          "mlflow run": s.get("pipeline_child_run_id") or s.get("mlflow_run_id")}
                         for n, s in stages.items()], mlflow_run_id=run_id)


@task(cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2)
def link_stage(result: dict[str, Any], cached: bool, parent_run_id: str, experiment: str,
               home: str, rubric_set_id: str | None = None) -> str:
    """Give this pipeline run a child run for the stage and record it in the store.

    ``result`` is the stage's small summary: ``stage``, ``entity_kind``, ``entity_id``,
    ``mlflow_run_id`` (the run that did the work), ``tags``, ``metrics``. With ``rubric_set_id`` the run
    is also recorded under that rubric set, so ``arr store lineage ID`` shows the whole chain (induce,
    judge, train, evaluate). Returns the run id that belongs to this pipeline run.
    """
    run_id = result["mlflow_run_id"]
    if cached:
        run_id = mlf.start_run(experiment, result["stage"], home=home_path(home),
                               parent_run_id=parent_run_id,
                               tags={**result.get("tags", {}), "arr.stage": result["stage"],
                                     "arr.cached": "true", "arr.source_run_id": result["mlflow_run_id"]})
        mlf.log_metrics(run_id, {**result.get("metrics", {}), "cached": 1, "vlm_calls_this_run": 0,
                                 "train_steps_this_run": 0})
        mlf.end_run(run_id)
        publish_stage(result["stage"], f"{result['stage']}: cached", {
            "entity": result["entity_id"], "cached": True, "run that did the work": result["mlflow_run_id"],
            **result.get("metrics", {})}, mlflow_run_id=run_id)
    store = open_store(home)
    store.record_mlflow_run(result["entity_kind"], result["entity_id"], result["stage"], run_id,
                            parent_run_id, experiment)
    if result["entity_kind"] == "training_run":
        # The training flow never opens the store (it may run on another machine); its parent does.
        store.put_training_run(result["entity_id"], rubric_set_id=rubric_set_id,
                               policy_id=result.get("policy_id"), config={"tags": result.get("tags", {})},
                               status="finished", lora_uri=result.get("lora_artifact_uri") or result.get("lora_uri"),
                               metrics=result.get("metrics", {}))
    if rubric_set_id and (result["entity_kind"], result["entity_id"]) != ("rubric_set", rubric_set_id):
        store.record_mlflow_run("rubric_set", rubric_set_id, result["stage"], run_id, parent_run_id, experiment)
    return run_id


@task(cache_policy=NO_CACHE)
def verify_outputs(result: dict[str, Any]) -> bool:
    """True when every local artifact a (possibly cached) stage result names still exists."""
    for uri in (result.get("artifacts") or {}).values():
        if isinstance(uri, str) and uri.startswith(("/", "file://")):
            path = Path(uri.removeprefix("file://"))
            if not path.exists():
                return False
    return True
