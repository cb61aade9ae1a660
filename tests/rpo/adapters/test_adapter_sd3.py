"""SD3Policy on a tiny random SD3 pipeline saved to disk: sampling, equality with the pipeline (with and
without true CFG), LoRA."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from arr_core.rpo.adapters.sd3 import SD3Policy
from arr_core.rpo.adapters.tiny import tiny_sd3_components

SIZE = 32  # 4×4 latents
SEQ = 16  # T5 tokens; the conditioning is 77 CLIP + 16 T5 tokens
PROMPTS = ["a red cube", "two blue spheres"]


@pytest.fixture(scope="module")
def policy(sd3_folder) -> SD3Policy:
    return SD3Policy.from_pretrained(sd3_folder, height=SIZE, width=SIZE, max_sequence_length=SEQ)


@pytest.fixture(scope="module")
def cfg_policy(sd3_folder) -> SD3Policy:
    return SD3Policy.from_pretrained(
        sd3_folder, height=SIZE, width=SIZE, max_sequence_length=SEQ, guidance_scale=4.5
    )


def test_encode_sample_decode_shapes_and_determinism(policy, sample):
    cond = policy.encode(PROMPTS)
    assert set(cond) == {"prompt_embeds", "pooled_prompt_embeds"}
    assert cond["prompt_embeds"].shape == (2, 77 + SEQ, 64) and cond["pooled_prompt_embeds"].shape == (2, 64)
    x = sample(policy, cond, num_steps=3, seed=0, batch=2)
    assert x.shape == (2, 4, SIZE // 8, SIZE // 8) and x.dtype == torch.float32 and torch.isfinite(x).all()
    assert torch.equal(x, sample(policy, cond, num_steps=3, seed=0, batch=2))
    images = policy.decode(x)
    assert len(images) == 2 and images[0].size == (SIZE, SIZE)


def test_sigmas_static_shift(policy):
    # Hand-derived: the scheduler spaces t between 1 and its shifted σ_min = 3·0.001/(1 + 2·0.001), then
    # shifts again: σ = 3t / (1 + 2t); final 0.
    n = 4
    s_min = 3 * 0.001 / (1 + 2 * 0.001)
    t = np.linspace(1.0, s_min, n)
    expected = np.append(3 * t / (1 + 2 * t), 0.0)
    sigmas = policy.sigmas(n)
    assert sigmas.dtype == torch.float32 and sigmas.shape == (n + 1,)
    assert torch.allclose(sigmas, torch.tensor(expected, dtype=torch.float32), atol=1e-6)


@pytest.mark.parametrize("which", ["policy", "cfg_policy"])
def test_euler_over_sigmas_reproduces_sd3_pipeline(which, request, sample):
    """Same seed and noise: plain Euler with velocity() equals StableDiffusion3Pipeline (CFG off and 4.5)."""
    policy = request.getfixturevalue(which)
    n, seed = 3, 5
    x = sample(policy, policy.encode(PROMPTS), num_steps=n, seed=seed, batch=2)
    common = dict(
        num_inference_steps=n,
        height=SIZE,
        width=SIZE,
        max_sequence_length=SEQ,
        guidance_scale=policy.guidance_scale,
        generator=torch.Generator().manual_seed(seed),
    )
    ref = policy.pipe(PROMPTS, output_type="latent", **common)
    assert (ref.images - x).abs().max().item() <= 1e-5
    common["generator"] = torch.Generator().manual_seed(seed)
    ref_images = policy.pipe(PROMPTS, output_type="pt", **common)
    assert (ref_images.images - policy.decode_tensor(x)).abs().max().item() <= 1e-5


def test_cfg_combines_uncond_and_cond(policy, cfg_policy):
    cond = cfg_policy.encode(PROMPTS)
    x = cfg_policy.initial_latents(2, torch.Generator().manual_seed(0))
    sigma = torch.tensor([0.8, 0.3])
    with torch.no_grad():
        guided = cfg_policy.velocity(x, sigma, cond)
        v_cond = policy.velocity(x, sigma, {k: cond[k] for k in ("prompt_embeds", "pooled_prompt_embeds")})
        negative = {
            "prompt_embeds": cond["negative_prompt_embeds"],
            "pooled_prompt_embeds": cond["negative_pooled_prompt_embeds"],
        }
        v_uncond = policy.velocity(x, sigma, negative)
    assert torch.allclose(guided, v_uncond + 4.5 * (v_cond - v_uncond), atol=1e-5)


def test_lora_attaches_on_targets(lora_check):
    policy = SD3Policy.from_components(
        tiny_sd3_components(), height=SIZE, width=SIZE, max_sequence_length=SEQ
    )

    def inputs():
        x = policy.initial_latents(2, torch.Generator().manual_seed(0))
        return x, torch.tensor([0.9, 0.4]), policy.encode(PROMPTS)

    lora_check(policy, inputs)


def test_bad_inputs_raise(policy, cfg_policy):
    with pytest.raises(ValueError, match="multiples of 8"):
        SD3Policy(policy.pipe, height=36, width=32)
    with pytest.raises(ValueError, match="guidance_scale"):
        SD3Policy(policy.pipe, height=32, width=32, guidance_scale=0.5)
    with pytest.raises(ValueError, match="negative_prompt_embeds"):
        cfg_policy.velocity(
            policy.initial_latents(2, torch.Generator()), torch.tensor(0.5), policy.encode(PROMPTS)
        )


def test_dtype_by_config_name(sd3_folder, sample):
    """Configs spell dtypes as strings (PolicyConfig.dtype); a bf16 policy still samples fp32 latents."""
    policy = SD3Policy.from_pretrained(
        sd3_folder, dtype="bfloat16", height=SIZE, width=SIZE, max_sequence_length=SEQ
    )
    assert policy.dtype == torch.bfloat16
    x = sample(policy, policy.encode(PROMPTS), num_steps=2, seed=0, batch=2)
    assert x.dtype == torch.float32 and torch.isfinite(x).all()
