"""The ``induce`` flow: generate → blind verify/refine → select → categorize → store (ARR)."""

from __future__ import annotations

from typing import Any

from prefect import flow
from pydantic import BaseModel, ConfigDict, Field

from arr_core.rubrics.config import InduceConfig
from flows._wiring import run_task
from tasks.induce import (
    categorize_criteria,
    generate_and_verify_pairs,
    prompt_version,
    select_criteria,
    store_rubric_set,
)


class InduceFlowParams(BaseModel):
    """Inputs of one induction over a registered dataset's seed pairs."""

    model_config = ConfigDict(extra="forbid")

    dataset: dict[str, Any] = Field(description="the data stage's summary (dataset_id, digest, pair_ids ...)")
    induce: InduceConfig = Field(default_factory=InduceConfig)
    parent_id: str | None = Field(None, description="rubric set whose per-pair results are reused")
    experiment: str = "arr-pipeline"
    parent_run_id: str | None = Field(None, description="pipeline MLflow run to attach the child run to")
    lineage_name: str | None = Field(None, description="the pipeline/re-induction config's name: scopes "
                                     "'parent: latest' to this lineage")
    home: str


# persist_result=False: a retried pipeline run re-enters this stage (see flows/pipeline.py).
@flow(name="induce", persist_result=False)
def induce_flow(params: InduceFlowParams) -> dict[str, Any]:
    """Returns the stored rubric set's summary (id, JSON/text URIs, statistics, MLflow run) plus
    ``cached`` and ``vlm_calls_this_run``."""
    ds, cfg, home = params.dataset, params.induce, params.home
    pv = prompt_version()
    gen, gen_cached = run_task(generate_and_verify_pairs, ds["dataset_id"], ds["digest"], ds["split_digest"],
                               ds["pair_ids"]["seed"], cfg, pv, home, params.parent_id)
    selected, _ = run_task(select_criteria, gen["pairs"], cfg.max_rubrics, cfg.selection_seed,
                           cfg.dedup_threshold, home)
    cats, cat_cached = run_task(categorize_criteria, selected, cfg.categories_number, cfg.generator,
                                cfg.retries, ds["task"], pv, home)
    stored, stored_cached = run_task(store_rubric_set, ds["task"], selected, cats, gen, cfg.parameters(),
                                     ds["digest"], ds, params.parent_id, cfg, params.experiment,
                                     params.parent_run_id, home, params.lineage_name)
    calls = (0 if gen_cached else gen["stats"].get("vlm_calls", 0)) + (0 if cat_cached else cats["vlm_calls"])
    return {**stored, "cached": stored_cached, "vlm_calls_this_run": calls}
