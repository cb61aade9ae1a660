"""Scene-world renders and the reward service app for the reward tests (a module with a unique name:
``conftest`` is ambiguous when several test folders are collected together)."""

from __future__ import annotations

import numpy as np
from PIL import Image


def render_pair(seed: int) -> tuple[str, Image.Image, Image.Image]:
    """A counting prompt of the scene world, a clean 64 px render and one with the wrong count."""
    from arr_core.sim.world.grammar import sample_spec
    from arr_core.sim.world.render import render
    from arr_core.sim.world.scene import apply_defects, scene_from_spec

    rng = np.random.default_rng(seed)
    spec = sample_spec(rng, "counting")
    clean = render(scene_from_spec(spec, rng), 64, seed=seed)
    wrong = render(apply_defects(scene_from_spec(spec, rng), spec, ["wrong_count"], rng), 64, seed=seed + 1)
    return spec.prompt, clean, wrong



def service_app(reward: dict, rubric_set: object, **settings: object) -> object:
    """The reward service's app for a training ``reward`` section and service settings."""
    from arr_core.recipes.reward_service import RewardServiceConfig, build_app

    return build_app(RewardServiceConfig.model_validate({"reward": reward, **settings}), rubric_set)[0]
