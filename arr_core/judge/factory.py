"""One place that turns a ``reward`` config (``arr_core.rpo.config.RewardConfig``) of kind ``judge``
into a group rewarder, so ``arr train`` and the pipeline's training task build the same judge."""

from __future__ import annotations

from typing import Any


def judge_rewarder(client: Any, rubric_set: Any, task: str, reward: Any, *, seed: int,
                   store: Any = None) -> tuple[Any, str]:
    """(rewarder, description) for ``reward.mode``: ``rank`` → ``JudgeRewarder`` (order, mapping;
    judgments to ``store`` when given), ``checklist`` → ``ChecklistRewarder`` (hard themes).

    Raises ValueError naming the problem: checklist mode without a rubric set, a hard theme the set
    does not have, a rubric set for another task."""
    if reward.mode == "checklist":
        from arr_core.judge.checklist import ChecklistRewarder

        if rubric_set is None:
            raise ValueError("reward.mode 'checklist' checks rubrics; give a rubric set, not 'none'")
        rewarder = ChecklistRewarder(client, rubric_set, task, hard_themes=reward.hard_themes,
                                     hard_only=reward.hard_only)
        hard = f", hard themes {reward.hard_themes}" if reward.hard_themes else ""
        hard += " only" if reward.hard_only else ""
        return rewarder, f"checklist judge, rubrics {rubric_set.id}{hard}"
    from arr_core.judge.reward import JudgeRewarder

    rewarder = JudgeRewarder(client, rubric_set, task, reward.order, mapping=reward.mapping, seed=seed,
                             store=store)
    return rewarder, f"judge, rubrics {rubric_set.id if rubric_set else 'none'}, order {reward.order}"
