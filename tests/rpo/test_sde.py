"""SDE step maths against diffusers' Euler scheduler, torch.distributions and hand-derived values."""

from __future__ import annotations

import math

import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler

from arr_core.rpo.sde import (
    analytic_kl,
    block_coords,
    block_project,
    flow_grpo_sigma,
    sde_mean_std,
    sde_step,
    step_log_prob,
)

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


def test_block_projection_is_orthogonal_and_block_one_is_the_identity() -> None:
    g = torch.Generator().manual_seed(5)
    z, w = torch.randn(2, 3, 8, 8, generator=g), torch.randn(2, 3, 8, 8, generator=g)
    p = block_project(z, 4)
    torch.testing.assert_close(block_project(p, 4), p, rtol=0, atol=1e-6)  # idempotent
    # symmetric: <Pz, w> = <z, Pw>; and z − Pz is orthogonal to the subspace
    torch.testing.assert_close((p * w).sum(), (z * block_project(w, 4)).sum(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close((block_project(w, 4) * (z - p)).sum(), torch.tensor(0.0), rtol=0, atol=1e-4)
    assert p[0, 0, :4, :4].unique().numel() == 1  # constant on each 4 × 4 tile
    # the coordinates are those of an orthonormal basis: |coords(Pz)| = |Pz|
    torch.testing.assert_close(block_coords(p, 4).pow(2).sum(), p.pow(2).sum(), rtol=1e-5, atol=1e-5)
    assert block_project(z, 1) is z and block_coords(z, 1) is z
    x, v = torch.randn(2, 3, 8, 8, generator=g), torch.randn(2, 3, 8, 8, generator=g)
    t, dt = torch.tensor(0.8), torch.tensor(0.6) - 0.8
    st = 0.7 * torch.sqrt(t / (1 - t))
    reference = {  # the references' formulas, written out
        "flow_grpo": (x * (1 + st**2 / (2 * t) * dt) + v * (1 + st**2 * (1 - t) / (2 * t)) * dt, st * torch.sqrt(-dt)),
        "dance_grpo": (x + dt * v + dt * (0.3**2 / 2) * (x + (1 - t) * v) / t, 0.3 * torch.sqrt(-dt)),
    }
    for kind, (m_ref, s_ref) in reference.items():  # block 1 keeps the reference formula exactly
        eps = torch.randn(x.shape, generator=g)
        x1, mean, std = sde_step(x, v, 0.8, 0.6, kind=kind, noise=eps, noise_block=1)
        torch.testing.assert_close(mean, m_ref, rtol=0, atol=1e-6)
        torch.testing.assert_close(x1, m_ref + s_ref * eps, rtol=0, atol=1e-6)
        x1, mean, std = sde_step(x, v, 0.8, 0.6, kind=kind, noise=eps, noise_block=4)
        torch.testing.assert_close(x1 - mean, std * block_project(eps, 4), rtol=0, atol=1e-6)


def test_block_noise_log_prob_is_the_density_of_the_subspace_coordinates() -> None:
    g = torch.Generator().manual_seed(6)
    x, v = torch.randn(3, 3, 8, 8, generator=g), torch.randn(3, 3, 8, 8, generator=g)
    x1, mean, std = sde_step(x, v, 0.9, 0.7, generator=g, noise_block=2)
    coords = 2 * torch.nn.functional.avg_pool2d(x1 - mean, 2)  # (3, 3, 4, 4)
    expect = torch.distributions.Normal(0.0, float(std)).log_prob(coords).mean(dim=(1, 2, 3))
    torch.testing.assert_close(step_log_prob(x1, mean, std, noise_block=2), expect, rtol=1e-6, atol=1e-6)


def _gaussian_data_velocity(x: torch.Tensor, t: float, c: float) -> torch.Tensor:
    """Exact v = E[ε − x₀ | x_t] for data x₀ ~ N(0, c²) per element, x_t = (1−t)·x₀ + t·ε."""
    return x * (t - (1 - t) * c**2) / ((1 - t) ** 2 * c**2 + t**2)


def test_block_noise_sde_keeps_the_data_distribution() -> None:
    # Sampling N(0, c²) data with its exact velocity: the ODE and both SDEs must end near variance c²
    # and with uncorrelated neighbouring elements. Block noise with the *unprojected* score correction
    # (what one gets by only projecting the noise) collapses the variance: the check can fail.
    c, n = 0.5, 50
    sig = torch.linspace(1, 0, n + 1)
    finals = {}
    for mode in ("ode", "iso", "block", "unprojected"):
        g = torch.Generator().manual_seed(1)
        x = torch.randn(20000, 1, 8, 8, generator=g)
        for i in range(n):
            t, tn = float(sig[i]), float(sig[i + 1])
            v = _gaussian_data_velocity(x, t, c)
            if mode == "ode":
                x = x + (tn - t) * v
            elif mode == "unprojected":
                m, s = sde_mean_std(x, v, t, tn)
                x = m + s * block_project(torch.randn(x.shape, generator=g), 4)
            else:
                x = sde_step(x, v, t, tn, generator=g, noise_block=4 if mode == "block" else 1)[0]
        finals[mode] = x.reshape(x.shape[0], -1)
    for mode in ("ode", "iso", "block"):
        f = finals[mode]
        assert abs(float(f.var(dim=0).mean()) - c**2) < 0.02, (mode, float(f.var(dim=0).mean()))
        assert abs(float((f[:, 0] * f[:, 1]).mean())) < 0.01, mode  # same 4 × 4 tile
    assert float(finals["unprojected"].var(dim=0).mean()) < 0.05  # measured 0.024: about 10x too small


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
    with pytest.raises(ValueError, match=r"needs image-shaped latents .* got shape \(2, 3\)"):
        sde_step(x, x, 0.5, 0.2, noise_block=2)
    img = torch.zeros(1, 3, 6, 6)
    with pytest.raises(ValueError, match=r"noise_block 4 must divide the latent height and width \(6, 6\)"):
        sde_step(img, img, 0.5, 0.2, noise_block=4)
    with pytest.raises(ValueError, match="noise_block must be >= 1"):
        sde_step(img, img, 0.5, 0.2, noise_block=0)
