"""The whole DAG on tiny real components: caching, rerun after a failure, MLflow lineage, secrets."""

from __future__ import annotations

import contextlib
import json
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.flows.conftest import tiny_config

SECRET = "sk-test-DO-NOT-LOG-1234567890abcdef"
STAGES = ("induce", "judge", "train", "evaluate")


def _children(client, parent_run_id: str) -> dict:
    exp = client.get_run(parent_run_id).info.experiment_id
    runs = client.search_runs([exp], filter_string=f"tags.`mlflow.parentRunId` = '{parent_run_id}'")
    return {r.data.tags["arr.stage"]: r for r in runs}


@contextlib.contextmanager
def no_warnings() -> Iterator[list[str]]:
    """Collect WARNING+ log records of every logger (Prefect's do not propagate to the root) and every
    Python warning raised inside the block."""
    seen: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(f"{record.name}: {record.getMessage()}")

    handler = Keep(level=logging.WARNING)
    loggers = [logging.getLogger(n) for n in ("", "prefect", "mlflow", "py.warnings")]
    for lg in loggers:
        lg.addHandler(handler)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield seen
        seen.extend(f"{w.category.__name__}: {w.message} ({w.filename}:{w.lineno})" for w in caught)
    finally:
        for lg in loggers:
            lg.removeHandler(handler)


def _artifacts(keys: list[str]) -> dict[str, list]:
    """The Prefect artifacts with these keys, newest first per key."""
    from prefect import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from prefect.client.schemas.sorting import ArtifactSort

    with get_client(sync_client=True) as pc:
        arts = pc.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=keys)),
                                 sort=ArtifactSort.CREATED_DESC)
    out: dict[str, list] = {}
    for a in arts:
        out.setdefault(a.key, []).append(a)
    return out


