"""The pipeline exports the training config for the training side (plan_training): every value must
come back as written — a non-finite learning rate included (pydantic's JSON writer turns it into null,
which failed the run while reading the config instead of at the trainer's health check, exit 5)."""
from __future__ import annotations

import math
from pathlib import Path

from arr_core.rpo.config import TrainConfig
from arr_core.rubrics.rubric_set import RubricSet, Theme
from tasks.train import plan_training


def test_exported_config_loads_back_equal_with_a_non_finite_lr(tmp_path: Path) -> None:
    rs = RubricSet(task="t2i", themes=[Theme(theme="Counts", tips=["The number of objects matches."])],
                   criteria=["The number of objects matches."])
    rs_json = tmp_path / "rs.json"
    rs_json.write_text(rs.to_json(), encoding="utf-8")
    cfg = TrainConfig.model_validate({
        "policy": {"kind": "toy"}, "prompts": {"source": "world"}, "lr": float("inf"),
        "reward": {"components": [{"kind": "rubric_judge"},
                                  {"kind": "checker", "checker": "scene", "weight": 0.0, "required": False}]}})
    plan = plan_training.fn(cfg, str(rs_json), {"backend": "scene"}, str(tmp_path / "exchange"))
    back = TrainConfig.model_validate_json(Path(plan["train_config_uri"]).read_text(encoding="utf-8"))
    assert math.isinf(back.lr)
    assert back == cfg
