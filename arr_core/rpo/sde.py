"""One stochastic (SDE) sampling step of a rectified-flow model, with its Gaussian log-probability.

Convention (as in diffusers' ``FlowMatchEulerDiscreteScheduler``): x_σ = (1−σ)·x₀ + σ·ε, the network
predicts v ≈ ε − x₀, sampling runs σ₀ = 1 > σ₁ > … > σ_N = 0, and Euler's step is
x_{i+1} = x_i + (σ_{i+1} − σ_i)·v.

Two noise schedules turn the probability-flow ODE into an SDE with the same marginals, so every step
is a Gaussian policy π(x_{i+1} | x_i) = N(μ, s²) whose log-density the RL objective needs:

* ``flow_grpo`` — Flow-GRPO (Liu et al., 2025, "Flow-GRPO: Training Flow Matching Models via Online
  RL"), σ_t = a·sqrt(t/(1−t)); with Δ = σ_{i+1} − σ_i < 0 and t = σ_i:
  μ = x·(1 + σ_t²·Δ/(2t)) + v·(1 + σ_t²·(1−t)/(2t))·Δ,  s = σ_t·sqrt(−Δ).
  At t = 1 the schedule diverges; like the reference code we use 1 − σ₁ in the denominator, and σ₁ is
  the step's own σ_{i+1} (the step leaving σ = 1 is always step 0).
* ``dance_grpo`` — DanceGRPO (Xue et al., 2025), constant η:
  μ = x + Δ·v + Δ·(η²/2)·(x + (1−σ)·v)/σ,  s = η·sqrt(σ_i − σ_{i+1}).
* ``ode`` — plain Euler (s = 0); for evaluation, never for training (its log-density is undefined).

All maths is fp32 whatever the network's dtype (precision drift between rollout and training is a
known source of ratios ≠ 1). Step indices are integers carried with the trajectory; σ values are read
from the policy's ``sigmas()`` table by index, never looked up from a float timestep.

Block noise (``noise_block`` b > 1, our extension; image-shaped latents (batch, c, h, w) only). The
step noise is s·P·ε with P the orthogonal projection onto images that are constant on b × b tiles
(average over each tile, then repeat it), so the policy explores only the c·(h/b)·(w/b) coarse
directions in which early steps decide where objects go and what shape they take. Any diffusion
matrix D gives a reverse SDE with the probability-flow ODE's marginals if the drift carries −½·D·∇log p;
with D = σ_t²·P the score correction of the two schedules above is projected by P too (tested: a
Gaussian data distribution is reproduced). The step is then Gaussian in the subspace and
deterministic outside it: ``step_log_prob`` is the density of the residual's b·(tile mean)
coordinates (an orthonormal basis of the subspace), averaged over them. The policy-gradient estimate
no longer carries the noise of the h·w·c − c·(h/b)·(w/b) fine directions, which for a shape decision
are irrelevant. ``analytic_kl`` stays the full-dimensional quadratic mean((μ_θ − μ_ref)²)/(2·s²): it
is then a trust region on the whole step mean rather than the exact KL of the degenerate Gaussians
(which is infinite as soon as the means differ outside the subspace).

Deviation from the references: ``analytic_kl`` is the exact KL between the two per-element Gaussians,
mean((μ_θ − μ_ref)²)/(2·s²) with the step's own s = σ_t·sqrt(−Δ); Flow-GRPO divides by σ_t² (no Δ),
which is the same quantity scaled by −Δ per step. ARR's released code uses β·(log π_θ − log π_ref) of
the sampled latent instead, whose expected gradient is zero on-policy.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F

NoiseKind = Literal["flow_grpo", "dance_grpo", "ode"]
_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)


def _as_batch(value: torch.Tensor | float, ref: torch.Tensor) -> torch.Tensor:
    """A scalar or (b,) tensor → fp32 tensor broadcastable against ``ref`` (b, ...)."""
    t = torch.as_tensor(value, dtype=torch.float32, device=ref.device)
    if t.ndim == 0:
        return t
    if t.ndim != 1 or t.shape[0] != ref.shape[0]:
        raise ValueError(f"sigma must be a scalar or have shape ({ref.shape[0]},), got {tuple(t.shape)}")
    return t.view(-1, *([1] * (ref.ndim - 1)))


def flow_grpo_sigma(t: torch.Tensor | float, a: float, *, t_at_one: torch.Tensor | float | None = None
                    ) -> torch.Tensor:
    """Flow-GRPO's noise level σ_t = a·sqrt(t/(1−t)) (fp32).

    Where t == 1 the denominator uses 1 − ``t_at_one`` (the reference passes σ₁, the next σ); without
    ``t_at_one`` a t of 1 raises, since σ_t would be infinite.
    """
    if a < 0:
        raise ValueError(f"a must be >= 0, got {a}")
    t = torch.as_tensor(t, dtype=torch.float32)
    if bool((t < 0).any()) or bool((t > 1).any()):
        raise ValueError("t must lie in [0, 1]")
    at_one = t == 1
    if bool(at_one.any()):
        if t_at_one is None:
            raise ValueError("flow_grpo_sigma: t = 1 needs t_at_one (the next sigma, e.g. sigmas[1])")
        denom_t = torch.where(at_one, torch.as_tensor(t_at_one, dtype=torch.float32, device=t.device), t)
    else:
        denom_t = t
    return a * torch.sqrt(t / (1.0 - denom_t))


def _check_block(z: torch.Tensor, block: int) -> None:
    if block < 1:
        raise ValueError(f"noise_block must be >= 1, got {block}")
    if block > 1:
        if z.ndim != 4:
            raise ValueError(f"noise_block {block} needs image-shaped latents (batch, channels, height, width); "
                             f"got shape {tuple(z.shape)}")
        if z.shape[-1] % block or z.shape[-2] % block:
            raise ValueError(f"noise_block {block} must divide the latent height and width {tuple(z.shape[-2:])}")


def block_project(z: torch.Tensor, block: int) -> torch.Tensor:
    """Orthogonal projection of (batch, c, h, w) ``z`` onto images constant on block × block tiles
    (tile mean, repeated); the identity for ``block`` 1."""
    _check_block(z, block)
    if block == 1:
        return z
    return F.avg_pool2d(z, block).repeat_interleave(block, dim=-2).repeat_interleave(block, dim=-1)


def block_coords(z: torch.Tensor, block: int) -> torch.Tensor:
    """Coordinates of P·z in an orthonormal basis of the tile-constant subspace: block·(tile mean),
    shape (batch, c, h/block, w/block); ``z`` itself for ``block`` 1."""
    _check_block(z, block)
    return z if block == 1 else F.avg_pool2d(z, block) * block


def sde_mean_std(x: torch.Tensor, v: torch.Tensor, sigma_i: torch.Tensor | float,
                 sigma_next: torch.Tensor | float, *, kind: NoiseKind = "flow_grpo", a: float = 0.7,
                 eta: float = 0.3, noise_block: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean (shape of x) and std (scalar or (b, 1, ...), broadcastable) of π(x_{i+1} | x_i), fp32.

    x, v: (b, ...) latents and velocity at σ_i; sigma_i, sigma_next: scalars or (b,).
    ``noise_block`` > 1: the noise lives on block × block tiles and the score correction is
    projected onto them (module docstring).
    """
    if x.shape != v.shape:
        raise ValueError(f"x and v must have the same shape, got {tuple(x.shape)} and {tuple(v.shape)}")
    x = x.float()
    v = v.float()
    s_i = _as_batch(sigma_i, x)
    s_n = _as_batch(sigma_next, x)
    if bool((s_n >= s_i).any()):
        raise ValueError("sigma_next must be smaller than sigma_i (sampling runs from 1 down to 0)")
    dt = s_n - s_i  # Δ < 0
    if kind == "ode":
        return x + dt * v, torch.zeros_like(dt)
    _check_block(x, noise_block)
    if kind == "flow_grpo":
        std_t = flow_grpo_sigma(s_i, a, t_at_one=s_n)
        if noise_block == 1:
            mean = x * (1 + std_t**2 / (2 * s_i) * dt) + v * (1 + std_t**2 * (1 - s_i) / (2 * s_i)) * dt
        else:  # the same expression as x + Δ·v + Δ·σ_t²/(2t)·(x + (1−t)·v), correction projected
            mean = x + dt * v + dt * std_t**2 / (2 * s_i) * block_project(x + (1 - s_i) * v, noise_block)
        return mean, std_t * torch.sqrt(-dt)
    if kind == "dance_grpo":
        if eta < 0:
            raise ValueError(f"eta must be >= 0, got {eta}")
        mean = x + dt * v + dt * (eta**2 / 2) * block_project(x + (1 - s_i) * v, noise_block) / s_i
        return mean, eta * torch.sqrt(-dt)
    raise ValueError(f"kind must be one of flow_grpo, dance_grpo, ode; got {kind!r}")


