"""The whole DAG on tiny real components: caching, rerun after a failure, MLflow lineage, secrets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.flows.conftest import tiny_config

SECRET = "sk-test-DO-NOT-LOG-1234567890abcdef"
STAGES = ("induce", "judge", "train", "evaluate")


def _children(client, parent_run_id: str) -> dict:
    exp = client.get_run(parent_run_id).info.experiment_id
    runs = client.search_runs([exp], filter_string=f"tags.`mlflow.parentRunId` = '{parent_run_id}'")
    return {r.data.tags["arr.stage"]: r for r in runs}


def test_rerun_after_failure_then_everything_cached(prefect_api, home: Path, toy_policy_dir: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from arr_core.store.store import Store
    from flows.pipeline import run_pipeline
    from tasks._mlflow import client
    from tasks.common import FAIL_ENV

    cfg = tiny_config(toy_policy_dir)
    c = client()

    # 1. Training fails (test switch): the pipeline run fails, its MLflow parent run is FAILED.
    monkeypatch.setenv(FAIL_ENV, "train")
    with pytest.raises(Exception, match="failed on purpose"):
        run_pipeline(cfg, home)
    exp = c.get_experiment_by_name("arr-test")
    failed = c.search_runs([exp.experiment_id], filter_string="tags.`arr.kind` = 'pipeline'")
    assert [r.info.status for r in failed] == ["FAILED"]
    kids = _children(c, failed[0].info.run_id)
    assert set(kids) == {"induce", "judge", "train"} and kids["train"].info.status == "FAILED"

    # 2. Same config again: induce and judge are cache hits, training and evaluation run.
    monkeypatch.delenv(FAIL_ENV)
    rerun = run_pipeline(cfg, home)
    st = rerun["stages"]
    assert [n for n in STAGES if st[n]["cached"]] == ["induce", "judge"]
    assert rerun["metrics"]["train_steps_this_run"] == 2
    # Only the evaluation's win-rate judging talks to the VLM on this rerun.
    assert rerun["metrics"]["vlm_calls_this_run"] == st["evaluate"]["metrics"]["vlm_calls"]
    assert Path(st["train"]["lora_uri"]).joinpath("pytorch_lora_weights.safetensors").is_file()
    assert Path(st["evaluate"]["artifacts"]["report"]).is_file()

    # 3. Once more: every stage is a cache hit, 0 VLM calls and 0 training steps.
    cached = run_pipeline(cfg, home)
    st2 = cached["stages"]
    assert all(st2[n]["cached"] for n in STAGES)
    assert cached["metrics"]["vlm_calls_this_run"] == 0
    assert cached["metrics"]["train_steps_this_run"] == 0
    assert st2["induce"]["rubric_set_id"] == st["induce"]["rubric_set_id"]

    # MLflow: one parent per pipeline run, one child per stage with explicit parent link and tags.
    for summary, cached_stages in ((rerun, {"induce", "judge"}), (cached, set(STAGES))):
        kids = _children(c, summary["mlflow_run_id"])
        assert set(kids) == set(STAGES)
        for name, r in kids.items():
            assert r.data.tags.get("arr.cached", "false") == ("true" if name in cached_stages else "false")
        assert kids["induce"].data.tags["arr.dataset_digest"] == st["data"]["digest"]
        assert kids["train"].data.tags["arr.rubric_set_id"] == st["induce"]["rubric_set_id"]
        assert kids["train"].data.tags["arr.policy_id"].startswith("pol-")
        assert kids["train"].data.tags["arr.lora_uri"].endswith("/lora")
        parent = c.get_run(summary["mlflow_run_id"])
        assert parent.info.status == "FINISHED"
        assert parent.data.tags["arr.rubric_set_id"] == st["induce"]["rubric_set_id"]
        assert parent.data.tags["arr.prefect_flow_run_id"] and parent.data.tags["arr.git_commit"]
        assert parent.data.metrics["vlm_calls_this_run"] == summary["metrics"]["vlm_calls_this_run"]
    induce_run = c.get_run(st["induce"]["mlflow_run_id"])  # the run that did the work (in step 1)
    assert induce_run.data.params["max_rubrics"] == "8"
    assert induce_run.inputs.dataset_inputs[0].dataset.digest == st["data"]["digest"][:36]
    arts = [a.path for a in c.list_artifacts(induce_run.info.run_id, "rubric_set")]
    assert any(p.endswith(".json") for p in arts) and any(p.endswith(".txt") for p in arts)
    assert len(c.get_metric_history(st["train"]["mlflow_run_id"], "reward_mean")) == 2
    assert [a.path for a in c.list_artifacts(st["train"]["mlflow_run_id"])] == ["lora", "samples"]

    # The store records each stage's runs; `arr store lineage ID` shows them.
    chain = Store(home).lineage(st["induce"]["rubric_set_id"])
    lineage = json.dumps(chain, default=str)
    assert st["induce"]["mlflow_run_id"] in lineage and st2["induce"]["pipeline_child_run_id"] in lineage
    assert st["train"]["mlflow_run_id"] in lineage and st["evaluate"]["mlflow_run_id"] in lineage
    assert [r["status"] for r in chain[-1]["training_runs"]] == ["finished"]  # training_runs table
    assert [e["eval_id"] for e in chain[0]["evaluations"]] == [st["evaluate"]["entity_id"]]
    # The stored evaluation re-renders later with its sample images (`arr report ID`).
    from arr_core.bench.report import render_html
    from arr_core.bench.results import load_eval_row, report_from_row

    html = render_html(report_from_row(load_eval_row(Store(home), st["evaluate"]["entity_id"])))
    assert "image unavailable" not in html and html.count("data:image/png") >= 2


def test_config_or_prompt_version_change_misses_and_secrets_stay_out(prefect_api, home: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from prefect import get_client

    from arr_core.prompts import templates
    from flows.pipeline import run_pipeline
    from tasks._mlflow import client

    cfg = tiny_config(None, **{"vlm.api_key": SECRET})
    assert cfg.vlm.api_key.get_secret_value() == SECRET
    base = run_pipeline(cfg, home)
    assert not base["stages"]["induce"]["cached"]

    changed = run_pipeline(tiny_config(None, **{"vlm.api_key": SECRET, "induce.max_rubrics": 4}), home)
    ind = changed["stages"]["induce"]
    assert not ind["cached"] and ind["metrics"]["criteria_selected"] <= 4
    assert ind["rubric_set_id"] != base["stages"]["induce"]["rubric_set_id"]
    # Generation/verification does not depend on max_rubrics: no pair was asked again.
    assert ind["vlm_calls_this_run"] <= 1  # at most the categorize call

    monkeypatch.setattr(templates, "PROMPT_VERSION", templates.PROMPT_VERSION + "+test")
    bumped = run_pipeline(cfg, home)
    assert not bumped["stages"]["induce"]["cached"] and not bumped["stages"]["judge"]["cached"]

    # The API key is in no MLflow param, tag or artifact, no Prefect result and no flow-run parameter.
    c = client()
    runs = c.search_runs([c.get_experiment_by_name("arr-test").experiment_id])
    assert len(runs) >= 9
    assert SECRET not in json.dumps([{"p": r.data.params, "t": r.data.tags} for r in runs])
    leaked = [f for f in list((home / "mlflow").rglob("*")) + list((home / "prefect").rglob("*"))
              if f.is_file() and SECRET.encode() in f.read_bytes()]
    assert leaked == []
    with get_client(sync_client=True) as pc:
        flow_runs = pc.read_flow_runs()
    assert flow_runs and SECRET not in json.dumps([fr.parameters for fr in flow_runs], default=str)


@pytest.mark.slow
def test_dead_vlm_fails_the_pipeline_in_preflight_naming_the_endpoint(prefect_api, home: Path,
                                                                      toy_policy_dir: Path) -> None:
    """Issue 20: with the VLM dead the pipeline no longer finishes 'Completed' with zeros; it fails
    before any stage, naming the endpoint and the config field, and stores nothing."""
    from arr_core.errors import EndpointError
    from arr_core.store.store import Store
    from arr_core.vlm.server import free_port
    from flows.config import pipeline_config_from_dict
    from flows.pipeline import run_pipeline

    dead = f"http://127.0.0.1:{free_port()}/v1"
    raw = tiny_config(toy_policy_dir).model_dump(mode="json")
    raw["vlm"] = {"backend": "openai", "base_url": dead, "model": "qwen3-vl", "max_retries": 0}
    with pytest.raises(EndpointError, match=rf"{dead} \(vlm.base_url\) does not answer"):
        run_pipeline(pipeline_config_from_dict(raw), home)
    assert Store(home).list_rubric_sets() == [] and Store(home).list_datasets() == []