@pytest.mark.slow  # ~90 s: the whole pipeline twice plus a failing run; keeps the quick tier under 5 min
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
    with no_warnings() as seen:  # a clean run prints no warning (issue 25)
        rerun = run_pipeline(cfg, home)
    assert seen == []
    st = rerun["stages"]
    assert [n for n in STAGES if st[n]["cached"]] == ["induce", "judge"]
    assert rerun["metrics"]["train_steps_this_run"] == 2
    # Only the evaluation's win-rate judging talks to the VLM on this rerun.
    assert rerun["metrics"]["vlm_calls_this_run"] == st["evaluate"]["metrics"]["vlm_calls"]
    assert Path(st["train"]["lora_uri"]).joinpath("pytorch_lora_weights.safetensors").is_file()
    assert Path(st["evaluate"]["artifacts"]["report"]).is_file()

    # 3. Once more: every stage is a cache hit, 0 VLM calls and 0 training steps.
    with no_warnings() as seen:
        cached = run_pipeline(cfg, home)
    assert seen == []
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
    assert {"lora", "samples"} <= {a.path for a in c.list_artifacts(st["train"]["mlflow_run_id"])}

    # 4. Issue 25 item 7: with every stage cached, run_pipeline's fast path starts no Prefect run at all
    # (by default it is taken only without a Prefect server) and still records the lineage.
    from prefect import get_client

    with get_client(sync_client=True) as pc:
        n_flow_runs = len(pc.read_flow_runs())
    fast = run_pipeline(cfg, home, fast_rerun=True)
    with get_client(sync_client=True) as pc:
        assert len(pc.read_flow_runs()) == n_flow_runs
    assert all(fast["stages"][n]["cached"] for n in STAGES)
    assert fast["metrics"]["vlm_calls_this_run"] == 0 and fast["metrics"]["train_steps_this_run"] == 0
    assert {n: fast["stages"][n]["entity_id"] for n in STAGES} == {n: st2[n]["entity_id"] for n in STAGES}
    parent = c.get_run(fast["mlflow_run_id"])
    assert parent.info.status == "FINISHED" and parent.data.tags["arr.fast_rerun"] == "true"
    assert parent.data.tags["arr.rubric_set_id"] == st["induce"]["rubric_set_id"]
    kids = _children(c, fast["mlflow_run_id"])
    assert set(kids) == set(STAGES) and all(r.data.tags["arr.cached"] == "true" for r in kids.values())
    assert kids["train"].data.tags["arr.source_run_id"] == st["train"]["mlflow_run_id"]
    assert fast["stages"]["induce"]["pipeline_child_run_id"] in json.dumps(
        Store(home).lineage(st["induce"]["rubric_set_id"]), default=str)

    # Prefect artifacts per stage: summary (Markdown), table, link to the stage's MLflow run.
    arts = _artifacts([f"arr-{s}-{k}" for s in ("data", "induce", "judge", "train", "evaluate", "pipeline")
                       for k in ("summary", "table", "mlflow")])
    for key in ("arr-data-summary", "arr-induce-summary", "arr-induce-table", "arr-judge-table", "arr-train-summary",
                "arr-evaluate-summary", "arr-pipeline-summary", "arr-pipeline-table", "arr-pipeline-mlflow"):
        assert key in arts, sorted(arts)
    rs_id = st["induce"]["rubric_set_id"]
    # The run that made the rubric set shows its text; a cached one says where it came from.
    assert any(rs_id in a.data and "```" in a.data and "Theme:" in a.data for a in arts["arr-induce-summary"])
    assert any(rs_id in a.data and "induce: cached" in a.data for a in arts["arr-induce-summary"])
    assert any(st["train"]["mlflow_run_id"] in a.data for a in arts["arr-train-mlflow"])
    # A link artifact's data is Markdown: [text](url).
    assert any(a.data.endswith(f"/runs/{cached['mlflow_run_id']})") for a in arts["arr-pipeline-mlflow"]), \
        [a.data for a in arts["arr-pipeline-mlflow"]]
    # One row per stage, naming the stage's child run of that pipeline run.
    assert any(all(cached["stages"][n]["pipeline_child_run_id"] in a.data for n in STAGES)
               for a in arts["arr-pipeline-table"])

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

    c = client()
    n_parents = len(c.search_runs([c.get_experiment_by_name("arr-test").experiment_id],
                                  filter_string="tags.`arr.kind` = 'pipeline'"))
    # A stage to run: the fast path's probe finds the miss, leaves no trace, and Prefect runs the flow.
    changed = run_pipeline(tiny_config(None, **{"vlm.api_key": SECRET, "induce.max_rubrics": 4}), home,
                           fast_rerun=True)
    parents = c.search_runs([c.get_experiment_by_name("arr-test").experiment_id],
                            filter_string="tags.`arr.kind` = 'pipeline'")
    assert len(parents) == n_parents + 1 and "arr.fast_rerun" not in parents[0].data.tags
    assert parents[0].data.tags["arr.prefect_flow_run_id"]
    ind = changed["stages"]["induce"]
    assert not ind["cached"] and ind["metrics"]["criteria_selected"] <= 4
    assert ind["rubric_set_id"] != base["stages"]["induce"]["rubric_set_id"]
    # Generation/verification does not depend on max_rubrics: no pair was asked again.
    assert ind["vlm_calls_this_run"] <= 1  # at most the categorize call

    monkeypatch.setattr(templates, "PROMPT_VERSION", templates.PROMPT_VERSION + "+test")
    bumped = run_pipeline(cfg, home)
    assert not bumped["stages"]["induce"]["cached"] and not bumped["stages"]["judge"]["cached"]

    # The API key is in no MLflow param, tag or artifact, no Prefect result and no flow-run parameter.
    runs = c.search_runs([c.get_experiment_by_name("arr-test").experiment_id])
    assert len(runs) >= 9
    assert SECRET not in json.dumps([{"p": r.data.params, "t": r.data.tags} for r in runs])
    leaked = [f for f in list((home / "mlflow").rglob("*")) + list((home / "prefect").rglob("*"))
              if f.is_file() and SECRET.encode() in f.read_bytes()]
    assert leaked == []
    with get_client(sync_client=True) as pc:
        flow_runs = pc.read_flow_runs()
        artifacts = pc.read_artifacts()
    assert flow_runs and SECRET not in json.dumps([fr.parameters for fr in flow_runs], default=str)
    assert artifacts and SECRET not in json.dumps([a.model_dump(mode="json") for a in artifacts])


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
