"""QwenEditPolicy on a tiny random Qwen-Image-Edit-2509 folder: real tiny Qwen2.5-VL text encoder, source image
as conditioning latents, equality with QwenImageEditPlusPipeline given the same text embeddings, LoRA."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from arr_core.rpo.adapters.qwen_edit import QwenEditPolicy, qwen_vl_inputs
from arr_core.rpo.adapters.tiny import tiny_qwen_edit_components

SIZE = 32  # tiny VAE downsamples 4× → 8×8 latents → 16 packed tokens (+16 source tokens)
PROMPTS = ["make the square blue", "add a red circle"]


def _sources() -> list[Image.Image]:
    rng = np.random.default_rng(0)
    return [
        Image.fromarray(rng.integers(0, 255, (SIZE, SIZE, 3), dtype=np.uint8)),
        Image.new("RGB", (48, 32), (200, 30, 30)),
    ]


@pytest.fixture(scope="module")
def policy(qwen_folder) -> QwenEditPolicy:
    return QwenEditPolicy.from_pretrained(qwen_folder, height=SIZE, width=SIZE)


@pytest.fixture(scope="module")
def cond(policy):
    return policy.encode(PROMPTS, _sources())


def test_encode_sample_decode_shapes_and_determinism(policy, cond, sample):
    assert policy.variant == "edit_plus"
    b, s, d = cond["prompt_embeds"].shape
    assert (b, d) == (2, 16) and cond["prompt_embeds_mask"].shape == (2, s)
    assert cond["image_latents"].shape == (2, (SIZE // 8) ** 2, 16)
    x = sample(policy, cond, num_steps=3, seed=0, batch=2)
    assert x.shape == (2, (SIZE // 8) ** 2, 16) and torch.isfinite(x).all()
    assert torch.equal(x, sample(policy, cond, num_steps=3, seed=0, batch=2))
    images = policy.decode(x)
    assert len(images) == 2 and images[0].size == (SIZE, SIZE)


def test_source_image_conditions_the_velocity(policy, cond):
    other = policy.encode(PROMPTS, [Image.new("RGB", (SIZE, SIZE), (0, 0, 255))] * 2)
    assert not torch.allclose(other["image_latents"], cond["image_latents"])
    x = policy.initial_latents(2, torch.Generator().manual_seed(0))
    sigma = torch.tensor([0.6, 0.6])
    with torch.no_grad():
        mixed = dict(cond, image_latents=other["image_latents"])
        assert not torch.allclose(policy.velocity(x, sigma, cond), policy.velocity(x, sigma, mixed))


def test_image_placeholders_expand_to_merged_patches(policy):
    tokenizer, processor = policy.pipe.tokenizer, policy.image_processor
    image_id = tokenizer.convert_tokens_to_ids("<|image_pad|>")
    images = [Image.new("RGB", (112, 56)), Image.new("RGB", (56, 56))]
    inputs = qwen_vl_inputs(tokenizer, processor, ["a <|image_pad|> b", "<|image_pad|>"], images)
    counts = (inputs["input_ids"] == image_id).sum(dim=1).tolist()
    expected = [int(g.prod()) // processor.merge_size**2 for g in inputs["image_grid_thw"]]
    assert counts == expected and expected[0] == 2 * expected[1]
    with pytest.raises(ValueError, match="placeholders"):
        qwen_vl_inputs(tokenizer, processor, ["no image here"], images[:1])


def test_qwen_vl_inputs_match_qwen2vl_processor(policy):
    pytest.importorskip("torchvision", reason="transformers 5 builds Qwen2VLProcessor only with torchvision")
    from transformers import Qwen2VLProcessor

    processor = Qwen2VLProcessor(image_processor=policy.image_processor, tokenizer=policy.pipe.tokenizer)
    texts = ["<|vision_start|><|image_pad|><|vision_end|>make it blue", "x <|image_pad|>"]
    images = _sources()
    ref = processor(text=texts, images=images, padding=True, return_tensors="pt")
    mine = qwen_vl_inputs(policy.pipe.tokenizer, policy.image_processor, texts, images)
    for key, value in mine.items():
        assert torch.equal(value, ref[key]), key


def test_euler_over_sigmas_reproduces_edit_plus_pipeline(policy, cond, sample, monkeypatch):
    """Same text embeddings, source image and seed: plain Euler equals QwenImageEditPlusPipeline.

    The pipeline resizes sources to ~1024² pixels (``VAE_IMAGE_SIZE``); the test lowers that constant to
    the policy's SIZE² so both encode the same source (the adapter's fixed-size deviation, see its docstring).
    """
    import diffusers.pipelines.qwenimage.pipeline_qwenimage_edit_plus as edit_plus

    monkeypatch.setattr(edit_plus, "VAE_IMAGE_SIZE", SIZE * SIZE)
    n, seed = 3, 2
    one = {k: v[:1] for k, v in cond.items()}
    x = sample(policy, one, num_steps=n, seed=seed, batch=1)
    ref = policy.pipe(
        image=[_sources()[0]],
        prompt_embeds=one["prompt_embeds"],
        prompt_embeds_mask=one["prompt_embeds_mask"],
        true_cfg_scale=1.0,
        height=SIZE,
        width=SIZE,
        num_inference_steps=n,
        generator=torch.Generator().manual_seed(seed),
        output_type="latent",
    )
    assert (ref.images - x).abs().max().item() <= 1e-5


def test_prompt_embeds_path_without_text_encoder(qwen_folder, policy, cond):
    lean = QwenEditPolicy.from_pretrained(qwen_folder, height=SIZE, width=SIZE, load_text_encoder=False)
    assert lean.pipe.text_encoder is None
    given = lean.encode(
        PROMPTS,
        _sources(),
        prompt_embeds=cond["prompt_embeds"],
        prompt_embeds_mask=cond["prompt_embeds_mask"],
    )
    x = policy.initial_latents(2, torch.Generator().manual_seed(0))
    sigma = torch.tensor([0.5, 0.5])
    with torch.no_grad():
        assert torch.allclose(lean.velocity(x, sigma, given), policy.velocity(x, sigma, cond), atol=1e-6)
    with pytest.raises(ValueError, match="prompt_embeds"):
        lean.encode(PROMPTS, _sources())


def test_true_cfg_and_edit_variant():
    components = tiny_qwen_edit_components()
    edit = QwenEditPolicy.from_components(
        components, variant="edit", height=SIZE, width=SIZE, true_cfg_scale=4.0
    )
    assert edit.variant == "edit"
    cond = edit.encode(PROMPTS, _sources())
    assert {"negative_prompt_embeds", "negative_prompt_embeds_mask"} <= set(cond)
    x = edit.initial_latents(2, torch.Generator().manual_seed(0))
    sigma = torch.tensor([0.7, 0.7])
    with torch.no_grad():
        guided = edit.velocity(x, sigma, cond)
        edit.true_cfg_scale = 1.0
        plain = edit.velocity(x, sigma, cond)
    assert torch.isfinite(guided).all() and not torch.allclose(guided, plain)
    # The pipeline's rescaling keeps the conditional velocity's per-token norm.
    assert torch.allclose(guided.norm(dim=-1), plain.norm(dim=-1), rtol=1e-4)


def test_lora_attaches_on_targets(lora_check):
    policy = QwenEditPolicy.from_components(tiny_qwen_edit_components(), height=SIZE, width=SIZE)
    cond = policy.encode(PROMPTS, _sources())

    def inputs():
        return policy.initial_latents(2, torch.Generator().manual_seed(0)), torch.tensor([0.9, 0.4]), cond

    lora_check(policy, inputs)


def test_bad_inputs_raise(policy, qwen_folder, tmp_path):
    with pytest.raises(ValueError, match="one source image per prompt"):
        policy.encode(PROMPTS, _sources()[:1])
    with pytest.raises(ValueError, match="multiples of 8"):
        QwenEditPolicy(policy.pipe, policy.image_processor, height=36, width=32)
    with pytest.raises(ValueError, match="model_index.json"):
        QwenEditPolicy.from_pretrained(tmp_path)


def test_padded_batch_equals_single_prompt_and_index_cond(policy, cond):
    """Text padding is masked out: a prompt's velocity in a padded batch equals its velocity alone, and
    ``index_cond`` (used to repeat G samples per prompt) keeps every conditioning key aligned."""
    from arr_core.rpo.policy import index_cond

    lengths = cond["prompt_embeds_mask"].sum(dim=1).tolist()
    short = int(np.argmin(lengths))
    assert lengths[0] != lengths[1]  # one prompt really is padded
    alone = policy.encode([PROMPTS[short]], [_sources()[short]])
    x = policy.initial_latents(2, torch.Generator().manual_seed(4))
    sigma = torch.tensor([0.8, 0.8])
    with torch.no_grad():
        batched = policy.velocity(x, sigma, cond)
        single = policy.velocity(x[short : short + 1], sigma[:1], alone)
        repeated = policy.velocity(
            x[[0, 0, 1, 1]], sigma.repeat(2), index_cond(cond, torch.tensor([0, 0, 1, 1]))
        )
    assert torch.allclose(batched[short : short + 1], single, atol=1e-5)
    assert torch.allclose(repeated[::2], batched, atol=1e-5) and torch.allclose(
        repeated[1::2], batched, atol=1e-5
    )
