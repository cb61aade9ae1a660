"""The training task against a real local MLflow store (SQLite, file artifacts): the LoRA becomes a
registered model version with the lineage tags and the ``trained`` alias, the per-step sample grids
are step-indexed images, and the per-step reward spread is a metric history (issue 25 item 3)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

# The rank judge trains; the scene checker, weighted 0, only measures: its raw mean per step is an
# absolute score (reward/checker/mean) that the group-ranked reward cannot be.
MEASURED = {"components": [{"kind": "rubric_judge", "order": "single"},
                           {"kind": "checker", "checker": "scene", "weight": 0.0, "required": False}],
            "vlm": {"backend": "scene"}}


def _train(tmp_path: Path, key: str, rubric_file: Path, seed: int, reward: dict | None = None) -> dict:
    from arr_core.rpo.config import TrainConfig
    from tasks import train as train_task

    raw = {"policy": {"kind": "toy", "device": "cpu"}, "prompts": {"source": "world", "count": 8}, "seed": seed,
           "num_steps": 3, "steps": 2, "prompts_per_step": 2, "rollout_batch_size": 2, "lr": 1e-3,
           "sample_grid_every": 1, "checkpoint_every": 0, "lora": {"rank": 2, "alpha": 4},
           "reward": reward or {"vlm": {"backend": "scene"}}}
    TrainConfig.model_validate(raw)
    cfg_file = tmp_path / f"{key}.json"
    cfg_file.write_text(json.dumps(raw))  # as written, not re-dumped (a dumped hybrid reward does not validate)
    return train_task.run_rpo.fn(key, str(cfg_file), str(rubric_file), {"backend": "scene"},
                                 str(tmp_path / key / "run"), "arr-reg", None)


@pytest.mark.slow
def test_lora_registered_with_alias_step_images_and_reward_spread(tmp_path: Path, monkeypatch) -> None:
    from arr_core.rubrics.rubric_set import RubricSet, Theme
    from tasks import _mlflow as mlf
    from tasks._env import apply_defaults

    monkeypatch.setenv("ARR_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    apply_defaults(tmp_path / "home")
    torch.set_num_threads(1)
    rs = RubricSet(task="t2i", themes=[Theme(theme="Counts", tips=["The number of objects matches."])],
                   criteria=["The number of objects matches."], metadata={"dataset_digest": "ds-digest-1"})
    rubric_file = tmp_path / "rs.json"
    rubric_file.write_text(rs.to_json())

    first = _train(tmp_path, "tr-reg-1", rubric_file, seed=0, reward=MEASURED)
    name = "arr-reg-toy-lora"
    assert first["registered_model"] == {"name": name, "alias": "trained", "version": "1"}
    c = mlf.client()
    mv = c.get_model_version(name, "1")
    assert mv.tags["arr.train_key"] == "tr-reg-1"
    assert mv.tags["arr.rubric_set_id"] == rs.id and mv.tags["arr.dataset_digest"] == "ds-digest-1"
    assert mv.run_id == first["mlflow_run_id"] and mv.source == first["lora_artifact_uri"]
    lora_files = Path(mv.source.removeprefix("file://")).iterdir()
    assert any(p.suffix == ".safetensors" for p in lora_files), "the version's source must hold the LoRA"
    assert str(c.get_model_version_by_alias(name, "trained").version) == "1"

    # Step-indexed images: one per sample grid, under MLflow's images/ with their step in the name.
    images = [f.path for f in c.list_artifacts(first["mlflow_run_id"], "images")]
    for step in (1, 2):
        assert any(f"samples+step+{step}+" in p and p.endswith(".png") for p in images), images
    # Per-step metrics include the reward spread (one value per step) next to the fixed reward mean.
    rows = [json.loads(line) for line in Path(first["artifacts"]["metrics"]).read_text().splitlines()]
    spread = c.get_metric_history(first["mlflow_run_id"], "reward_spread")
    assert [m.step for m in spread] == [1, 2]
    assert [m.value for m in spread] == pytest.approx([r["reward_spread"] for r in rows])
    assert all(0.0 <= r["reward_std"] <= 1.0 for r in rows)
    absolute = c.get_metric_history(first["mlflow_run_id"], "reward/checker/mean")
    assert [m.step for m in absolute] == [1, 2] and all(0.0 <= m.value <= 1.0 for m in absolute)

    # A second training: a new version; the alias moves to it.
    second = _train(tmp_path, "tr-reg-2", rubric_file, seed=1)
    assert second["registered_model"]["version"] == "2"
    assert str(c.get_model_version_by_alias(name, "trained").version) == "2"
    assert c.get_model_version(name, "2").tags["arr.train_key"] == "tr-reg-2"
