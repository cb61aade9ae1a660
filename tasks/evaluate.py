"""Evaluation task: the base and the trained policy on held-out scene-world prompts (GenEval format,
win rate of trained vs base), the HTML report, the store's evaluation row and the ``evaluate`` child
run in MLflow.

The evaluation is composed in ``arr_core.recipes.evaluate`` (policy, checker, judge, sampling and
scoring); this task only loads its inputs, calls the recipe once and stores/logs what it returns.
Per-image results stay in the report, not in Prefect.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections import Counter
from pathlib import Path
from typing import Any

from prefect import task

from tasks import _mlflow as mlf
from tasks._artifacts import mlflow_run_url, publish_stage
from tasks._cache import keyed_by
from tasks.common import fail_point, home_path, open_store, retry_transient


@task(cache_key_fn=keyed_by("train_key", "eval_cfg", "rubric_set_id", "vlm", "prompt_version"),
      persist_result=True, result_serializer="json", retries=1, retry_delay_seconds=5,
      retry_condition_fn=retry_transient)
def evaluate_policy(train_key: str, train_summary: dict[str, Any], train_cfg: Any, eval_cfg: dict[str, Any],
                    rubric_set_id: str, rubric_set_json: str, vlm: Any, prompt_version: str, experiment: str,
                    parent_run_id: str | None, home: str) -> dict[str, Any]:
    """Base vs trained on held-out scene-world prompts; see the module docstring."""
    from arr_core.bench import run_report
    from arr_core.bench.report import write_html
    from arr_core.bench.results import save_eval_result
    from arr_core.recipes import evaluate as recipe
    from arr_core.rubrics.rubric_set import RubricSet

    fail_point("evaluate")
    rs = RubricSet.from_json(Path(rubric_set_json).read_text(encoding="utf-8"))
    win_rate = eval_cfg.get("win_rate", True)
    out = home_path(home) / "reports" / f"eval-{train_key[:20]}"
    policy_id = train_summary.get("policy_id")
    ev = recipe.run(train_cfg, eval_cfg, train_summary["lora_uri"], out, rubric_set=rs if win_rate else None, vlm=vlm,
                    run_key=train_key, rubric_set_id=rubric_set_id, policy_id=policy_id,
                    meta={"rubric_set_id": rubric_set_id, "policy_id": policy_id,
                          "lora_uri": train_summary.get("lora_artifact_uri")})
    metrics = ev.metrics
    gb, gt = ev.result.details["geneval"]["base"], ev.result.details["geneval"]["trained"]
    delta = run_report.paired_delta(gb.details["per_prompt"], gt.details["per_prompt"])
    metrics.update({"geneval.paired_delta": delta["point"], "geneval.paired_delta_lo": delta["lo"],
                    "geneval.paired_delta_hi": delta["hi"]})
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2), encoding="utf-8")
    report_path = out / "report.html"
    report_path.unlink(missing_ok=True)  # an earlier attempt's report must not pass for this one's

    tags = {"arr.rubric_set_id": rubric_set_id, "arr.policy_id": policy_id,
            "arr.lora_uri": train_summary.get("lora_artifact_uri"), "arr.train_key": train_key}
    with mlf.stage_run(experiment, "evaluate", home=home_path(home), parent_run_id=parent_run_id,
                       params={"evaluate": eval_cfg}, tags=tags) as run_id:
        if eval_cfg.get("report", True):
            # One report per pipeline run: the whole story, stored with the evaluation (`arr report ID`).
            links = {"MLflow pipeline run": mlflow_run_url(parent_run_id) if parent_run_id else None,
                     "MLflow evaluation run": mlflow_run_url(run_id),
                     "Prefect flow run": prefect_flow_run_url(),
                     "this report in MLflow": mlf.artifact_uri(run_id).rstrip("/") + "/evaluation/report.html",
                     "LoRA (registered model)": _model_ref(train_summary.get("registered_model"))}
            ev.result.report = run_report.pipeline_run_report(
                ev.report, data=_data_summary(home, rs), rubric_set=rs, judge=_judge_report(home, rs.id),
                training_rows=_jsonl((train_summary.get("artifacts") or {}).get("metrics")), delta=delta,
                checker_name=str(gb.config.get("checker", "checker")),
                scores=(metrics["geneval.base_image_mean"], metrics["geneval.trained_image_mean"]),
                gallery=run_report.gallery_pairs(ev.items, ev.base, ev.trained, gb.details["results"],
                                                 gt.details["results"],
                                                 ev.result.details["winrate"].details.get("judgments") or []),
                links=links, checkpoint_scores=ev.checkpoint_scores, base_score=metrics["geneval.base"])
            write_html(ev.report, report_path)
        mlf.log_metrics(run_id, metrics)
        mlf.log_metric_history(run_id, ev.checkpoint_metrics())  # held-out score by checkpoint step
        mlf.log_artifact(run_id, out / "metrics.json", "evaluation")
        if report_path.exists():
            mlf.log_artifact(run_id, report_path, "evaluation")
        if ev.samples_png is not None:
            mlf.log_artifact(run_id, ev.samples_png, "evaluation")
    # The store keeps the evaluation (``arr store lineage`` / ``arr report ID`` read it back).
    eval_id = save_eval_result(open_store(home), ev.result,
                               report_uri=str(report_path) if report_path.exists() else None)
    if report_path.exists():  # written above, so `links` is set
        # Prefect artifacts arr-report-summary (headline figures, where the report is) and -mlflow (link).
        publish_stage("report", "pipeline run report", {
            "report file": str(report_path),
            "GenEval-format Δ trained − base (paired, 95% CI)":
                f"{delta['point']:+.3f} [{delta['lo']:+.3f}, {delta['hi']:+.3f}]",
            "win rate judge": metrics.get("winrate.judge"), "win rate checker": metrics.get("winrate.checker"),
            **links}, mlflow_run_id=run_id)
    publish_stage("evaluate", f"evaluation {eval_id}", {**tags, **metrics}, mlflow_run_id=run_id)
    return {"stage": "evaluate", "entity_kind": "evaluation", "entity_id": eval_id,
            "mlflow_run_id": run_id, "tags": tags, "metrics": metrics,
            "artifacts": {"report": str(report_path), "samples": str(out / "samples.png")}}


def prefect_flow_run_url() -> str | None:
    """This flow run's page in the Prefect UI: the server's (``PREFECT_UI_URL``, or the API URL without
    ``/api``), else where ``arr ui`` serves it (127.0.0.1:4200)."""
    fid = mlf.prefect_flow_run_id()
    if not fid:
        return None
    base = os.environ.get("PREFECT_UI_URL") or os.environ.get("PREFECT_API_URL", "").removesuffix("/api")
    return f"{(base or 'http://127.0.0.1:4200').rstrip('/')}/runs/flow-run/{fid}"


def _model_ref(model: dict[str, Any] | None) -> str | None:
    return f"models:/{model['name']}/{model['version']} (alias @{model['alias']})" if model else None


def _jsonl(path: str | None) -> list[dict[str, Any]]:
    """The trainer's per-step metrics; a partly written last line is skipped."""
    if not path or not Path(path).is_file():
        return []
    rows = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        with contextlib.suppress(json.JSONDecodeError):
            rows.append(json.loads(line))
    return [r for r in rows if isinstance(r, dict)]


