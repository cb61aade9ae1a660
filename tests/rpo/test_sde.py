"""SDE step maths against diffusers' Euler scheduler, torch.distributions and hand-derived values."""

from __future__ import annotations

import math

import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler

from arr_core.rpo.sde import analytic_kl, flow_grpo_sigma, sde_mean_std, sde_step, step_log_prob

pytestmark = pytest.mark.usefixtures("one_thread")


def _scheduler_sigmas(n: int) -> tuple[FlowMatchEulerDiscreteScheduler, torch.Tensor]:
    sched = FlowMatchEulerDiscreteScheduler(shift=3.0)
    sched.set_timesteps(n)
    return sched, sched.sigmas.float()


@pytest.mark.parametrize("kind,kw", [("ode", {}), ("flow_grpo", {"a": 0.0}), ("dance_grpo", {"eta": 0.0})])
def test_zero_noise_equals_scheduler_euler_step(kind: str, kw: dict) -> None:
    n = 6
    sched, sigmas = _scheduler_sigmas(n)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 8, 8, generator=g)
    for i, t in enumerate(sched.timesteps):
        v = torch.randn(x.shape, generator=g)
        expect = sched.step(v, t, x, return_dict=False)[0]
        got, mean, _ = sde_step(x, v, sigmas[i], sigmas[i + 1], kind=kind, noise=torch.zeros_like(x), **kw)
        # Same fp32 formula x + Δ·v; the a = 0 / η = 0 forms add exact zeros.
        torch.testing.assert_close(got, expect, rtol=0, atol=1e-6)
        torch.testing.assert_close(mean, got, rtol=0, atol=0)
        x = expect


def test_hand_derived_flow_grpo_and_dance_grpo() -> None:
    x = torch.ones(1, 3)
    v = torch.full((1, 3), 0.5)
    # Flow-GRPO, t = 0.5, next 0.25, a = 0.7: σ_t = 0.7; Δ = −0.25
    # μ = 1·(1 + 0.49/1·(−0.25)) + 0.5·(1 + 0.49·0.5/1)·(−0.25) = 0.8775 − 0.155625; s = 0.7·0.5
    mean, std = sde_mean_std(x, v, 0.5, 0.25, kind="flow_grpo", a=0.7)
    torch.testing.assert_close(mean, torch.full((1, 3), 0.721875), rtol=0, atol=1e-6)
    assert float(std) == pytest.approx(0.35, abs=1e-7)
    # DanceGRPO, η = 0.3: μ = 1 − 0.125 + (−0.25)·0.045·(1 + 0.5·0.5)/0.5 = 0.875 − 0.028125; s = 0.3·0.5
    mean, std = sde_mean_std(x, v, 0.5, 0.25, kind="dance_grpo", eta=0.3)
    torch.testing.assert_close(mean, torch.full((1, 3), 0.846875), rtol=0, atol=1e-6)
    assert float(std) == pytest.approx(0.15, abs=1e-7)


def test_flow_grpo_sigma_at_one_uses_next_sigma() -> None:
    assert float(flow_grpo_sigma(0.5, 0.7)) == pytest.approx(0.7)
    # t = 1 → denominator 1 − σ₁ = 0.2: 0.9·sqrt(1/0.2)
    assert float(flow_grpo_sigma(1.0, 0.9, t_at_one=0.8)) == pytest.approx(0.9 * math.sqrt(5.0), rel=1e-6)
    with pytest.raises(ValueError, match="t_at_one"):
        flow_grpo_sigma(1.0, 0.9)
    # The SDE step leaving σ = 1 is finite.
    x = torch.randn(2, 5)
    x1, mean, std = sde_step(x, torch.randn(2, 5), 1.0, 0.8, generator=torch.Generator().manual_seed(1))
    assert torch.isfinite(x1).all() and torch.isfinite(mean).all()
    assert float(std) == pytest.approx(0.7 * math.sqrt(5.0) * math.sqrt(0.2), rel=1e-6)


def test_step_noise_is_mean_plus_std_times_noise() -> None:
    x, v, eps = torch.randn(3, 2, 4), torch.randn(3, 2, 4), torch.randn(3, 2, 4)
    sig_i, sig_n = torch.tensor([0.9, 0.6, 0.3]), torch.tensor([0.7, 0.4, 0.1])  # per-sample σ
    x1, mean, std = sde_step(x, v, sig_i, sig_n, noise=eps)
    torch.testing.assert_close(x1, mean + std * eps, rtol=0, atol=0)
    assert std.shape == (3, 1, 1)
    for b in range(3):
        _, m_b, s_b = sde_step(x[b:b + 1], v[b:b + 1], float(sig_i[b]), float(sig_n[b]), noise=eps[b:b + 1])
        torch.testing.assert_close(mean[b:b + 1], m_b, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(std[b].reshape(()), s_b.reshape(()), rtol=1e-6, atol=0)


def test_log_prob_matches_torch_normal_mean_over_elements() -> None:
    g = torch.Generator().manual_seed(3)
    x, v = torch.randn(4, 16, 8, generator=g), torch.randn(4, 16, 8, generator=g)
    x1, mean, std = sde_step(x, v, 0.7, 0.5, kind="flow_grpo", generator=g)
    expect = torch.distributions.Normal(mean, std.expand_as(mean)).log_prob(x1).mean(dim=(1, 2))
    torch.testing.assert_close(step_log_prob(x1, mean, std), expect, rtol=1e-6, atol=1e-6)
    # Hand value: x_next = mean, s = 1 → −0.5·log(2π) for every sample.
    lp = step_log_prob(torch.zeros(2, 3), torch.zeros(2, 3), 1.0)
    torch.testing.assert_close(lp, torch.full((2,), -0.5 * math.log(2 * math.pi)), rtol=0, atol=1e-7)
    with pytest.raises(ValueError, match="std must be > 0"):
        step_log_prob(x1, mean, torch.tensor(0.0))


def test_analytic_kl() -> None:
    g = torch.Generator().manual_seed(4)
    m = torch.randn(3, 10, generator=g)
    assert torch.equal(analytic_kl(m, m, 0.3), torch.zeros(3))
    # Equal-variance Gaussians: KL per element = (Δμ)²/(2s²); Δμ = 0.2, s = 0.5 → 0.08.
    kl = analytic_kl(m + 0.2, m, 0.5)
    torch.testing.assert_close(kl, torch.full((3,), 0.08), rtol=0, atol=1e-6)
    p = torch.distributions.Normal(m + 0.2, 0.5)
    q = torch.distributions.Normal(m, 0.5)
    torch.testing.assert_close(kl, torch.distributions.kl_divergence(p, q).mean(dim=1), rtol=1e-5, atol=1e-6)


def test_bad_input_raises() -> None:
    x = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="sigma_next must be smaller"):
        sde_step(x, x, 0.5, 0.5)
    with pytest.raises(ValueError, match="kind must be one of"):
        sde_step(x, x, 0.5, 0.2, kind="ddim")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="same shape"):
        sde_step(x, torch.zeros(2, 4), 0.5, 0.2)
