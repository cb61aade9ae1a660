"""A tiny real FLUX transformer wrapped as a ``Policy`` for the trainer tests (no adapter dependency).

Text conditioning is a fixed, seeded byte-embedding table (no text encoder: keeps tests fast); the
transformer is a real ``FluxTransformer2DModel`` at the NOTES.md tiny size; decoding maps the first
three latent channels to RGB (no VAE). Everything is CPU, fp32, seeded.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from diffusers import FluxTransformer2DModel
from PIL import Image

from arr_core.rpo.policy import Cond

FLUX_ATTN_TARGETS = ["attn.to_q", "attn.to_k", "attn.to_v", "attn.to_out.0",
                     "attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj", "attn.to_add_out"]


def tiny_flux_transformer(seed: int = 0) -> FluxTransformer2DModel:
    torch.manual_seed(seed)
    return FluxTransformer2DModel(patch_size=1, in_channels=16, num_layers=1, num_single_layers=1,
                                  attention_head_dim=16, num_attention_heads=2, joint_attention_dim=32,
                                  pooled_projection_dim=32, guidance_embeds=True, axes_dims_rope=(4, 6, 6))


class TinyFluxPolicy:
    """Packed latents (b, n, 16) for a (latent_side × latent_side × 4) latent, n = (latent_side/2)²."""

    name = "tiny-flux-test"
    lora_targets = FLUX_ATTN_TARGETS

    def __init__(self, seed: int = 0, latent_side: int = 4, text_len: int = 8, shift: float = 3.0) -> None:
        self.transformer = tiny_flux_transformer(seed)
        g = torch.Generator().manual_seed(seed + 1)
        self.embed = torch.randn(256, 32, generator=g) * 0.5  # byte → 32-d "text encoder"
        self.latent_side, self.text_len, self.shift = latent_side, text_len, shift
        half = latent_side // 2
        ids = torch.zeros(half, half, 3)
        ids[..., 1] = torch.arange(half)[:, None]
        ids[..., 2] = torch.arange(half)[None, :]
        self.img_ids = ids.reshape(-1, 3)
        self.txt_ids = torch.zeros(text_len, 3)

    def encode(self, prompts: list[str], conditions: list[Image.Image] | None = None) -> Cond:
        tok = torch.zeros(len(prompts), self.text_len, dtype=torch.long)
        for k, p in enumerate(prompts):
            b = list(p.encode()[: self.text_len])
            tok[k, : len(b)] = torch.tensor(b, dtype=torch.long)
        h = self.embed[tok]
        return {"prompt_embeds": h, "pooled": h.mean(dim=1)}

    def initial_latents(self, batch: int, generator: torch.Generator) -> torch.Tensor:
        n = (self.latent_side // 2) ** 2
        return torch.randn(batch, n, 16, generator=generator, device=generator.device)

    def sigmas(self, num_steps: int) -> torch.Tensor:
        s = torch.linspace(1.0, 0.0, num_steps + 1)
        return self.shift * s / (1 + (self.shift - 1) * s)

    def velocity(self, latents: torch.Tensor, sigma: torch.Tensor, cond: Cond) -> torch.Tensor:
        b = latents.shape[0]
        return self.transformer(hidden_states=latents, timestep=sigma, guidance=torch.full((b,), 3.5),
                                pooled_projections=cond["pooled"], encoder_hidden_states=cond["prompt_embeds"],
                                txt_ids=self.txt_ids, img_ids=self.img_ids, return_dict=False)[0]

    def decode(self, latents: torch.Tensor) -> list[Image.Image]:
        b, half = latents.shape[0], self.latent_side // 2
        x = latents.detach().float().reshape(b, half, half, 4, 2, 2).permute(0, 3, 1, 4, 2, 5)
        x = x.reshape(b, 4, self.latent_side, self.latent_side)[:, :3]
        rgb = ((x.clamp(-2, 2) + 2) / 4 * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
        return [Image.fromarray(np.ascontiguousarray(a)).resize((16, 16), Image.NEAREST) for a in rgb]

    def describe(self) -> dict[str, Any]:
        return {"class": type(self).__name__, "latent_side": self.latent_side}


def redness(prompt: str, image: Image.Image) -> float:
    """A deterministic per-image score (mean red minus mean blue) for CallableRewarder tests."""
    a = np.asarray(image.convert("RGB"), dtype=np.float32)
    return float(a[..., 0].mean() - a[..., 2].mean())


PROMPTS = ["a red circle", "two blue squares", "a green triangle left of a cat", "three yellow stars",
           "a pink heart", "an orange dog", "a white cube", "a black hat"]


@pytest.fixture()
def one_thread():
    """Tiny models on a shared 2-core machine: one intra-op thread is ~10× faster than OpenMP workers
    spinning against other processes (measured: 4 tiny RPO steps 22.7 s → 2.4 s). Restored after.
    Used by this folder's modules through ``pytestmark`` (not autouse: sub-folders belong to others)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# Tests reach these through fixtures (importing conftest by module path depends on how pytest was
# started).
@pytest.fixture()
def tiny_policy() -> TinyFluxPolicy:
    return TinyFluxPolicy()


@pytest.fixture()
def make_policy() -> type[TinyFluxPolicy]:
    return TinyFluxPolicy


@pytest.fixture()
def prompts() -> list[str]:
    return list(PROMPTS)


@pytest.fixture()
def redness_fn():
    return redness
