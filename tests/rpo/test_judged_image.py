"""The image the judge sees (``judged_image``): the clean estimate x̂₀ = x − σ·v of the last step
(default, as ARR's and DanceGRPO's code decode it), the last stochastic sample, or a deterministic
last step (Flow-GRPO); on-policy ratio 1 and KL 0 at init with each."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image
from rpo_train_helper import train

from arr_core.rewards import CallableRewarder
from arr_core.rpo.config import TrainConfig
from arr_core.rpo.lora import add_lora
from arr_core.rpo.trainer import rollout, set_eval_mode, step_terms

pytestmark = pytest.mark.usefixtures("one_thread")


def _cfg(**kw: Any) -> TrainConfig:
    base: dict[str, Any] = dict(policy={"kind": "toy"}, prompts={"source": "world"}, num_steps=4, group_size=2,
                                prompts_per_step=4, rollout_batch_size=2, lr=1e-2, sample_grid_every=0,
                                checkpoint_every=0, lora={"rank": 4, "alpha": 8})
    base.update(kw)
    return TrainConfig.model_validate(base)


class _Capture:
    """Wraps a policy's ``decode`` and keeps the latents it was given."""

    def __init__(self, policy: Any) -> None:
        self.latents: list[torch.Tensor] = []
        inner = policy.decode

        def decode(latents: torch.Tensor) -> list[Image.Image]:
            self.latents.append(latents.detach().clone())
            return inner(latents)

        policy.decode = decode


def _rollout(policy: Any, judged: str, mask: list[bool] | None = None, seed: int = 0):
    sig = policy.sigmas(4)
    return sig, rollout(policy, ["a red circle", "a blue square"], None, group_size=2, sigmas=sig,
                        generator=torch.Generator().manual_seed(seed), noise="flow_grpo", a=0.7, eta=0.3,
                        shared_initial_noise=False, bf16=False, sde_mask=mask, judged_image=judged)


def test_clean_estimate_is_x_minus_sigma_v_of_the_last_step(tiny_policy: Any) -> None:
    set_eval_mode(tiny_policy)
    cap = _Capture(tiny_policy)
    sig, ro = _rollout(tiny_policy, "clean_estimate")
    n = len(sig) - 1
    with torch.no_grad():  # the last step's velocity, recomputed at the same batch size
        v = tiny_policy.velocity(ro.latents[n - 1], sig[n - 1].expand(4), ro.cond).float()
    assert torch.equal(cap.latents[0], ro.latents[n - 1] - sig[n - 1] * v)
    assert not torch.equal(cap.latents[0], ro.latents[n])  # not the noisy last sample
    # The judged latent is the last step's Euler (ODE) result, as sigmas end at 0.
    assert float(sig[n]) == 0.0 and torch.equal(cap.latents[0], ro.latents[n - 1] + (sig[n] - sig[n - 1]) * v)

    _, old = _rollout(tiny_policy, "last_sample")  # same seed: same trajectory, other judged latent
    assert torch.equal(old.latents, ro.latents) and torch.equal(cap.latents[1], old.latents[n])


class _OraclePolicy:
    """A flow-matching "network" that knows its data point x₀: x_σ = (1−σ)·x₀ + σ·ε, so the exact
    velocity v = ε − x₀ = (x − x₀)/σ, and the clean estimate x − σ·v is x₀ whatever the noise."""

    name = "oracle"
    lora_targets: list[str] = []

    def __init__(self) -> None:
        self.x0 = torch.linspace(-1, 1, 2 * 3 * 4).reshape(1, 2, 3, 4)
        self.transformer = torch.nn.Identity()

    def encode(self, prompts: list[str], conditions: Any = None) -> dict[str, torch.Tensor]:
        return {"dummy": torch.zeros(len(prompts), 1)}

    def initial_latents(self, batch: int, generator: torch.Generator) -> torch.Tensor:
        return torch.randn(batch, 2, 3, 4, generator=generator)

    def sigmas(self, num_steps: int) -> torch.Tensor:
        return torch.linspace(1.0, 0.0, num_steps + 1)

    def velocity(self, latents: torch.Tensor, sigma: torch.Tensor, cond: Any) -> torch.Tensor:
        return (latents - self.x0) / sigma.view(-1, 1, 1, 1)

    def decode(self, latents: torch.Tensor) -> list[Image.Image]:
        return [Image.new("RGB", (2, 2)) for _ in range(latents.shape[0])]


