"""Judge check task: how well the rubric-conditioned judge agrees with people on held-out pairs.

One batched call per condition (with rubrics, and the no-rubric baseline); judgments go to the store
(``judgments`` table, per pair), the task returns accuracies and writes a JSON judge report that is
logged as an MLflow artifact of the ``judge`` child run.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from prefect import task

from tasks import _mlflow as mlf
from tasks._artifacts import publish_stage
from tasks._cache import keyed_by
from tasks.common import fail_point, home_path, open_store, retry_transient


@task(cache_key_fn=keyed_by("dataset_digest", "pair_ids", "rubric_set_id", "judge_cfg", "vlm",
                            "prompt_version"),
      persist_result=True, result_serializer="json", retries=2, retry_delay_seconds=5,
      retry_condition_fn=retry_transient)
def judge_heldout(dataset_id: str, dataset_digest: str, pair_ids: list[str], rubric_set_id: str,
                  judge_cfg: dict[str, Any], vlm: Any, prompt_version: str, experiment: str,
                  parent_run_id: str | None, home: str) -> dict[str, Any]:
    """Judge ``pair_ids`` of the dataset with the rubric set (and without, when asked) and summarise
    accuracy with bootstrap intervals, tie/abstain rates and the forward/reversed order gap."""
    from arr_core.failures import check_judgments
    from arr_core.judge.judge import judge_many
    from arr_core.judge.metrics import accuracy_summary, order_summary
    from arr_core.vlm.config import build_client

    fail_point("judge")
    store = open_store(home)
    wanted = set(pair_ids)
    records = [r for r in store.get_dataset_records(dataset_id) if r.pair_id in wanted]
    records.sort(key=lambda r: r.pair_id)
    if not records:
        raise ValueError(f"no held-out pairs to judge in dataset {dataset_id} (split "
                         f"'{judge_cfg['split']}' is empty): lower data.seed_fraction or disable judge")
    rs = store.get_rubric_set(rubric_set_id)
    client = build_client(vlm, store)
    order = judge_cfg["order"]
    t0 = time.perf_counter()
    conditions: dict[str, Any] = {"rubrics": (rs.prompt_block(), rs.id)}
    if judge_cfg.get("compare_no_rubrics", True):
        conditions["no_rubrics"] = (None, None)
    report: dict[str, Any] = {"rubric_set_id": rs.id, "dataset_digest": dataset_digest,
                              "order": order, "n_pairs": len(records), "conditions": {}}
    if judge_cfg.get("protocol", "check") == "paper":  # the paper's protocol instead of the check's loop
        from arr_core.bench.report import write_html
        from arr_core.bench.results import save_eval_result
        from arr_core.recipes.evaluate import judge_paper

        conditions = {}
        res, report["conditions"] = judge_paper(client, records, rs, zeroshot_ks=judge_cfg.get("zeroshot_ks") or [],
                                                seed=int(judge_cfg.get("seed", 0)), simulated=vlm.backend == "scene")
        html = home_path(home) / "reports" / f"judge-paper-{rs.id}-{dataset_digest[:12]}.html"
        write_html(res.report, html)
        report.update(protocol="paper", order="single", eval_id=save_eval_result(store, res, str(html)),
                      html_report=str(html))
    for name, (block, rid) in conditions.items():
        js = asyncio.run(judge_many(client, records, rubric_block=block, rubric_set_id=rid, order=order,
                                    store=store))
        # Any transport failure fails the stage (so nothing partial is cached); the retry is cheap.
        check_judgments(js, client, f"judge ({name})", max_failure_rate=0.0)
        summary = accuracy_summary(js, records)
        if order == "swap":
            summary.update(order_summary(js, records))
        report["conditions"][name] = summary
    stats = client.stats()
    report["vlm"] = {k: stats.get(k, 0) for k in ("requests", "calls", "cache_hits", "prompt_tokens",
                                                  "completion_tokens")}
    report["wall_s"] = round(time.perf_counter() - t0, 3)

    out = home_path(home) / "reports" / f"judge-{rs.id}-{dataset_digest[:12]}-{order}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, default=str), encoding="utf-8")
    metrics: dict[str, Any] = {}
    for name, s in report["conditions"].items():
        for k, v in s.items():
            if isinstance(v, (int, float)):
                metrics[f"{name}.{k}"] = v
    metrics.update(vlm_calls=int(stats.get("calls", 0)), vlm_requests=int(stats.get("requests", 0)),
                   prompt_tokens=int(stats.get("prompt_tokens", 0)),
                   completion_tokens=int(stats.get("completion_tokens", 0)), wall_s=report["wall_s"])
    tags = {"arr.dataset_digest": dataset_digest, "arr.rubric_set_id": rs.id,
            "arr.judge_model": f"{stats.get('backend', '')}:{stats.get('model', '')}", "arr.order": order}
    with mlf.stage_run(experiment, "judge", home=home_path(home), parent_run_id=parent_run_id,
                       params={"judge": judge_cfg, "vlm": vlm}, tags=tags) as run_id:
        mlf.log_input(run_id, name="heldout-pairs", digest=dataset_digest, source_uri=dataset_id,
                      context="evaluation")
        mlf.log_metrics(run_id, metrics)
        mlf.log_artifact(run_id, out, "judge_report")
        if report.get("html_report"):
            mlf.log_artifact(run_id, report["html_report"], "judge_report")
    publish_stage("judge", f"judge check of {rs.id}",
                  {**tags, "pairs": len(records), "vlm calls": metrics["vlm_calls"]},
                  table=[{"condition": n, **{k: v for k, v in s.items() if isinstance(v, (int, float))}}
                         for n, s in report["conditions"].items()], mlflow_run_id=run_id)
    return {"stage": "judge", "entity_kind": "rubric_set", "entity_id": rs.id, "mlflow_run_id": run_id,
            "tags": tags, "metrics": metrics, "artifacts": {"judge_report": str(out)}}
