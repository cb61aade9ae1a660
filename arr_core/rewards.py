"""Group reward outcomes: the seam between the trainer and whatever ranks a group of G images.

This module sits at the bottom of ``arr_core`` (it imports nothing of the project), so the judge and
the trainer both depend on it and never on each other. The trainer hands a batch of groups (G images
per prompt, optionally with the editing source image) to a ``GroupRewarder`` and awaits one
``GroupOutcome`` per group. The rubric-conditioned VLM judge (``arr_core.judge.reward.JudgeRewarder``)
implements the protocol; ``CallableRewarder`` wraps any per-image score function. The benchmark
stand-ins (fixed latency, shuffled control, scene checker) live in ``arr_core.sim.rewards``.

Reward mapping (ARR paper): the winner gets 1.0 and the loser −0.1; a tie gives both 0; for G > 2
ranks map linearly from 1.0 (rank 1) to −0.1 (rank G).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol

from PIL import Image

Outcome = Literal["win", "tie", "abstain"]
WINNER_REWARD = 1.0
LOSER_REWARD = -0.1


@dataclass
class GroupOutcome:
    """The judgement of one group of G images.

    rewards: G floats (0 for every image when the outcome is a tie or an abstention);
    outcome: "win" (a strict ranking), "tie" or "abstain" (the judge gave no usable answer);
    ranks: 1 = best, a permutation of 1..G, or None for ties/abstentions;
    latency_s: wall time the judge spent on this group's request (the batch's time for batched calls).
    """

    rewards: list[float]
    outcome: Outcome
    ranks: list[int] | None
    latency_s: float


class GroupRewarder(Protocol):
    async def score(self, prompts: list[str], groups: list[list[Image.Image]],
                    sources: list[Image.Image] | None = None) -> list[GroupOutcome]:
        """One outcome per prompt; ``groups[k]`` holds prompt k's G images (``sources[k]`` its edit
        source, for editing)."""
        ...


def rank_rewards(ranks: list[int], winner: float = WINNER_REWARD, loser: float = LOSER_REWARD) -> list[float]:
    """Ranks (1 = best, permutation of 1..G) → linear rewards from ``winner`` (rank 1) to ``loser`` (rank G)."""
    g = len(ranks)
    if sorted(ranks) != list(range(1, g + 1)):
        raise ValueError(f"ranks must be a permutation of 1..{g}, got {ranks}")
    if g == 1:
        return [winner]
    # Exact end points (winner 1.0, loser −0.1), linear in between.
    return [winner if r == 1 else loser if r == g else winner + (loser - winner) * (r - 1) / (g - 1)
            for r in ranks]


def check_batch(prompts: list[str], groups: list[list[Image.Image]],
                 sources: list[Image.Image] | None) -> None:
    if len(prompts) != len(groups):
        raise ValueError(f"got {len(prompts)} prompts but {len(groups)} groups")
    if sources is not None and len(sources) != len(prompts):
        raise ValueError(f"got {len(prompts)} prompts but {len(sources)} sources")
    for k, grp in enumerate(groups):
        if len(grp) < 2:
            raise ValueError(f"group {k} has {len(grp)} images; RPO needs G >= 2")


ScoreFn = Callable[[str, Image.Image], float]


def outcome_from_scores(scores: list[float | None], tie_tol: float = 0.0, latency_s: float = 0.0) -> GroupOutcome:
    """Per-image scores (higher is better) → the group's outcome.

    A missing (None) or non-finite score makes the group an abstention (rewards 0). Scores all equal
    within ``tie_tol`` make a tie (rewards 0). Otherwise images are ranked by score and get the
    paper's rank rewards; images whose scores are equal within ``tie_tol`` share the mean of their
    rank rewards (``ranks`` breaks such ties by position).
    """
    n = len(scores)
    if any(s is None or s != s or abs(s) == float("inf") for s in scores):
        return GroupOutcome([0.0] * n, "abstain", None, latency_s)
    vals = [float(s) for s in scores]  # type: ignore[arg-type]
    if max(vals) - min(vals) <= tie_tol:
        return GroupOutcome([0.0] * n, "tie", None, latency_s)
    order = sorted(range(n), key=lambda i: (-vals[i], i))
    ranks = [0] * n
    for r, idx in enumerate(order):
        ranks[idx] = r + 1
    by_rank = rank_rewards(ranks)
    rewards = []
    for s in vals:
        same = [j for j, s2 in enumerate(vals) if abs(s2 - s) <= tie_tol]
        rewards.append(sum(by_rank[j] for j in same) / len(same))
    return GroupOutcome(rewards, "win", ranks, latency_s)


class CallableRewarder:
    """Wraps a plain per-image score function ``fn(prompt, image) -> float`` (higher is better, e.g.
    the fraction of a scene-world prompt's checks that the detector passes).

    Scores → ranks → paper rewards (``outcome_from_scores``): a group whose scores are all equal
    (within ``tie_tol``) is a tie (rewards 0); otherwise images are ranked by score (equal scores take
    the mean of their rank rewards). A non-finite score makes the group an abstention.
    """

    def __init__(self, fn: ScoreFn, *, tie_tol: float = 0.0) -> None:
        if tie_tol < 0:
            raise ValueError(f"tie_tol must be >= 0, got {tie_tol}")
        self.fn, self.tie_tol = fn, tie_tol

    def score_group(self, prompt: str, images: list[Image.Image]) -> GroupOutcome:
        t0 = time.perf_counter()
        scores = [float(self.fn(prompt, im)) for im in images]
        return outcome_from_scores(scores, self.tie_tol, time.perf_counter() - t0)

    async def score(self, prompts: list[str], groups: list[list[Image.Image]],
                    sources: list[Image.Image] | None = None) -> list[GroupOutcome]:
        check_batch(prompts, groups, sources)
        return [self.score_group(p, g) for p, g in zip(prompts, groups, strict=True)]
