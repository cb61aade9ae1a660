"""Reward stand-ins and controls for benchmarks and tests (not product configuration).

- ``FixedLatencyRewarder``: a judge stand-in with a fixed latency for throughput benchmarks
  (``benchmarks/rpo_step.py``).
- ``ShuffledRewarder``: the shuffled-reward control of the RPO benchmarks.
- ``checker_score``: the scene world's ground-truth reward (the detector's GenEval-format checks);
  ``scene_verdict`` adds a confidence, for the hybrid reward's ``checker`` component (``scene``).

The benchmarks build these and hand them to ``arr_core.recipes.rpo.run(..., rewarder=...)``; the
training config only names the rubric judge.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import time

from PIL import Image

from arr_core.rewards import GroupOutcome, GroupRewarder, check_batch, rank_rewards


def _digest(*parts: bytes) -> int:
    h = hashlib.blake2b(digest_size=8)
    for p in parts:
        h.update(len(p).to_bytes(8, "little"))
        h.update(p)
    return int.from_bytes(h.digest(), "little")


class FixedLatencyRewarder:
    """Stand-in judge for throughput benchmarks: sleeps ``latency_s`` per batch call, then declares
    a winner per group chosen by a hash of (seed, prompt, image bytes) — deterministic and stateless,
    so an interrupted and resumed run sees the same rewards."""

    def __init__(self, latency_s: float = 0.0, seed: int = 0) -> None:
        if latency_s < 0:
            raise ValueError(f"latency_s must be >= 0, got {latency_s}")
        self.latency_s, self.seed = latency_s, seed

    async def score(self, prompts: list[str], groups: list[list[Image.Image]],
                    sources: list[Image.Image] | None = None) -> list[GroupOutcome]:
        check_batch(prompts, groups, sources)
        t0 = time.perf_counter()
        if self.latency_s > 0:
            await asyncio.sleep(self.latency_s)
        out = []
        for prompt, grp in zip(prompts, groups, strict=True):
            h = _digest(str(self.seed).encode(), prompt.encode(), *(im.tobytes() for im in grp))
            order = list(range(len(grp)))
            random.Random(h).shuffle(order)
            ranks = [0] * len(grp)
            for r, idx in enumerate(order):
                ranks[idx] = r + 1
            out.append(GroupOutcome(rank_rewards(ranks), "win", ranks, 0.0))
        lat = time.perf_counter() - t0
        for o in out:
            o.latency_s = lat
        return out


class ShuffledRewarder:
    """Control: scores with ``inner``, then permutes the outcomes among the batch's groups and the
    rewards within each group, so rewards carry no information about the images. The permutation is
    seeded by (seed, prompts), hence deterministic and stateless (resume-safe)."""

    def __init__(self, inner: GroupRewarder, seed: int = 0) -> None:
        self.inner, self.seed = inner, seed

    async def score(self, prompts: list[str], groups: list[list[Image.Image]],
                    sources: list[Image.Image] | None = None) -> list[GroupOutcome]:
        outs = await self.inner.score(prompts, groups, sources)
        rng = random.Random(_digest(str(self.seed).encode(), *(p.encode() for p in prompts)))
        perm = list(range(len(outs)))
        rng.shuffle(perm)
        shuffled = []
        for k in range(len(outs)):
            src = outs[perm[k]]
            g = len(groups[k])
            if len(src.rewards) != g:  # groups of unequal size: keep this group's own outcome
                src = outs[k]
            idx = list(range(g))
            rng.shuffle(idx)
            ranks = [src.ranks[i] for i in idx] if src.ranks is not None else None
            shuffled.append(GroupOutcome([src.rewards[i] for i in idx], src.outcome, ranks, outs[k].latency_s))
        return shuffled


def checker_score(prompt: str, image: Image.Image) -> float:
    """Scene-world reward: the share of the prompt's GenEval-format clauses the detector confirms."""
    return scene_verdict(prompt, image)[0]


def scene_verdict(prompt: str, image: Image.Image) -> tuple[float, float]:
    """(``checker_score``, confidence): the confidence is the lowest detection score among the image's
    objects (1 for an empty image, where nothing was uncertain), so noisy or blurred renders whose
    detections are shaky give low-confidence verdicts. ValueError for a prompt outside the world."""
    from arr_core.sim.world import check_spec, detect
    from arr_core.sim.world.grammar import parse_prompt

    spec = parse_prompt(prompt)
    if spec is None:
        raise ValueError(f"prompt {prompt!r} is not a scene-world prompt; the scene checker cannot score it")
    dets = detect(image)
    res = check_spec(spec, dets)
    score = sum(c["passed"] for c in res["clauses"]) / max(1, len(res["clauses"]))
    return score, min((float(d.score) for d in dets), default=1.0)
