"""The ``evaluate`` flow: benchmarks of a trained policy against its base (and the HTML report)."""

from __future__ import annotations

from typing import Any

from prefect import flow
from pydantic import BaseModel, ConfigDict

from arr_core.rpo.config import TrainConfig
from arr_core.vlm.config import VLMConfig
from flows._wiring import run_task
from flows.config import EvaluateStage
from tasks.evaluate import evaluate_policy
from tasks.induce import prompt_version


class EvaluateFlowParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    train: dict[str, Any]  # the training summary (train key, LoRA URI, policy id)
    train_config: TrainConfig
    evaluate: EvaluateStage = EvaluateStage()
    rubric_set_id: str
    rubric_set_json: str
    vlm: VLMConfig = VLMConfig()
    experiment: str = "arr-pipeline"
    parent_run_id: str | None = None
    home: str


# persist_result=False: a retried pipeline run re-enters this stage (see flows/pipeline.py).
@flow(name="evaluate", persist_result=False)
def evaluate_flow(params: EvaluateFlowParams) -> dict[str, Any]:
    result, cached = run_task(evaluate_policy, params.train["entity_id"], params.train, params.train_config,
                              params.evaluate.model_dump(mode="json"), params.rubric_set_id,
                              params.rubric_set_json, params.vlm, prompt_version(), params.experiment,
                              params.parent_run_id, params.home)
    return {**result, "cached": cached}
