"""Evaluation task: the base and the trained policy on held-out scene-world prompts (GenEval format,
win rate of trained vs base), the HTML report, the store's evaluation row and the ``evaluate`` child
run in MLflow.

The evaluation is composed in ``arr_core.recipes.evaluate`` (policy, checker, judge, sampling and
scoring); this task only loads its inputs, calls the recipe once and stores/logs what it returns.
Per-image results stay in the report, not in Prefect.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from prefect import task

from tasks import _mlflow as mlf
from tasks._cache import keyed_by
from tasks.common import fail_point, home_path, open_store, retry_transient


@task(cache_key_fn=keyed_by("train_key", "eval_cfg", "rubric_set_id", "vlm", "prompt_version"),
      persist_result=True, result_serializer="json", retries=1, retry_delay_seconds=5,
      retry_condition_fn=retry_transient)
def evaluate_policy(train_key: str, train_summary: dict[str, Any], train_cfg: Any, eval_cfg: dict[str, Any],
                    rubric_set_id: str, rubric_set_json: str, vlm: Any, prompt_version: str, experiment: str,
                    parent_run_id: str | None, home: str) -> dict[str, Any]:
    """Base vs trained on held-out scene-world prompts; see the module docstring."""
    from arr_core.bench.report import write_html
    from arr_core.bench.results import save_eval_result
    from arr_core.recipes import evaluate as recipe
    from arr_core.rubrics.rubric_set import RubricSet

    fail_point("evaluate")
    rs = (RubricSet.from_json(Path(rubric_set_json).read_text(encoding="utf-8"))
          if eval_cfg.get("win_rate", True) else None)
    out = home_path(home) / "reports" / f"eval-{train_key[:20]}"
    policy_id = train_summary.get("policy_id")
    ev = recipe.run(train_cfg, eval_cfg, train_summary["lora_uri"], out, rubric_set=rs, vlm=vlm, run_key=train_key,
                    rubric_set_id=rubric_set_id, policy_id=policy_id,
                    meta={"rubric_set_id": rubric_set_id, "policy_id": policy_id,
                          "lora_uri": train_summary.get("lora_artifact_uri")})
    metrics = ev.metrics
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2), encoding="utf-8")
    report_path = out / "report.html"
    if eval_cfg.get("report", True):
        write_html(ev.report, report_path)
    # The store keeps the evaluation (``arr store lineage`` / ``arr report ID`` read it back).
    eval_id = save_eval_result(open_store(home), ev.result,
                               report_uri=str(report_path) if report_path.exists() else None)

    tags = {"arr.rubric_set_id": rubric_set_id, "arr.policy_id": policy_id,
            "arr.lora_uri": train_summary.get("lora_artifact_uri"), "arr.train_key": train_key}
    with mlf.stage_run(experiment, "evaluate", home=home_path(home), parent_run_id=parent_run_id,
                       params={"evaluate": eval_cfg}, tags=tags) as run_id:
        mlf.log_metrics(run_id, metrics)
        mlf.log_artifact(run_id, out / "metrics.json", "evaluation")
        if report_path.exists():
            mlf.log_artifact(run_id, report_path, "evaluation")
        if ev.samples_png is not None:
            mlf.log_artifact(run_id, ev.samples_png, "evaluation")
    return {"stage": "evaluate", "entity_kind": "evaluation", "entity_id": eval_id,
            "mlflow_run_id": run_id, "tags": tags, "metrics": metrics,
            "artifacts": {"report": str(report_path), "samples": str(out / "samples.png")}}
