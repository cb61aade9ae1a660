"""JudgeRewarder: the rubric-conditioned judge behind the RPO GroupRewarder protocol."""

from __future__ import annotations

import asyncio

import pytest
from PIL import Image

from arr_core.judge.reward import JudgeRewarder, group_key
from arr_core.rewards import GroupOutcome
from arr_core.rubrics.rubric_set import RubricSet
from arr_core.sim.scene_vlm import SceneVLM
from arr_core.sim.world.grammar import sample_spec
from arr_core.sim.world.render import render
from arr_core.sim.world.scene import apply_defects, scene_from_spec
from arr_core.vlm.client import VLMClient


def _group(seed: int, defects_b: list[str]) -> tuple[str, list[Image.Image]]:
    """A prompt, a clean render and a render with ``defects_b`` (64 px, seeded)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    spec = sample_spec(rng, "counting")
    clean = scene_from_spec(spec, rng)
    bad = apply_defects(scene_from_spec(spec, rng), spec, defects_b, rng)
    return spec.prompt, [render(clean, 64, seed=seed), render(bad, 64, seed=seed + 1)]


RUBRICS = RubricSet.from_text("Rubric 1:\nTheme: Objects\n- Tip: Each object appears exactly the number "
                              "of times the caption states.\n- Tip: Every object named in the caption is "
                              "present in the image; none is missing.\n")


def test_rewarder_scores_groups_with_paper_rewards():
    prompts, groups = [], []
    for s in range(4):
        p, g = _group(s, ["wrong_count"])
        prompts.append(p)
        groups.append(g)
    rewarder = JudgeRewarder(VLMClient(SceneVLM(seed=0), cache_mode="off"), RUBRICS, "t2i", order="swap")
    outs = asyncio.run(rewarder.score(prompts, groups))
    assert len(outs) == 4 and all(isinstance(o, GroupOutcome) for o in outs)
    for o in outs:
        assert o.outcome in ("win", "tie", "abstain")
        if o.outcome == "win":
            assert sorted(o.rewards) == [-0.1, 1.0] and sorted(o.ranks) == [1, 2]
        else:
            assert o.rewards == [0.0, 0.0] and o.ranks is None
    # the clean image should win most groups when the rubric names the count
    assert sum(o.outcome == "win" and o.rewards[0] == 1.0 for o in outs) >= 3


def test_rewarder_listwise_uses_linear_mapping():
    p, g = _group(11, ["wrong_count"])
    rewarder = JudgeRewarder(VLMClient(SceneVLM(seed=0), cache_mode="off"), RUBRICS, "t2i", order="single")
    [o] = asyncio.run(rewarder.score([p], [[g[0], g[1], g[1].rotate(90)]]))
    assert o.outcome == "win"
    assert sorted(o.rewards) == pytest.approx([-0.1, 0.45, 1.0])


def test_rewarder_input_errors():
    client = VLMClient(SceneVLM(seed=0), cache_mode="off")
    p, g = _group(3, ["blur"])
    with pytest.raises(ValueError, match="sources"):
        asyncio.run(JudgeRewarder(client, None, "edit").score([p], [g]))
    with pytest.raises(ValueError, match="G >= 2"):
        asyncio.run(JudgeRewarder(client, None, "t2i").score([p], [g[:1]]))
    with pytest.raises(ValueError, match="task"):
        JudgeRewarder(client, RUBRICS, "edit")
    assert group_key(p, g, None) == group_key(p, [im.copy() for im in g], None)
    assert group_key(p, g, None) != group_key(p, g[::-1], None)
