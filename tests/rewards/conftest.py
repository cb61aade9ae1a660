"""Shared fixtures of the reward tests: one torch thread for the toy training runs, the reference HTTP
reward model (benchmarks/reward_http_reference.py) as an app to serve on 127.0.0.1, and ``render_pair``
(scene renders; test files import it)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture()
def one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture()
def reference_app():
    """A fresh app of the reference reward server (its request counter starts at 0)."""
    spec = importlib.util.spec_from_file_location("reward_http_reference", ROOT / "benchmarks" / "reward_http_reference.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.create_app()


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

