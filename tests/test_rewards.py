"""Group rewarders: paper reward mapping, ties/abstentions, determinism, the shuffled control."""

from __future__ import annotations

import asyncio
import time

import pytest
from PIL import Image

from arr_core.rewards import CallableRewarder, rank_rewards
from arr_core.sim.rewards import FixedLatencyRewarder, ShuffledRewarder


def _img(value: int) -> Image.Image:
    return Image.new("RGB", (8, 8), (value, 0, 0))


def test_rank_rewards_paper_mapping() -> None:
    assert rank_rewards([1, 2]) == [1.0, -0.1]
    assert rank_rewards([2, 1]) == [-0.1, 1.0]
    assert rank_rewards([3, 1, 2]) == pytest.approx([-0.1, 1.0, 0.45])  # linear 1.0 → −0.1
    with pytest.raises(ValueError, match="permutation"):
        rank_rewards([1, 1])


def test_callable_rewarder_win_tie_abstain() -> None:
    r = CallableRewarder(lambda p, im: float(im.getpixel((0, 0))[0]))
    outs = asyncio.run(r.score(["a", "b", "c"], [[_img(10), _img(200)], [_img(5), _img(5)],
                                                 [_img(1), _img(2)]]))
    assert outs[0].outcome == "win" and outs[0].rewards == [-0.1, 1.0] and outs[0].ranks == [2, 1]
    assert outs[1].outcome == "tie" and outs[1].rewards == [0.0, 0.0] and outs[1].ranks is None
    nan = CallableRewarder(lambda p, im: float("nan"))
    (o,) = asyncio.run(nan.score(["a"], [[_img(1), _img(2)]]))
    assert o.outcome == "abstain" and o.rewards == [0.0, 0.0]
    # G = 3 with two equal best scores: they share the mean of rank-1 and rank-2 rewards.
    (o,) = asyncio.run(r.score(["a"], [[_img(9), _img(9), _img(1)]]))
    assert o.rewards == pytest.approx([0.725, 0.725, -0.1])
    with pytest.raises(ValueError, match="2 prompts but 1 groups"):
        asyncio.run(r.score(["a", "b"], [[_img(1), _img(2)]]))


def test_fixed_latency_rewarder_is_deterministic_and_waits() -> None:
    r = FixedLatencyRewarder(latency_s=0.05, seed=3)
    groups = [[_img(k), _img(k + 1)] for k in range(20)]
    prompts = [f"p{k}" for k in range(20)]
    t0 = time.perf_counter()
    a = asyncio.run(r.score(prompts, groups))
    assert time.perf_counter() - t0 >= 0.05
    b = asyncio.run(r.score(prompts, groups))
    assert [o.rewards for o in a] == [o.rewards for o in b]
    assert all(sorted(o.rewards) == [-0.1, 1.0] and o.outcome == "win" for o in a)
    assert a[0].latency_s >= 0.05
    # Not a constant winner position.
    assert len({tuple(o.ranks) for o in a}) == 2


def test_shuffled_rewarder_keeps_reward_multiset_and_breaks_the_signal() -> None:
    inner = CallableRewarder(lambda p, im: float(im.getpixel((0, 0))[0]))
    groups = [[_img(2 * k), _img(2 * k + 1)] for k in range(40)]  # the second image always wins
    prompts = [f"p{k}" for k in range(40)]
    outs = asyncio.run(ShuffledRewarder(inner, seed=1).score(prompts, groups))
    again = asyncio.run(ShuffledRewarder(inner, seed=1).score(prompts, groups))
    assert [o.rewards for o in outs] == [o.rewards for o in again]
    assert sorted(r for o in outs for r in o.rewards) == sorted([1.0, -0.1] * 40)
    second_wins = sum(o.rewards[1] == 1.0 for o in outs)
    assert 8 < second_wins < 32  # ~ half, not 40: the reward no longer tracks the image
