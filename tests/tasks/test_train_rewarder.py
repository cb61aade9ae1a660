"""The pipeline's training task builds the same judge as ``arr train`` (``arr_core.judge.factory``)."""

from __future__ import annotations

import pytest

from arr_core.judge.checklist import ChecklistRewarder
from arr_core.judge.reward import JudgeRewarder
from arr_core.rpo.config import TrainConfig
from arr_core.rpo.rewards import ShuffledRewarder
from arr_core.rubrics.rubric_set import RubricSet
from arr_core.vlm.config import VLMConfig
from tasks.train import build_rewarder

RUBRICS = RubricSet.from_text("Rubric 1:\nTheme: Faithfulness\n- Tip: The image is fully faithful to the caption.\n\n"
                              "Rubric 2:\nTheme: Objects\n- Tip: All objects the caption asks for appear in the image.\n")


def _cfg(**reward) -> TrainConfig:
    return TrainConfig.model_validate({"policy": {"kind": "toy"}, "prompts": {"source": "world"},
                                       "reward": {"kind": "judge", **reward}})


def test_pipeline_training_task_honours_the_judge_mode() -> None:
    vlm = VLMConfig()
    assert isinstance(build_rewarder(_cfg(), RUBRICS, vlm), JudgeRewarder)
    gated = build_rewarder(_cfg(mode="checklist", hard_themes=["Faithfulness"]), RUBRICS, vlm)
    assert isinstance(gated, ChecklistRewarder) and gated.hard == [True, False] and not gated.hard_only
    only = build_rewarder(_cfg(mode="checklist", hard_themes=["Faithfulness"], hard_only=True), RUBRICS, vlm)
    assert only.hard_only
    control = build_rewarder(_cfg(mode="checklist", shuffled=True), RUBRICS, vlm)
    assert isinstance(control, ShuffledRewarder) and isinstance(control.inner, ChecklistRewarder)
    with pytest.raises(ValueError, match="checks rubrics"):
        build_rewarder(_cfg(mode="checklist"), None, vlm)
    with pytest.raises(ValueError, match=r"\['Colour'\] not in rubric set"):
        build_rewarder(_cfg(mode="checklist", hard_themes=["Colour"]), RUBRICS, vlm)
