"""The ``rubric-reinduction`` flow (scheduled in prefect.yaml): re-induce rubrics on new data.

Reads the configured preference-data location, registers it, and induces on top of the newest
rubric set of the task (``parent: latest``): the parent's per-pair results are reused, only pairs it
has not seen are sent to the VLM, and a new version is made only when the selected criteria change
(otherwise the parent id comes back with ``unchanged: true``). With ``evaluate: true`` a new version
gets the judge check on the held-out pairs.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from prefect import flow

from arr_core.home import resolve_home
from flows._wiring import linked, run_task
from flows.config import ReinductionConfig, load_pipeline_config
from flows.induce import InduceFlowParams, induce_flow
from tasks._cache import redact
from tasks._env import apply_defaults, results_dir
from tasks.data import register_dataset
from tasks.induce import prompt_version, resolve_parent
from tasks.judge import judge_heldout
from tasks.lineage import finish_pipeline_run, start_pipeline_run


# Started by its cron deployment's worker the flow gets no with_options: default its results (the
# cache) to $ARR_HOME's, as run_reinduction does (see pipeline_flow).
@flow(name="rubric-reinduction", persist_result=True, result_storage=results_dir(resolve_home(create=False)))
def reinduction_flow(config: ReinductionConfig | None = None, config_path: str | None = None,
                     home: str | None = None) -> dict[str, Any]:
    """Give ``config`` or ``config_path`` (a YAML file, read on every scheduled run)."""
    if (config is None) == (config_path is None):
        raise ValueError("give exactly one of config or config_path")
    cfg = config if config is not None else load_pipeline_config(config_path, ReinductionConfig)
    t0 = time.perf_counter()
    home = str(apply_defaults(home))  # the entry point a worker runs: offline defaults here
    exp = cfg.mlflow.experiment
    parent_run = start_pipeline_run(exp, cfg.name, redact(cfg), "", home)
    stages: dict[str, Any] = {}
    status = "FAILED"
    try:
        if cfg.data.pairs is None:
            raise ValueError("rubric re-induction reads data.pairs (a file location); data.world is for demos")
        ds, _ = run_task(register_dataset, str(cfg.data.pairs), cfg.data.task, cfg.data.split_kw(), home,
                         cfg.data.max_seed_pairs, None,
                         str(cfg.data.root) if cfg.data.root else None, cfg.data.format,
                         cfg.data.allow_ties)
        stages["data"] = {k: v for k, v in ds.items() if k != "pair_ids"}
        parent_id, _ = run_task(resolve_parent, cfg.parent, ds["task"], home, cfg.name)
        ind = induce_flow(InduceFlowParams(dataset=ds, induce=cfg.induce, parent_id=parent_id, experiment=exp,
                                           parent_run_id=parent_run, lineage_name=cfg.name, home=home))
        stages["induce"] = linked(ind, ind["cached"], parent_run, exp, home)
        if cfg.evaluate and not ind["unchanged"]:
            jr, cached = run_task(judge_heldout, ds["dataset_id"], ds["digest"],
                                  ds["pair_ids"][cfg.judge.split][: cfg.judge.max_pairs], ind["rubric_set_id"],
                                  cfg.judge.model_dump(mode="json"), cfg.vlm, prompt_version(), exp,
                                  parent_run, home)
            stages["judge"] = linked(jr, cached, parent_run, exp, home)
        status = "FINISHED"
    finally:
        ind = stages.get("induce", {})
        summary = {"name": cfg.name, "home": home, "mlflow_run_id": parent_run, "stages": stages,
                   "parent_rubric_set_id": ind.get("tags", {}).get("arr.parent_rubric_set_id"),
                   "rubric_set_id": ind.get("rubric_set_id"), "unchanged": ind.get("unchanged"),
                   "inputs": stages.get("data"),
                   "metrics": {"wall_s": round(time.perf_counter() - t0, 3),
                               "vlm_calls_this_run": ind.get("vlm_calls_this_run", 0),
                               "new_pairs": ind.get("metrics", {}).get("new_pairs", 0)},
                   "tags": {"arr.kind": "reinduction", "arr.rubric_set_id": ind.get("rubric_set_id"),
                            "arr.dataset_digest": stages.get("data", {}).get("digest")}}
        finish_pipeline_run(parent_run, summary, status, home)
    return summary


def run_reinduction(config: ReinductionConfig, home: str | Path | None = None) -> dict[str, Any]:
    """Run the re-induction flow with its results (the cache) persisted under ``home`` (the cache
    must live with the store it describes)."""
    from flows.pipeline import local_run_settings

    h = resolve_home(home)
    with local_run_settings():
        return reinduction_flow.with_options(result_storage=results_dir(h), persist_result=True)(
            config, home=str(h))