def sde_step(x: torch.Tensor, v: torch.Tensor, sigma_i: torch.Tensor | float,
             sigma_next: torch.Tensor | float, *, kind: NoiseKind = "flow_grpo", a: float = 0.7,
             eta: float = 0.3, noise: torch.Tensor | None = None,
             generator: torch.Generator | None = None, noise_block: int = 1
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One SDE step: returns (x_next, mean, std), all fp32; x_next = mean + std·P·noise (P the block
    projection, the identity for ``noise_block`` 1).

    ``noise`` (shape of x) is used as given (zeros give the mean, i.e. Euler for ``ode``); otherwise
    standard normal noise is drawn from ``generator`` on x's device.
    """
    mean, std = sde_mean_std(x, v, sigma_i, sigma_next, kind=kind, a=a, eta=eta, noise_block=noise_block)
    if noise is None:
        noise = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=torch.float32)
    elif noise.shape != mean.shape:
        raise ValueError(f"noise must have shape {tuple(mean.shape)}, got {tuple(noise.shape)}")
    return mean + std * block_project(noise.float(), noise_block), mean, std


def step_log_prob(x_next: torch.Tensor, mean: torch.Tensor, std: torch.Tensor | float,
                  noise_block: int = 1) -> torch.Tensor:
    """(b,) Gaussian log-density of ``x_next`` under N(mean, std²), averaged over latent elements (fp32).

    The average (not the sum) is what Flow-GRPO/DanceGRPO use; it keeps ratios near 1 for large latents.
    ``noise_block`` > 1: the density of the residual's coordinates in the tile-constant subspace,
    averaged over those coordinates.
    """
    std = torch.as_tensor(std, dtype=torch.float32, device=mean.device)
    if bool((std <= 0).any()):
        raise ValueError("std must be > 0 (the ode step has no density; train with flow_grpo or dance_grpo)")
    diff = block_coords(x_next.detach().float() - mean.float(), noise_block)
    lp = -(diff**2) / (2 * std**2) - torch.log(std) - _LOG_SQRT_2PI
    lp = lp.expand_as(diff)
    return lp.mean(dim=tuple(range(1, lp.ndim)))


def analytic_kl(mean_theta: torch.Tensor, mean_ref: torch.Tensor, std: torch.Tensor | float) -> torch.Tensor:
    """(b,) KL(N(μ_θ, s²) ‖ N(μ_ref, s²)) per element, averaged: mean((μ_θ − μ_ref)²)/(2·s²)."""
    std = torch.as_tensor(std, dtype=torch.float32, device=mean_theta.device)
    if bool((std <= 0).any()):
        raise ValueError("std must be > 0")
    d2 = (mean_theta.float() - mean_ref.float()) ** 2 / (2 * std**2)
    d2 = d2.expand_as(mean_theta)
    return d2.mean(dim=tuple(range(1, d2.ndim)))


class StepTable:
    """The SDE step of one σ schedule, for the sampling loop: every per-step coefficient (Δ, σ_t, s,
    2·s², log s, …) is computed once, vectorised over the schedule, and the input checks run once here,
    so a step is a few elementwise kernels over the latent with no host synchronisation (no ``.item()``,
    no Python ``if`` on a tensor). Results are bit-identical to ``sde_step`` / ``step_log_prob`` /
    ``analytic_kl``: the same fp32 operations in the same order (each elementwise fp32 operation
    rounds the same way whether it runs on a scalar or on a vector of the schedule's values).

    ``sigmas``: (n + 1,) from 1 down to 0 on the latents' device. Step i is read by its integer index.
    """

    def __init__(self, sigmas: torch.Tensor, *, kind: NoiseKind = "flow_grpo", a: float = 0.7, eta: float = 0.3,
                 noise_block: int = 1) -> None:
        if kind not in ("flow_grpo", "dance_grpo", "ode"):
            raise ValueError(f"kind must be one of flow_grpo, dance_grpo, ode; got {kind!r}")
        if noise_block < 1:
            raise ValueError(f"noise_block must be >= 1, got {noise_block}")
        if eta < 0 and kind == "dance_grpo":
            raise ValueError(f"eta must be >= 0, got {eta}")
        sig = torch.as_tensor(sigmas, dtype=torch.float32)
        if sig.ndim != 1 or sig.shape[0] < 2:
            raise ValueError(f"sigmas must have shape (n + 1,) with n >= 1, got {tuple(sig.shape)}")
        t, t_next = sig[:-1], sig[1:]
        if bool((t_next >= t).any()):  # one host sync per table, none per step
            raise ValueError("sigma_next must be smaller than sigma_i (sampling runs from 1 down to 0)")
        self.kind, self.noise_block, self.sigmas = kind, noise_block, sig
        self.dt = t_next - t  # Δ < 0
        self.one_minus = 1 - t
        self.std = torch.zeros_like(self.dt)
        if kind == "flow_grpo":
            std_t = flow_grpo_sigma(t, a, t_at_one=t_next)  # checks t in [0, 1] once
            # noise_block 1: μ = x·c_x + (v·c_v)·Δ; else μ = x + Δ·v + k·P(x + (1−t)·v) (sde_mean_std's order)
            self.c_x = 1 + std_t**2 / (2 * t) * self.dt
            self.c_v = 1 + std_t**2 * (1 - t) / (2 * t)
            self.k = self.dt * std_t**2 / (2 * t)
            self.std = std_t * torch.sqrt(-self.dt)
        elif kind == "dance_grpo":
            self.k = self.dt * (eta**2 / 2)  # μ = x + Δ·v + k·P(x + (1−t)·v)/t
            self.std = eta * torch.sqrt(-self.dt)
        self.two_var = 2 * self.std**2
        self.log_std = torch.log(self.std)
        self._has_density = self.std > 0

    def check_density(self, steps: Sequence[int]) -> None:
        """Raise unless every step in ``steps`` has a density (std > 0); one host sync."""
        if steps and not bool(self._has_density[list(steps)].all()):
            raise ValueError("std must be > 0 (the ode step has no density; train with flow_grpo or dance_grpo)")

    def mean(self, i: int, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """μ of step i (fp32, shape of x); x, v (b, ...) at σ_i. No checks, no host sync."""
        x, v, dt = x.float(), v.float(), self.dt[i]
        if self.kind == "ode":
            return x + dt * v
        nb = self.noise_block
        if self.kind == "flow_grpo":
            if nb == 1:
                return x * self.c_x[i] + v * self.c_v[i] * dt
            return x + dt * v + self.k[i] * block_project(x + self.one_minus[i] * v, nb)
        return x + dt * v + self.k[i] * block_project(x + self.one_minus[i] * v, nb) / self.sigmas[i]

    def euler(self, i: int, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """The deterministic (ODE) step i: x + Δ·v (fp32)."""
        return x.float() + self.dt[i] * v.float()

    def sample(self, i: int, x: torch.Tensor, v: torch.Tensor, generator: torch.Generator | None = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """One stochastic step i: (x_next, log π(x_next | x) (b,)), all fp32; the noise is drawn from
        ``generator`` exactly as ``sde_step`` draws it."""
        mean = self.mean(i, x, v)
        noise = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=torch.float32)
        x_next = block_project(noise, self.noise_block).mul_(self.std[i]).add_(mean)  # = μ + s·P·ε
        return x_next, self.log_prob(i, x_next, mean)

    def log_prob(self, i: int, x_next: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
        """(b,) ``step_log_prob`` of step i without its checks (call ``check_density`` once)."""
        diff = block_coords(x_next.detach().float() - mean.float(), self.noise_block)
        lp = -(diff**2) / self.two_var[i] - self.log_std[i] - _LOG_SQRT_2PI
        return lp.mean(dim=tuple(range(1, lp.ndim)))

    def kl(self, i: int, mean_theta: torch.Tensor, mean_ref: torch.Tensor) -> torch.Tensor:
        """(b,) ``analytic_kl`` of step i without its checks."""
        d2 = (mean_theta.float() - mean_ref.float()) ** 2 / self.two_var[i]
        return d2.mean(dim=tuple(range(1, d2.ndim)))
