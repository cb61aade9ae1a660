"""The ``rpo-train`` flow: RPO training from exported inputs (URIs in, artifact URIs out).

Deployed on the ``gpu-h100`` work pool (prefect.yaml); the pipeline runs it as a subflow when
``training.dispatch`` is ``in-process``. It never opens the local DuckDB store.
"""

from __future__ import annotations

import os
from typing import Any

from prefect import flow
from pydantic import BaseModel, ConfigDict, Field

from flows._wiring import run_task
from tasks._env import apply_defaults
from tasks.train import run_rpo


class TrainFlowParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    train_key: str = Field(description="content key of this training (config, rubric set, policy, code)")
    train_config_uri: str = Field(description="TrainConfig as JSON")
    rubric_set_uri: str | None = Field(None, description="exported rubric set JSON (reward.kind judge)")
    vlm: dict[str, Any] = Field(default_factory=dict, description="VLMConfig without the key (from env)")
    out_dir: str
    experiment: str = "arr-pipeline"
    parent_run_id: str | None = None
    gpus: int | None = Field(None, ge=1, description=">1: one process per GPU under torchrun (DDP); None: "
                             "the work pool's ARR_GPUS job variable, else 1")


# persist_result=False: a retried pipeline run re-enters this stage (see flows/pipeline.py).
@flow(name="rpo-train", persist_result=False)
def train_flow(params: TrainFlowParams) -> dict[str, Any]:
    """Returns the training summary: LoRA folder and MLflow artifact URI, metrics, steps, ``cached``."""
    apply_defaults()  # the entry point a worker runs: offline defaults (ARR_HOME's MLflow, results)
    gpus = params.gpus or int(os.environ.get("ARR_GPUS", "1"))
    result, cached = run_task(run_rpo, params.train_key, params.train_config_uri, params.rubric_set_uri,
                              params.vlm, params.out_dir, params.experiment, params.parent_run_id, gpus)
    return {**result, "cached": cached}
