"""MLflow helpers against a real SQLite tracking store: explicit parent links, batched logging,
secrets removed from params and tags, project digests on inputs, FAILED runs on errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr

import tasks  # noqa: F401
from tasks import _mlflow as mlf


@pytest.fixture
def tracking(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    return tmp_path


def test_flatten_is_dotted_and_secret_free() -> None:
    flat = mlf.flatten({"vlm": {"model": "m", "api_key": SecretStr("sk-9")}, "steps": 3, "ids": [1, 2],
                        "token": "x", "path": Path("/p")})
    assert flat == {"vlm.model": "m", "steps": "3", "ids": "[1, 2]", "path": "/p"}


def test_child_run_links_parent_and_logs_in_batches(tracking: Path) -> None:
    parent = mlf.start_run("exp-a", "pipeline", home=tracking, tags={"arr.kind": "pipeline"})
    with mlf.stage_run("exp-a", "induce", home=tracking, parent_run_id=parent,
                       params={"generator": {"model": "m", "api_key": "sk-secret"}, "k": 5},
                       tags={"arr.rubric_set_id": "rs-1", "openai_api_key": "sk-secret"}) as child:
        mlf.log_metrics(child, {"acc": 0.5, "n": 3, "flag": True, "bad": float("nan")})
        mlf.log_metric_history(child, [{"step": 1, "reward": 0.1}, {"step": 2, "reward": 0.3}])
        mlf.log_input(child, name="pairs", digest="abc123", source_uri="/data/pairs.json", context="induction")
    run = mlf.client().get_run(child)
    assert run.data.tags[mlf.PARENT_TAG] == parent
    assert run.data.tags["arr.rubric_set_id"] == "rs-1" and "openai_api_key" not in run.data.tags
    assert run.data.params == {"generator.model": "m", "k": "5"}
    assert run.data.metrics == {"acc": 0.5, "n": 3.0, "reward": 0.3}
    assert [m.value for m in mlf.client().get_metric_history(child, "reward")] == [0.1, 0.3]
    assert run.inputs.dataset_inputs[0].dataset.digest == "abc123"
    assert run.info.status == "FINISHED"
    exp = mlf.client().get_experiment_by_name("exp-a")
    assert exp.artifact_location.startswith((tracking / "mlflow" / "artifacts").as_uri())


def test_stage_run_marks_failed_and_reraises(tracking: Path) -> None:
    with pytest.raises(RuntimeError, match="boom"):
        with mlf.stage_run("exp-b", "train", home=tracking, parent_run_id=None) as run_id:
            raise RuntimeError("boom")
    assert mlf.client().get_run(run_id).info.status == "FAILED"


def test_runs_left_running_by_a_killed_process_are_marked_killed(tracking: Path) -> None:
    """kill -9 leaves the MLflow run RUNNING; the next pipeline start ends it as KILLED (issue 20).
    Runs of live processes and of other hosts are left alone."""
    import subprocess
    import sys

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    orphan = mlf.start_run("exp-k", "pipeline", home=tracking, tags={"arr.pid": dead.pid})
    live = mlf.start_run("exp-k", "pipeline", home=tracking)  # this process: alive
    remote = mlf.start_run("exp-k", "pipeline", home=tracking, tags={"arr.pid": dead.pid, "arr.host": "gpu-7"})
    assert mlf.mark_orphaned_runs("exp-k", tracking) == [orphan]
    status = {r: mlf.client().get_run(r).info.status for r in (orphan, live, remote)}
    assert status == {orphan: "KILLED", live: "RUNNING", remote: "RUNNING"}
    assert "ended without closing" in mlf.client().get_run(orphan).data.tags["arr.end_reason"]


def test_runs_compare_lists_only_this_projects_runs_with_per_run_tokens(tracking: Path, capsys) -> None:
    """`arr runs compare`: experiments of other projects in the same store are left out, and a rerun
    whose induction was a cache hit spends 0 tokens (its cached child repeats the first run's)."""
    from arr_cli import main

    def pipeline_run(name: str, cached: bool) -> str:
        parent = mlf.start_run("arr-pipeline", name, home=tracking, tags={"arr.kind": "pipeline"})
        tags = {"arr.cached": "true"} if cached else {}
        with mlf.stage_run("arr-pipeline", "induce", home=tracking, parent_run_id=parent, tags=tags) as child:
            mlf.log_metrics(child, {"prompt_tokens": 1200, "completion_tokens": 300})
        with mlf.stage_run("arr-pipeline", "judge", home=tracking, parent_run_id=parent) as child:
            mlf.log_metrics(child, {"prompt_tokens": 40, "completion_tokens": 2})
        mlf.log_metrics(parent, {"induce.prompt_tokens": 1200, "induce.completion_tokens": 300})
        mlf.end_run(parent)
        return parent

    cold, warm = pipeline_run("cold-run", cached=False), pipeline_run("warm-run", cached=True)
    other = mlf.client().create_experiment("someone-elses-project")
    mlf.client().create_run(other, run_name="foreign-run", tags={"arr.kind": "pipeline"})
    capsys.readouterr()
    assert main(["runs", "compare", "--home", str(tracking)]) == 0
    out = capsys.readouterr().out
    rows = {ln.split()[1]: ln for ln in out.splitlines() if "-run " in ln}
    assert set(rows) == {"cold-run", "warm-run"} and "someone-elses-project" not in out
    assert "1542" in rows["cold-run"] and cold[:8] in rows["cold-run"]
    assert "1542" not in rows["warm-run"] and " 42 " in rows["warm-run"] and warm[:8] in rows["warm-run"]
