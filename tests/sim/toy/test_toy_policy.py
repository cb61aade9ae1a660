"""The toy policy implements the Policy protocol with real diffusers/transformers/peft classes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from arr_core.rpo.lora import add_lora
from arr_core.sim.toy_eval import sample_ode, seeded_noise
from arr_core.sim.toy_policy import LORA_TARGETS, ToyPolicy, images_to_latents

PROMPTS = ["a photo of two red circles", "a photo of a blue square left of a green triangle"]


@pytest.fixture(scope="module")
def policy() -> ToyPolicy:
    return ToyPolicy.random(seed=3)


def _sample(policy: ToyPolicy, steps: int = 3) -> torch.Tensor:
    noise = seeded_noise(policy, [f"{p}|0" for p in PROMPTS])
    return sample_ode(policy, PROMPTS, noise, steps)


def test_tokenizer_is_word_level(policy):
    ids, mask = policy.tokenize(["a photo of four purple triangles"])
    tokens = policy.tokenizer.convert_ids_to_tokens(ids[0].tolist())
    assert tokens[:7] == ["<|startoftext|>", "a", "photo", "of", "four", "purple", "triangles"]
    assert tokens[7] == "<|endoftext|>" and int(mask.sum()) == 8
    assert ids.shape == (1, policy.config["max_length"])
    unk = policy.tokenizer.convert_ids_to_tokens(policy.tokenize(["a zebra"])[0][0].tolist())
    assert "<|unk|>" in unk


def test_protocol_shapes_and_finiteness(policy):
    cond = policy.encode(PROMPTS)
    assert cond["prompt_embeds"].shape == (2, 16, 64) and cond["prompt_mask"].shape == (2, 16)
    x = policy.initial_latents(2, torch.Generator().manual_seed(0))
    assert x.shape == (2, 3, 32, 32) and x.dtype == torch.float32
    sig = policy.sigmas(8)
    assert sig.shape == (9,) and sig[0] == 1.0 and sig[-1] == 0.0 and bool((sig[1:] < sig[:-1]).all())
    with torch.no_grad():
        v = policy.velocity(x, sig[0].expand(2), cond)
        v_scalar = policy.velocity(x, sig[0], cond)
    assert v.shape == x.shape and v.dtype == torch.float32 and bool(torch.isfinite(v).all())
    assert torch.equal(v, v_scalar)
    images = policy.decode(x)
    assert len(images) == 2 and images[0].size == (64, 64) and images[0].mode == "RGB"
    d = policy.describe()
    assert d["class"] == "ToyPolicy" and d["transformer_params"] > 100_000


def test_sigma_shift_warps_towards_noise():
    shifted = ToyPolicy.random(seed=0, shift=3.0).sigmas(4)
    # s·σ/(1+(s−1)σ) at σ = 0.5, s = 3: 1.5 / 2 = 0.75
    assert shifted[2].item() == pytest.approx(0.75)


def test_deterministic_and_batch_independent(policy):
    a, b = _sample(policy), _sample(policy)
    assert torch.equal(a, b)
    single = sample_ode(policy, PROMPTS[:1], seeded_noise(policy, [f"{PROMPTS[0]}|0"]), 3)
    assert torch.allclose(single[0], a[0], atol=1e-5)
    assert not torch.allclose(a[0], a[1])


def test_bad_inputs_raise(policy):
    with pytest.raises(ValueError, match="conditions"):
        policy.encode(PROMPTS, conditions=[policy.decode(torch.zeros(1, 3, 32, 32))[0]])
    with pytest.raises(TypeError):
        policy.encode("a photo of a circle")
    with pytest.raises(ValueError, match="sigma"):
        policy.velocity(torch.zeros(2, 3, 32, 32), torch.zeros(3), policy.encode(PROMPTS))
    with pytest.raises(ValueError, match="unknown toy policy config"):
        ToyPolicy.random(widht=64)


def test_save_load_round_trip_identical(policy, tmp_path):
    policy.save(tmp_path / "p", extra={"note": "test"})
    loaded = ToyPolicy.load(tmp_path / "p")
    assert loaded.config["note"] == "test"
    for module in ("text_encoder", "transformer"):
        saved, back = getattr(policy, module).state_dict(), getattr(loaded, module).state_dict()
        assert saved.keys() == back.keys() and all(torch.equal(saved[k], back[k]) for k in saved)
    # Same weights, same samples (allclose: CPU kernels may pick other code paths for other buffers).
    torch.testing.assert_close(_sample(policy), _sample(loaded), rtol=0, atol=1e-6)
    with pytest.raises(FileNotFoundError, match="toy_policy.json"):
        ToyPolicy.load(tmp_path)


def test_decode_inverts_images_to_latents(policy):
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    im = policy.decode(x)[0].resize((32, 32))
    back = images_to_latents([policy.decode(x)[0]], 64)
    assert back.shape == (1, 3, 64, 64) and im.size == (32, 32)
    small = ToyPolicy.random(seed=0, decode_size=32)
    exact = images_to_latents(small.decode(x), 32)
    assert (exact - x).abs().max().item() <= 1.0 / 127.5 + 1e-6  # uint8 rounding only


def test_peft_lora_attaches_and_starts_at_base():
    policy = ToyPolicy.random(seed=5)
    x = policy.initial_latents(2, torch.Generator().manual_seed(1))
    cond = policy.encode(PROMPTS)
    with torch.no_grad():
        base = policy.velocity(x, torch.full((2,), 0.5), cond)
    peft_model = add_lora(policy.transformer, rank=4, alpha=8, targets=policy.lora_targets)
    lora_names = [n for n, _ in peft_model.named_parameters() if "lora_A" in n]
    # every block has 8 targeted projections (self- and cross-attention q, k, v, out)
    assert len(lora_names) == policy.config["layers"] * len(LORA_TARGETS)
    with torch.no_grad():
        same = policy.velocity(x, torch.full((2,), 0.5), cond)
        for n, p in peft_model.named_parameters():
            if "lora_B" in n:
                p.add_(0.05)
        changed = policy.velocity(x, torch.full((2,), 0.5), cond)
        with peft_model.disable_adapter():
            off = policy.velocity(x, torch.full((2,), 0.5), cond)
    assert torch.equal(base, same)
    assert not torch.allclose(base, changed)
    assert torch.equal(base, off)


def test_geneval_accuracy_switches_a_given_lora_on():
    from arr_core.sim.toy_eval import geneval_accuracy, heldout_specs

    policy = ToyPolicy.random(seed=6)
    peft_model = add_lora(policy.transformer, rank=2, alpha=4, targets=policy.lora_targets)
    peft_model.disable_adapter_layers()
    layers = [m for m in policy.transformer.modules() if hasattr(m, "lora_A")]
    assert layers and all(m.disable_adapters for m in layers)
    res = geneval_accuracy(policy, heldout_specs(1), seeds=(0,), steps=2, lora=peft_model)
    assert res["n"] == 6 and res["overall"] == pytest.approx(sum(map(sum, res["passed"])) / 6)
    assert not any(m.disable_adapters for m in layers)
    with pytest.raises(TypeError, match="peft model"):
        geneval_accuracy(policy, heldout_specs(1), seeds=(0,), steps=2, lora="adapter.safetensors")


def test_repeated_prompts_get_independent_noise():
    """A tag-balanced held-out set repeats short prompts; each repeat must be a new sample, not a copy."""
    from arr_core.sim.toy_eval import geneval_accuracy, heldout_specs, noise_keys

    assert noise_keys(["a", "b", "a", "a"]) == ["a", "b", "a#1", "a#2"]
    spec = heldout_specs(1)[0]
    policy = ToyPolicy.random(seed=0)
    res = geneval_accuracy(policy, [spec, spec], seeds=(0,), steps=2, return_images=True)
    first, repeat = (np.asarray(im) for im in res["images"])
    assert not np.array_equal(first, repeat)
    again = geneval_accuracy(policy, [spec], seeds=(0,), steps=2, return_images=True)["images"][0]
    assert np.array_equal(first, np.asarray(again))  # the first occurrence keeps its noise


def test_sde_sampler_eval_is_batch_independent_and_reduces_to_the_ode(policy):
    """`geneval_accuracy(sampler="sde")` samples like RPO's rollouts, seeded per prompt-image."""
    from arr_core.sim.toy_eval import geneval_accuracy, heldout_specs, sample_sde

    keys = [f"{p}|0" for p in PROMPTS]
    noise = seeded_noise(policy, keys)
    sde = sample_sde(policy, PROMPTS, noise, 3, keys, a=0.7)
    assert not torch.allclose(sde, _sample(policy))  # the SDE adds noise the ODE does not
    alone = sample_sde(policy, PROMPTS[1:], noise[1:], 3, keys[1:], a=0.7)
    torch.testing.assert_close(alone, sde[1:], rtol=1e-5, atol=1e-5)  # same sample in another batch
    torch.testing.assert_close(sample_sde(policy, PROMPTS, noise, 3, keys, a=0.0), _sample(policy),
                               rtol=1e-5, atol=1e-5)  # noise level 0 is the Euler ODE
    specs = heldout_specs(1)
    res = geneval_accuracy(policy, specs, seeds=(0,), steps=2, sampler="sde", batch_size=4, return_images=True)
    again = geneval_accuracy(policy, specs, seeds=(0,), steps=2, sampler="sde", batch_size=64,
                             return_images=True)
    assert res["sampler"] == "sde(a=0.7)" and res["passed"] == again["passed"]
    assert all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(res["images"], again["images"],
                                                                             strict=True))
    with pytest.raises(ValueError, match="sampler"):
        geneval_accuracy(policy, specs, sampler="heun")


