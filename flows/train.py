"""The ``rpo-train`` flow: RPO training from exported inputs (URIs in, artifact URIs out).

Deployed on the ``gpu-h100`` work pool (prefect.yaml); the pipeline runs it as a subflow when
``training.dispatch`` is ``in-process``. It never opens the local DuckDB store.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
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


def worker_gpus(params: TrainFlowParams) -> int:
    """The processes to start on this machine: ``params.gpus``, else the work pool's ``ARR_GPUS`` job
    variable, else 1; refused (exit 2, naming where the number came from) when training on CUDA asks
    for more processes than this machine has visible devices. Checked on the worker, before a step."""
    from arr_core.errors import InputError
    from arr_core.recipes.preflight import check_device
    from arr_core.rpo.config import TrainConfig

    raw = params.gpus if params.gpus is not None else os.environ.get("ARR_GPUS", "1")
    field = "training.gpus" if params.gpus is not None else "ARR_GPUS (the work pool's job variable)"
    try:
        gpus = int(raw)
    except ValueError:
        raise InputError(f"must be a whole number of processes, got {raw!r}", field=field) from None
    if gpus < 1:
        raise InputError(f"must be at least 1, got {gpus}", field=field)
    cfg = TrainConfig.model_validate_json(Path(params.train_config_uri).read_text(encoding="utf-8"))
    try:
        check_device(cfg.policy.device, gpus, "training.config.policy.device")
    except InputError as e:
        if e.field != "gpus":
            raise
        raise InputError(f"{e.reason} on this worker ({socket.gethostname()}); lower it or run on a "
                         "machine with more GPUs", field=field) from None
    return gpus


# persist_result=False: a retried pipeline run re-enters this stage (see flows/pipeline.py).
@flow(name="rpo-train", persist_result=False)
def train_flow(params: TrainFlowParams) -> dict[str, Any]:
    """Returns the training summary: LoRA folder and MLflow artifact URI, metrics, steps, ``cached``."""
    apply_defaults()  # the entry point a worker runs: offline defaults (ARR_HOME's MLflow, results)
    gpus = worker_gpus(params)
    result, cached = run_task(run_rpo, params.train_key, params.train_config_uri, params.rubric_set_uri,
                              params.vlm, params.out_dir, params.experiment, params.parent_run_id, gpus)
    return {**result, "cached": cached}