def _data_summary(home: str, rs: Any) -> dict[str, Any] | None:
    """The dataset the rubric set was induced from (by its digest), with pairs per split."""
    digest = rs.metadata.get("dataset_digest")
    if not digest:
        return None
    store = open_store(home)
    row = next((d for d in store.list_datasets() if d["dataset_id"] == f"ds-{digest}"), None)
    if row is None:
        return {"dataset digest": digest, "note": "not in this state folder's store"}
    splits = Counter(r["split"] for r in store.fetchall("pairs_by_dataset", [row["dataset_id"]]))
    return {"dataset": row["dataset_id"], "name": row["name"], "task": row["task"], "pairs": row["n_records"],
            **{f"{k} pairs": v for k, v in sorted(splits.items())}, "source": row["source_uri"],
            "induced by": rs.metadata.get("generator_model"), "verified by": rs.metadata.get("verifier_model")}


def _judge_report(home: str, rubric_set_id: str) -> dict[str, Any] | None:
    """The newest judge check of this rubric set (``reports/judge-<id>-*.json``), or None."""
    found = sorted((home_path(home) / "reports").glob(f"judge-{rubric_set_id}-*.json"),
                   key=lambda p: p.stat().st_mtime)
    return json.loads(found[-1].read_text(encoding="utf-8")) if found else None
