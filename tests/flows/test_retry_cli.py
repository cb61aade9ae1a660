"""docs/orchestration.md, "Rerunning failed stages" item 2: a failed pipeline flow run is retried with
the real CLI, `prefect flow-run retry ID --entrypoint flows/pipeline.py:pipeline_flow`, in a fresh
process that shares only ARR_HOME and the Prefect API with the failed run; the earlier stages are
cache hits (0 VLM calls for induction and the judge check), training runs, and what the retry did is
in the cache under ARR_HOME afterwards.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.flows.conftest import tiny_config

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def test_prefect_cli_retry_of_failed_pipeline_run(prefect_api, home: Path, toy_policy_dir: Path,
                                                  tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from prefect import get_client
    from prefect.settings import PREFECT_API_URL

    from flows.pipeline import run_pipeline
    from tasks._mlflow import client
    from tasks.common import FAIL_ENV

    # 1. Training fails on purpose: the flow run FAILS; its id is on the MLflow parent run.
    monkeypatch.setenv(FAIL_ENV, "train")
    with pytest.raises(Exception, match="failed on purpose"):
        run_pipeline(tiny_config(toy_policy_dir), home)
    c = client()
    exp_id = c.get_experiment_by_name("arr-test").experiment_id
    [failed] = c.search_runs([exp_id], filter_string="tags.`arr.kind` = 'pipeline'")
    flow_run_id = failed.data.tags["arr.prefect_flow_run_id"]
    with get_client(sync_client=True) as pc:
        assert pc.read_flow_run(flow_run_id).state.is_failed()

    # 2. The real CLI in a new process, as a user would run it: only ARR_HOME and the API URL in
    #    common (none of the PREFECT_*/MLFLOW_* defaults this process filled in from ARR_HOME).
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_")) and k != FAIL_ENV}
    env.update(PREFECT_API_URL=PREFECT_API_URL.value(), ARR_HOME=str(home), HF_HUB_OFFLINE="1",
               PREFECT_HOME=str(tmp_path / "prefect-cli"), PREFECT_SERVER_ANALYTICS_ENABLED="false")
    proc = subprocess.run([sys.executable, "-m", "prefect", "flow-run", "retry", flow_run_id,
                           "--entrypoint", "flows/pipeline.py:pipeline_flow"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=540)
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    with get_client(sync_client=True) as pc:
        assert pc.read_flow_run(flow_run_id).state.is_completed()

    # 3. The retry is a second MLflow parent run of the same flow run: induce and judge came from
    #    the cache (0 VLM calls), training and evaluation ran (2 steps).
    [retried] = c.search_runs([exp_id], filter_string="tags.`arr.kind` = 'pipeline' and "
                              f"tags.`arr.prefect_flow_run_id` = '{flow_run_id}' and attributes.status = 'FINISHED'")
    kid_runs = c.search_runs([exp_id], filter_string=f"tags.`mlflow.parentRunId` = '{retried.info.run_id}'")
    assert sorted(r.data.tags["arr.stage"] for r in kid_runs) == ["evaluate", "induce", "judge", "train"]
    kids = {r.data.tags["arr.stage"]: r for r in kid_runs}
    assert {n for n, r in kids.items() if r.data.tags.get("arr.cached") == "true"} == {"induce", "judge"}
    assert kids["induce"].data.metrics["vlm_calls_this_run"] == 0
    assert kids["judge"].data.metrics["vlm_calls_this_run"] == 0
    assert retried.data.metrics["train_steps_this_run"] == 2
    assert retried.data.metrics["vlm_calls_this_run"] == kids["evaluate"].data.metrics["vlm_calls"]
    assert kids["induce"].data.tags["arr.source_run_id"] == _children(c, exp_id, failed)["induce"]
    assert c.get_run(failed.info.run_id).info.status == "FAILED"  # the first attempt's record stays

    # 4. The retry kept its results (the cache) under ARR_HOME: the same config in this process is
    #    all cache hits, so training and evaluation are not done a second time.
    again = run_pipeline(tiny_config(toy_policy_dir), home)
    assert all(s["cached"] for n, s in again["stages"].items() if n != "data")
    assert again["metrics"]["vlm_calls_this_run"] == 0 and again["metrics"]["train_steps_this_run"] == 0


def _children(c, exp_id: str, parent) -> dict[str, str]:
    runs = c.search_runs([exp_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    return {r.data.tags["arr.stage"]: r.info.run_id for r in runs}