@pytest.mark.parametrize("noise", ["flow_grpo", "dance_grpo"])
def test_with_the_exact_velocity_the_judge_sees_the_data_point(noise: str) -> None:
    policy = _OraclePolicy()
    cap = _Capture(policy)
    sig = policy.sigmas(4)
    kw = dict(group_size=2, sigmas=sig, generator=torch.Generator().manual_seed(0), noise=noise, a=0.7, eta=0.3,
              shared_initial_noise=False, bf16=False)
    ro = rollout(policy, ["p"], None, judged_image="clean_estimate", **kw)
    torch.testing.assert_close(cap.latents[0], policy.x0.expand(2, -1, -1, -1), rtol=0, atol=1e-5)
    # The last stochastic sample misses it by the last step's noise (std ≈ a·sqrt(σ/(1−σ))·sqrt(σ) here).
    assert (ro.latents[-1] - policy.x0).abs().max() > 0.05
    kw["generator"] = torch.Generator().manual_seed(0)
    rollout(policy, ["p"], None, judged_image="last_sample", **kw)
    assert torch.equal(cap.latents[1], ro.latents[-1])


def test_deterministic_last_step_is_an_euler_step_and_gives_the_same_image(tiny_policy: Any) -> None:
    set_eval_mode(tiny_policy)
    cap = _Capture(tiny_policy)
    mask = _cfg(judged_image="deterministic_last_step").sde_step_mask()
    assert mask == [True, True, True, False]
    _, det = _rollout(tiny_policy, "deterministic_last_step", mask)
    _, clean = _rollout(tiny_policy, "clean_estimate")
    assert torch.equal(det.log_probs[-1], torch.zeros(4))  # no density on the Euler step
    assert torch.equal(det.latents[:-1], clean.latents[:-1])  # same noise up to the last step
    assert torch.equal(cap.latents[0], det.latents[-1]) and torch.equal(cap.latents[0], cap.latents[1])
    # Where the last step is Euler anyway (e.g. sde_steps: trained), every option shows the same image.
    _rollout(tiny_policy, "last_sample", mask)
    _rollout(tiny_policy, "clean_estimate", mask)
    assert torch.equal(cap.latents[2], cap.latents[0]) and torch.equal(cap.latents[3], cap.latents[0])
    with pytest.raises(ValueError, match="needs sde_mask"):
        _rollout(tiny_policy, "deterministic_last_step")
    with pytest.raises(ValueError, match="judged_image must be"):
        _rollout(tiny_policy, "noisy")


@pytest.mark.parametrize("judged", ["clean_estimate", "last_sample", "deterministic_last_step"])
def test_on_policy_ratio_exactly_one_and_kl_zero_at_init(make_policy: Any, prompts: list[str], redness_fn: Any,
                                                          tmp_path: Path, judged: str) -> None:
    policy = make_policy(seed=0)
    peft_model = add_lora(policy.transformer, rank=4, alpha=8, targets=policy.lora_targets)
    set_eval_mode(policy)
    mask = _cfg(judged_image=judged).sde_step_mask()
    sig, ro = _rollout(policy, judged, mask)
    for i in range(3):  # the trained steps (all but the last)
        lp, kl = step_terms(policy, peft_model, ro, i, sig, noise="flow_grpo", a=0.7, eta=0.3, bf16=False,
                            need_ref=True)
        assert torch.equal(torch.exp(lp - ro.log_probs[i]), torch.ones(4)), (judged, i)
        assert torch.equal(kl, torch.zeros(4)), (judged, i)
    res = train(make_policy(seed=0), CallableRewarder(redness_fn), prompts, _cfg(steps=1, judged_image=judged),
                tmp_path, progress=None)
    m = json.loads(res.metrics_path.read_text().splitlines()[0])
    assert m["ratio_mean"] == 1.0 and m["ratio_max"] == 1.0 and m["kl"] == 0.0 and m["grad_norm"] > 0
    assert json.loads((tmp_path / "config.json").read_text())["judged_image"] == judged


def test_the_judged_image_changes_the_rewards_and_the_digest(make_policy: Any, prompts: list[str],
                                                              redness_fn: Any, tmp_path: Path) -> None:
    from arr_core.recipes.rpo import config_digest

    seen: dict[str, list[float]] = {}
    for judged in ("clean_estimate", "last_sample"):
        rewards: list[float] = []

        def score(prompt: str, image: Image.Image, _r: list[float] = rewards) -> float:
            _r.append(redness_fn(prompt, image))
            return _r[-1]

        train(make_policy(seed=0), CallableRewarder(score), prompts, _cfg(steps=1, judged_image=judged),
              tmp_path / judged, progress=None)
        seen[judged] = rewards
    assert len(seen["clean_estimate"]) == len(seen["last_sample"]) == 8
    assert seen["clean_estimate"] != seen["last_sample"]  # the judge saw other images
    assert config_digest(_cfg()) != config_digest(_cfg(judged_image="last_sample"))
