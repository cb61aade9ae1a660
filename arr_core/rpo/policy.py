"""The policy seam: what the RPO trainer needs from a flow-matching image model.

Shapes: b = batch, c/h/w = latent channels/height/width (or packed tokens for FLUX: b, n, d).
Convention (rectified flow): x_σ = (1−σ)·x₀ + σ·ε, the network predicts v ≈ ε − x₀, and sampling
goes from σ = 1 to σ = 0.
"""

from __future__ import annotations

from typing import Any, Protocol

import torch
from PIL import Image

# Conditioning tensors, batch dimension first, so a batch can be indexed/repeated key by key.
Cond = dict[str, torch.Tensor]


def index_cond(cond: Cond, idx: torch.Tensor) -> Cond:
    """Select/repeat batch rows of every conditioning tensor (e.g. ``repeat_interleave`` for G)."""
    return {k: v.index_select(0, idx.to(v.device)) for k, v in cond.items()}


class Policy(Protocol):
    name: str
    # The module that receives the LoRA adapter (a diffusers transformer/UNet).
    transformer: torch.nn.Module
    # Default LoRA target module names for this architecture.
    lora_targets: list[str]

    def encode(self, prompts: list[str], conditions: list[Image.Image] | None = None) -> Cond:
        """Text (and, for editing, source-image) conditioning for a batch of prompts."""
        ...

    def initial_latents(self, batch: int, generator: torch.Generator) -> torch.Tensor:
        """Pure noise at σ = 1, fp32, on the policy's device."""
        ...

    def sigmas(self, num_steps: int) -> torch.Tensor:
        """(num_steps + 1,) fp32 noise levels from 1 down to 0 (the final entry is 0)."""
        ...

    def velocity(self, latents: torch.Tensor, sigma: torch.Tensor, cond: Cond) -> torch.Tensor:
        """Predicted velocity at noise level ``sigma`` (b,), same shape as ``latents``."""
        ...

    def decode(self, latents: torch.Tensor) -> list[Image.Image]:
        """Latents at σ = 0 → RGB images."""
        ...

    def describe(self) -> dict[str, Any]:
        """Small JSON-able description (class, size, source folder) for lineage."""
        ...
