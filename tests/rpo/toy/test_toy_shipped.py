"""The shipped base checkpoint loads and has learned the scene world (a "learned something" test).

GenEval-format accuracy alone cannot show learning here: an untrained policy's noise images score
0.375 on the fixed set below because the scene detector reads noise as many objects (single- and
two-object prompts pass on "at least one X"). Learning is therefore tested on denoising error
against real renders, and accuracy against a floor below the shipped checkpoint's measured value.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from arr_core.rpo.adapters.toy import ToyPolicy
from arr_core.rpo.toy_eval import geneval_accuracy, heldout_specs
from arr_core.rpo.toy_pretrain import make_batch

# Measured with the shipped checkpoint (docs/toy.md): 0.167 on 4 prompts per tag (seed 777) × seeds
# (0, 1), 8 ODE steps. The floor sits below it so that float differences across CPUs cannot flip it.
SHIPPED_FLOOR = 0.10


@pytest.fixture(scope="module")
def shipped() -> ToyPolicy:
    return ToyPolicy.load()


def test_shipped_checkpoint_loads_with_its_pretraining_facts(shipped):
    d = shipped.describe()
    assert d["source"] == "arr_core/rpo/assets/toy_policy"
    assert d["pretrain"]["steps"] >= 100 and "eval" in d["pretrain"]


def _x0_error(policy: ToyPolicy, sigma: float) -> float:
    prompts, x0, _ = make_batch(np.random.default_rng(2024), 16, 32, defect_rate=0.0)
    eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(7))
    xs = (1 - sigma) * x0 + sigma * eps
    with torch.no_grad():
        x0_hat = policy.predict_x0(xs, torch.full((16,), sigma), policy.encode(prompts))
    return float(((x0_hat - x0) ** 2).mean())


@pytest.mark.parametrize("sigma", [0.3, 0.6])
def test_shipped_checkpoint_denoises_scene_renders(shipped, sigma):
    prompts, x0, _ = make_batch(np.random.default_rng(2024), 16, 32, defect_rate=0.0)
    # Trivial baseline: each image's own mean colour (knows the background, not the objects).
    mean_baseline = float(((x0.mean(dim=(2, 3), keepdim=True) - x0) ** 2).mean())
    trained = _x0_error(shipped, sigma)
    untrained = _x0_error(ToyPolicy.random(seed=0), sigma)
    assert trained < 0.8 * mean_baseline
    assert trained < 0.25 * untrained


def test_shipped_checkpoint_accuracy_floor(shipped):
    res = geneval_accuracy(shipped, heldout_specs(4, seed=777), seeds=(0, 1), steps=8)
    assert res["n"] == 48 and set(res["per_tag"]) == {
        "single_object", "two_object", "counting", "colors", "position", "color_attr"}
    assert res["overall"] >= SHIPPED_FLOOR
