"""Issue 23's rewards from a pipeline config: the Prefect pipeline's training stage trains with
``reward: {components: [...]}`` (per-criterion scores + the scene checker) and with
``reward: {mode: scores}``, and the per-step metrics of those rewards reach metrics.jsonl and the
train stage's MLflow run. The pipeline exports its training config as JSON and the training side
validates it again, so a reward section that does not survive that round trip fails here."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.flows.conftest import tiny_config

HYBRID = {"components": [
    {"kind": "rubric_scores", "name": "rubric", "weight": 1.0, "normalize": "zscore", "default_scale": "binary"},
    {"kind": "checker", "checker": "scene", "weight": 0.5, "min_confidence": 0.0, "required": False}]}
SCORES = {"mode": "scores", "default_scale": "1-5"}


def _steps(summary: dict) -> list[dict]:
    path = Path(summary["stages"]["train"]["artifacts"]["metrics"])
    return [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()]


@pytest.mark.slow
def test_pipeline_trains_with_hybrid_components_and_with_per_criterion_scores(
        prefect_api, home: Path, toy_policy_dir: Path) -> None:
    from flows.pipeline import run_pipeline
    from tasks._mlflow import client

    c = client()
    hybrid = run_pipeline(tiny_config(toy_policy_dir, **{"training.config.reward": HYBRID,
                                                         "evaluate.enabled": False}), home)
    train = hybrid["stages"]["train"]
    assert not train["cached"] and train["steps"] == 2
    rows = _steps(hybrid)
    assert [r["step"] for r in rows] == [1, 2]
    for r in rows:  # both components scored every group of every step
        assert r["reward/rubric/failed"] == 0.0 and r["reward/checker/failed"] == 0.0
        assert 0.0 <= r["reward/rubric/mean"] <= 1.0 and 0.0 <= r["reward/checker/mean"] <= 1.0
        assert r["abstain_rate"] == 0.0
        assert any(k.startswith("rubric/score_theme/") for k in r)
        assert any(k.startswith("rubric/attribution/") for k in r)
    history = c.get_metric_history(train["mlflow_run_id"], "reward/checker/mean")
    assert [m.step for m in history] == [1, 2]
    assert [m.value for m in history] == pytest.approx([r["reward/checker/mean"] for r in rows])
    params = c.get_run(train["mlflow_run_id"]).data.params  # the reward as trained, only each kind's fields
    assert params["reward.mode"] == "hybrid"
    assert [(x["kind"], x["name"]) for x in json.loads(params["reward.components"])] == [
        ("rubric_scores", "rubric"), ("checker", None)]

    scores = run_pipeline(tiny_config(toy_policy_dir, **{"training.config.reward": SCORES,
                                                         "evaluate.enabled": False}), home)
    st = scores["stages"]
    assert st["induce"]["cached"] and not st["train"]["cached"]  # same rubric set, a new training
    assert st["train"]["entity_id"] != train["entity_id"]
    rows = _steps(scores)
    assert [r["step"] for r in rows] == [1, 2] and all(r["abstain_rate"] == 0.0 for r in rows)
    themes = [k for k in rows[0] if k.startswith("score_theme/")]
    crits = [k for k in rows[0] if k.startswith("score/")]
    assert themes and crits and all(0.0 <= rows[0][k] <= 1.0 for k in themes + crits)
    assert any(k.startswith("attribution/") for k in rows[0])
    assert not any(k.startswith("reward/") for k in rows[0])  # one judge, no components
    assert len(c.get_metric_history(st["train"]["mlflow_run_id"], themes[0])) == 2
    assert c.get_run(st["train"]["mlflow_run_id"]).data.params["reward.mode"] == "scores"