def test_classifier_free_guidance_contrasts_the_prompt_with_the_empty_prompt(policy, tmp_path):
    guided = ToyPolicy(policy.config, policy.text_encoder, policy.transformer, guidance_scale=3.0)
    assert guided.do_cfg and not policy.do_cfg and "uncond_embeds" not in policy.encode(PROMPTS)
    cond = guided.encode(PROMPTS)
    assert cond["uncond_embeds"].shape == cond["prompt_embeds"].shape
    x = policy.initial_latents(2, torch.Generator().manual_seed(1))
    sig = torch.tensor([0.7, 0.4])
    with torch.no_grad():
        text = policy.predict_x0(x, sig, policy.encode(PROMPTS))
        empty = policy.predict_x0(x, sig, policy.encode(["", ""]))
        want = (x - (empty + 3.0 * (text - empty))) / sig.view(2, 1, 1, 1)
        got = guided.velocity(x, sig, cond)
        one = guided.velocity(x[:1], sig[:1], guided.encode(PROMPTS[:1]))  # rows stay independent
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
    torch.testing.assert_close(one[0], got[0], rtol=0, atol=1e-5)
    assert not torch.allclose(got, policy.velocity(x, sig, policy.encode(PROMPTS)))
    with pytest.raises(ValueError, match="uncond_embeds"):
        guided.velocity(x, sig, policy.encode(PROMPTS))
    with pytest.raises(ValueError, match="guidance_scale"):
        ToyPolicy(policy.config, policy.text_encoder, policy.transformer, guidance_scale=0.5)
    # the scale is saved with the policy, and a load can override it
    guided.save(tmp_path / "g")
    assert ToyPolicy.load(tmp_path / "g").guidance_scale == 3.0
    assert ToyPolicy.load(tmp_path / "g", guidance_scale=1.0).do_cfg is False
