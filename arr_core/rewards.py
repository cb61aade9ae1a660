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

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

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
    latency_s: wall time the judge spent on this group's request (the batch's time for batched calls);
    details: what the rewarder measured beyond the rewards, or None. Its ``"metrics"`` entry (a flat
    ``{name: float}``) is averaged over the step's groups that report each name and logged by the
    trainer (``detail_metrics``): per-theme scores, per-criterion attribution, per-component counts.
    """

    rewards: list[float]
    outcome: Outcome
    ranks: list[int] | None
    latency_s: float
    details: dict[str, Any] | None = None


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


def ranks_of(values: list[float]) -> list[int]:
    """Ranks (1 = highest value; equal values ranked by position) of ``values``."""
    order = sorted(range(len(values)), key=lambda i: (-values[i], i))
    ranks = [0] * len(values)
    for r, idx in enumerate(order):
        ranks[idx] = r + 1
    return ranks


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
    ranks = ranks_of(vals)
    by_rank = rank_rewards(ranks)
    rewards = []
    for s in vals:
        same = [j for j, s2 in enumerate(vals) if abs(s2 - s) <= tie_tol]
        rewards.append(sum(by_rank[j] for j in same) / len(same))
    return GroupOutcome(rewards, "win", ranks, latency_s)


def outcome_from_values(values: list[float | None], tie_tol: float = 0.0, latency_s: float = 0.0,
                        details: dict[str, Any] | None = None) -> GroupOutcome:
    """Per-image reward values (higher is better) → the group's outcome with the values themselves as
    rewards (not rank rewards): a missing or non-finite value abstains, values all equal within
    ``tie_tol`` tie (rewards 0), otherwise a win with ``ranks`` by value."""
    n = len(values)
    if any(v is None or v != v or abs(v) == float("inf") for v in values):
        return GroupOutcome([0.0] * n, "abstain", None, latency_s, details)
    vals = [float(v) for v in values]  # type: ignore[arg-type]
    if max(vals) - min(vals) <= tie_tol:
        return GroupOutcome([0.0] * n, "tie", None, latency_s, details)
    return GroupOutcome(vals, "win", ranks_of(vals), latency_s, details)


_NOT_IN_METRIC_NAMES = re.compile(r"[^A-Za-z0-9_\-. :/]+")


def metric_name(name: str) -> str:
    """``name`` with the characters MLflow refuses in metric names (anything but letters, digits,
    ``_ - . : /`` and spaces) replaced by ``_``: theme and component names are the user's text."""
    return _NOT_IN_METRIC_NAMES.sub("_", name).strip()


def detail_metrics(outcomes: list[GroupOutcome]) -> dict[str, float]:
    """The mean of every ``details["metrics"]`` entry over the groups that report it (a group that does
    not report a name, e.g. an abstained one, does not count for it). Names in sorted order, made safe
    for MLflow (``metric_name``)."""
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    for o in outcomes:
        for key, v in ((o.details or {}).get("metrics") or {}).items():
            k = metric_name(key)
            sums[k] = sums.get(k, 0.0) + float(v)
            counts[k] = counts.get(k, 0) + 1
    return {k: sums[k] / counts[k] for k in sorted(sums)}


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
