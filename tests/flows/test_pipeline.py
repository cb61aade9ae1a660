"""The whole DAG on tiny real components: caching, rerun after a failure, MLflow lineage, secrets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.flows.conftest import tiny_config

SECRET = "sk-test-DO-NOT-LOG-1234567890abcdef"


def _children(client, parent_run_id: str) -> list:
    exp = client.get_run(parent_run_id).info.experiment_id
    return client.search_runs([exp], filter_string=f"tags.`mlflow.parentRunId` = '{parent_run_id}'")


def test_full_pipeline_caches_and_links_lineage(prefect_api, home: Path, toy_policy_dir: Path) -> None:
    from arr_core.store.store import Store
    from flows.pipeline import run_pipeline
    from tasks._mlflow import client

    cfg = tiny_config(toy_policy_dir)
    first = run_pipeline(cfg, home)
    st = first["stages"]
    assert [n for n in ("induce", "judge", "train", "evaluate") if st[n]["cached"]] == []
    assert first["metrics"]["vlm_calls_this_run"] > 0
    assert first["metrics"]["train_steps_this_run"] == 2
    assert Path(st["train"]["lora_uri"]).joinpath("pytorch_lora_weights.safetensors").is_file()
    assert Path(st["evaluate"]["artifacts"]["report"]).is_file()

    second = run_pipeline(cfg, home)
    st2 = second["stages"]
    assert all(st2[n]["cached"] for n in ("induce", "judge", "train", "evaluate"))
    assert second["metrics"]["vlm_calls_this_run"] == 0
    assert second["metrics"]["train_steps_this_run"] == 0
    assert st2["induce"]["rubric_set_id"] == st["induce"]["rubric_set_id"]

    # MLflow: one parent per pipeline run, one child per stage with explicit parent link and tags.
    c = client()
    for summary, cached in ((first, False), (second, True)):
        kids = {r.data.tags["arr.stage"]: r for r in _children(c, summary["mlflow_run_id"])}
        assert set(kids) == {"induce", "judge", "train", "evaluate"}
        for r in kids.values():
            assert r.data.tags.get("arr.cached", "false") == ("true" if cached else "false")
        assert kids["induce"].data.tags["arr.dataset_digest"] == st["data"]["digest"]
        assert kids["train"].data.tags["arr.rubric_set_id"] == st["induce"]["rubric_set_id"]
        assert kids["train"].data.tags["arr.policy_id"].startswith("pol-")
        assert kids["train"].data.tags["arr.lora_uri"].endswith("/lora")
        parent = c.get_run(summary["mlflow_run_id"])
        assert parent.data.tags["arr.rubric_set_id"] == st["induce"]["rubric_set_id"]
        assert parent.data.tags["arr.prefect_flow_run_id"]
        assert parent.data.tags["arr.git_commit"]
        assert parent.info.status == "FINISHED"
    fresh_induce = {r.data.tags["arr.stage"]: r for r in _children(c, first["mlflow_run_id"])}["induce"]
    assert fresh_induce.data.params["max_rubrics"] == "8"
    assert fresh_induce.inputs.dataset_inputs[0].dataset.digest == st["data"]["digest"][:36]
    arts = [a.path for a in c.list_artifacts(fresh_induce.info.run_id, "rubric_set")]
    assert any(p.endswith(".json") for p in arts) and any(p.endswith(".txt") for p in arts)
    train_hist = c.get_metric_history(st["train"]["mlflow_run_id"], "reward_mean")
    assert len(train_hist) == 2

    # The store knows every stage's runs; `arr store lineage` reads them.
    lineage = Store(home).lineage(st["induce"]["rubric_set_id"])
    runs = json.dumps(lineage, default=str)
    assert st["induce"]["mlflow_run_id"] in runs and st2["induce"]["pipeline_child_run_id"] in runs


def test_changed_config_or_prompt_version_misses(prefect_api, home: Path, monkeypatch) -> None:
    from arr_core.prompts import templates
    from flows.pipeline import run_pipeline

    base = run_pipeline(tiny_config(None), home)
    changed = run_pipeline(tiny_config(None, **{"induce.max_rubrics": 4}), home)
    # Selection and everything after it re-run; generation/verification (its key lacks max_rubrics)
    # is a cache hit, so no pair is asked again.
    assert not changed["stages"]["induce"]["cached"]
    assert changed["stages"]["induce"]["metrics"]["criteria_selected"] <= 4
    assert changed["stages"]["induce"]["rubric_set_id"] != base["stages"]["induce"]["rubric_set_id"]

    monkeypatch.setattr(templates, "PROMPT_VERSION", templates.PROMPT_VERSION + "+test")
    bumped = run_pipeline(tiny_config(None), home)
    assert not bumped["stages"]["induce"]["cached"]
    assert not bumped["stages"]["judge"]["cached"]


def test_rerun_after_failure_runs_only_the_failed_stage_and_later(prefect_api, home: Path, toy_policy_dir: Path,
                                                                monkeypatch) -> None:
    from flows.pipeline import run_pipeline
    from tasks._mlflow import client
    from tasks.common import FAIL_ENV

    cfg = tiny_config(toy_policy_dir)
    monkeypatch.setenv(FAIL_ENV, "train")
    with pytest.raises(Exception, match="failed on purpose"):
        run_pipeline(cfg, home)
    c = client()
    exp = c.get_experiment_by_name("arr-test")
    failed = c.search_runs([exp.experiment_id], filter_string="tags.`arr.kind` = 'pipeline'")
    assert [r.info.status for r in failed] == ["FAILED"]

    monkeypatch.delenv(FAIL_ENV)
    again = run_pipeline(cfg, home)
    st = again["stages"]
    assert st["induce"]["cached"] and st["judge"]["cached"]
    assert not st["train"]["cached"] and not st["evaluate"]["cached"]
    assert again["metrics"]["train_steps_this_run"] == 2
    # Only the evaluation's win-rate judging talks to the VLM on the rerun.
    assert again["metrics"]["vlm_calls_this_run"] == st["evaluate"]["metrics"].get("vlm_calls", 0)


def test_secrets_never_reach_mlflow_or_prefect(prefect_api, home: Path) -> None:
    from prefect import get_client

    from flows.pipeline import run_pipeline
    from tasks._mlflow import client

    cfg = tiny_config(None, **{"vlm.api_key": SECRET, "judge.enabled": True})
    assert cfg.vlm.api_key.get_secret_value() == SECRET
    summary = run_pipeline(cfg, home)
    c = client()
    exp = c.get_experiment_by_name("arr-test")
    for r in c.search_runs([exp.experiment_id]):
        blob = json.dumps({"params": r.data.params, "tags": r.data.tags})
        assert SECRET not in blob
    for f in (home / "mlflow").rglob("*"):
        if f.is_file() and f.suffix != ".db":
            assert SECRET.encode() not in f.read_bytes(), f
    assert SECRET.encode() not in (home / "mlflow" / "mlflow.db").read_bytes()
    for f in (home / "prefect").rglob("*"):
        if f.is_file():
            assert SECRET.encode() not in f.read_bytes(), f
    with get_client(sync_client=True) as pc:
        flow_runs = pc.read_flow_runs()
    assert flow_runs and SECRET not in json.dumps([fr.parameters for fr in flow_runs], default=str)
    assert summary["stages"]["judge"]["metrics"]["rubrics.n"] > 0
