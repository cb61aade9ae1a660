"""The rubric-conditioned VLM judge as an RPO group rewarder (``arr_core.rewards.GroupRewarder``).

RPO (Rubric Policy Optimization, from the ARR paper) ranks each group of G images sampled for one
prompt with the rubric-conditioned judge and turns the rank into rewards: for G = 2 the winner gets
1.0 and the loser −0.1 (a tie or an abstention gives both 0); for G > 2 ranks map linearly from 1.0
to −0.1. Departures from the paper's code: the judge runs in ``swap`` order by default (position
bias becomes a tie, not a reward), and an unusable answer abstains instead of crashing training.
"""

from __future__ import annotations

from typing import Any

from PIL import Image

from arr_core.digest import digest_obj, sha256_bytes
from arr_core.judge.judge import ORDER_MODES, REWARD_MAPPINGS, JudgeItem, Judgment, judge_many
from arr_core.rewards import GroupOutcome
from arr_core.rubrics.rubric_set import RubricSet


def _image_key(im: Image.Image) -> str:
    return sha256_bytes(f"{im.mode}{im.size}".encode() + im.tobytes())[:16]


def group_key(prompt: str, images: list[Image.Image], source: Image.Image | None) -> str:
    """Content key of a group (prompt, image pixels, source pixels): seeds the random order."""
    return "grp-" + digest_obj({"prompt": prompt, "images": [_image_key(im) for im in images],
                                "source": _image_key(source) if source is not None else None}, 16)


def check_judge_batch(task: str, prompts: list[str], groups: list[list[Image.Image]],
                      sources: list[Image.Image] | None) -> None:
    """Raise ValueError unless the batch fits the task: one group of G >= 2 images per prompt, and one
    source image per prompt for editing (none for T2I)."""
    if len(prompts) != len(groups):
        raise ValueError(f"got {len(prompts)} prompts but {len(groups)} groups")
    if task == "edit" and (sources is None or len(sources) != len(prompts)):
        raise ValueError("task 'edit' needs one source image per prompt (argument 'sources')")
    if task == "t2i" and sources is not None:
        raise ValueError("task 't2i' takes no source images; pass sources=None")
    for k, grp in enumerate(groups):
        if len(grp) < 2:
            raise ValueError(f"group {k} has {len(grp)} images; RPO needs G >= 2")


def check_pointwise_args(task: str, rubric_set: RubricSet | None, tie_tol: float, what: str) -> None:
    """Raise ValueError unless a pointwise judge (``what``: "checklist", "per-criterion") can run: a
    known task, a rubric set for that task, tie_tol >= 0."""
    if task not in ("t2i", "edit"):
        raise ValueError(f"task must be 't2i' or 'edit', got {task!r}")
    if rubric_set is None:
        raise ValueError(f"the {what} judge needs a rubric set (there is nothing to check without one)")
    if rubric_set.task != task:
        raise ValueError(f"rubric set {rubric_set.id} is for task {rubric_set.task!r}, not {task!r}")
    if tie_tol < 0:
        raise ValueError(f"tie_tol must be >= 0, got {tie_tol}")


def to_group_outcome(j: Judgment) -> GroupOutcome:
    """Judgment → GroupOutcome. ``ranks`` is the integer ranking only for a win (orders agreed)."""
    ranks = [int(r) for r in j.final_rank] if j.outcome == "win" and j.final_rank is not None else None
    latency = sum(o.latency_s for o in j.orders)
    return GroupOutcome(rewards=list(j.rewards), outcome=j.outcome, ranks=ranks, latency_s=latency)  # type: ignore[arg-type]


class JudgeRewarder:
    """``await rewarder.score(prompts, groups, sources)`` → one GroupOutcome per prompt.

    client: a VLMClient; rubric_set: the rubrics the judge sees (None: judge without rubrics);
    task: "t2i" or "edit" (editing needs ``sources``); order: single | swap | random;
    mapping: "paper" or "linear"; None picks paper for G = 2 and linear for G > 2. Judgments go to
    ``store`` (table ``judgments``) when one is given.
    """

    def __init__(self, client: Any, rubric_set: RubricSet | None, task: str, order: str = "swap", *,
                 mapping: str | None = None, seed: int = 0, store: Any = None) -> None:
        if task not in ("t2i", "edit"):
            raise ValueError(f"task must be 't2i' or 'edit', got {task!r}")
        if order not in ORDER_MODES:
            raise ValueError(f"order must be one of {', '.join(ORDER_MODES)}, got {order!r}")
        if mapping is not None and mapping not in REWARD_MAPPINGS:
            raise ValueError(f"mapping must be one of {', '.join(REWARD_MAPPINGS)} or None, got {mapping!r}")
        if rubric_set is not None and rubric_set.task != task:
            raise ValueError(f"rubric set {rubric_set.id} is for task {rubric_set.task!r}, not {task!r}")
        self.client, self.rubric_set, self.task, self.order = client, rubric_set, task, order
        self.mapping, self.seed, self.store = mapping, seed, store
        self._block = rubric_set.prompt_block() if rubric_set is not None else None

    async def score(self, prompts: list[str], groups: list[list[Image.Image]],
                    sources: list[Image.Image] | None = None) -> list[GroupOutcome]:
        check_judge_batch(self.task, prompts, groups, sources)
        items = []
        for k, (prompt, grp) in enumerate(zip(prompts, groups, strict=True)):
            src = sources[k] if sources is not None else None
            items.append(JudgeItem(self.task, prompt, list(grp), src, group_key(prompt, grp, src)))
        out: list[GroupOutcome | None] = [None] * len(items)
        # One batch per group size, so "auto" mapping can differ between sizes.
        for g in sorted({len(it.images) for it in items}):
            idx = [i for i, it in enumerate(items) if len(it.images) == g]
            mapping = self.mapping or ("paper" if g == 2 else "linear")
            js = await judge_many(self.client, [items[i] for i in idx], rubric_block=self._block,
                                  rubric_set_id=self.rubric_set.id if self.rubric_set else None,
                                  order=self.order, mapping=mapping, seed=self.seed, store=self.store)
            for i, j in zip(idx, js, strict=True):
                out[i] = to_group_outcome(j)
        return [o for o in out if o is not None]
