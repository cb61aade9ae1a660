"""Shared fixtures for the real-model adapter tests: tiny random pipelines saved to disk once per session.

Each folder is written by ``save_tiny_pipeline`` (real diffusers/transformers classes, in-memory tokenizers)
and loaded back through the adapters' ``from_pretrained``, so every test exercises a local weight folder.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def euler_sample(policy, cond, num_steps: int, seed: int, batch: int) -> torch.Tensor:
    """Plain Euler over ``policy.sigmas``: x ← x + (σ_{i+1} − σ_i)·v(x, σ_i), from seeded noise."""
    x = policy.initial_latents(batch, torch.Generator().manual_seed(seed))
    sigmas = policy.sigmas(num_steps)
    with torch.no_grad():
        for i in range(num_steps):
            v = policy.velocity(x, sigmas[i].expand(batch), cond)
            x = x + (sigmas[i + 1] - sigmas[i]) * v
    return x


@pytest.fixture(scope="session")
def sample() -> Callable[..., torch.Tensor]:
    return euler_sample


def _saved(tmp_path_factory, kind: str) -> Path:
    from arr_core.rpo.adapters.tiny import save_tiny_pipeline

    return save_tiny_pipeline(kind, tmp_path_factory.mktemp(f"tiny_{kind}"))


@pytest.fixture(scope="session")
def flux_folder(tmp_path_factory) -> Path:
    return _saved(tmp_path_factory, "flux")


@pytest.fixture(scope="session")
def sd3_folder(tmp_path_factory) -> Path:
    return _saved(tmp_path_factory, "sd3")


@pytest.fixture(scope="session")
def qwen_folder(tmp_path_factory) -> Path:
    return _saved(tmp_path_factory, "qwen_edit")


def check_lora(policy, make_inputs: Callable[[], tuple]) -> None:
    """Attach a peft LoRA on ``policy.lora_targets`` and check: every target name matches a module; at
    initialisation (B = 0) the velocity equals the base one exactly; perturbed LoRA weights change it;
    ``disable_adapter()`` gives the base velocity back exactly."""
    from peft import LoraConfig, get_peft_model

    latents, sigma, cond = make_inputs()
    with torch.no_grad():
        base = policy.velocity(latents, sigma, cond)
    model = get_peft_model(
        policy.transformer,
        LoraConfig(r=4, lora_alpha=8, init_lora_weights="gaussian", target_modules=policy.lora_targets),
    )
    wrapped = [name for name, module in model.named_modules() if hasattr(module, "lora_A")]
    for target in policy.lora_targets:
        assert any(name.endswith(target) for name in wrapped), f"LoRA target {target} matched no module"
    with torch.no_grad():
        assert torch.equal(policy.velocity(latents, sigma, cond), base)
        generator = torch.Generator().manual_seed(1)
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.5)
        adapted = policy.velocity(latents, sigma, cond)
        assert not torch.allclose(adapted, base)
        with model.disable_adapter():
            assert torch.equal(policy.velocity(latents, sigma, cond), base)


@pytest.fixture(scope="session")
def lora_check() -> Callable[..., None]:
    return check_lora
