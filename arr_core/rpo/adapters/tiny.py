"""Tiny random components for the real FLUX / SD3 / Qwen-Image-Edit classes (tests and demos, offline).

Every builder returns the keyword arguments of the matching diffusers pipeline
(``FluxPipeline(**tiny_flux_components())`` works), made of the *real* diffusers/transformers classes
at a few thousand to a few hundred thousand parameters, seeded, with tokenizers built in memory (no hub
access). All modules are put in ``eval()`` mode: freshly constructed models are in train mode, and T5's
dropout (0.1) would make two identical forward passes differ.

Sizes follow the constraints of each architecture (see ``docs/adapters.md``):

- FLUX: ``in_channels = 4 × latent_channels`` (2×2 packing), ``sum(axes_dims_rope) == attention_head_dim``,
  ``joint_attention_dim`` = T5 width, ``pooled_projection_dim`` = CLIP width; image side divisible by 16.
- SD3: ``joint_attention_dim`` = T5 width ≥ the two CLIP widths concatenated, ``pooled_projection_dim`` =
  the two CLIP projections concatenated; image side divisible by 8.
- Qwen-Image-Edit: Qwen2.5-VL text/vision towers of width 16, special-token ids in a 263-entry byte-level
  vocabulary, ``AutoencoderKLQwenImage`` with 4× spatial downsampling; image side divisible by 8.

Qwen's ``Qwen2VLProcessor`` cannot be constructed without torchvision in transformers 5 (its video-processor
check needs ``VideoProcessorMixin``, which only exists with torchvision), so the Qwen builder returns the
tokenizer and a PIL image processor (``image_processor``) instead of a ``processor``; the adapter does the
processor's job itself (``arr_core/rpo/adapters/qwen_edit.py``).
"""

from __future__ import annotations

import string
from pathlib import Path
from typing import Any

import torch

# Characters the in-memory tokenizers know; anything else maps to the unknown token.
_CHARS = string.ascii_letters + string.digits + string.punctuation


def _byte_level_alphabet() -> list[str]:
    """The 256 printable stand-ins GPT-2-style byte-level BPE uses for raw bytes (Radford et al. 2019)."""
    visible = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    visible += list(range(ord("®"), ord("ÿ") + 1))
    codes = visible[:]
    extra = 0
    for b in range(256):
        if b not in visible:
            visible.append(b)
            codes.append(256 + extra)
            extra += 1
    return sorted(chr(c) for c in codes)


def tiny_clip_tokenizer() -> Any:
    """Character-level ``CLIPTokenizer`` (no merges), 77 tokens, built in memory."""
    from transformers import CLIPTokenizer

    vocab: dict[str, int] = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in _CHARS:
        vocab[c] = len(vocab)
        vocab[c + "</w>"] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77)


def tiny_t5_tokenizer() -> Any:
    """Character-level unigram ``T5Tokenizer`` (pad 0, eos 1, unk 2), built in memory."""
    from transformers import T5Tokenizer

    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -1.0)]
    pieces += [(c, -2.0) for c in _CHARS]
    return T5Tokenizer(vocab=pieces, extra_ids=0)


def _clip_text_config(vocab_size: int, hidden: int, projection_dim: int) -> Any:
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=37,
        num_attention_heads=4,
        num_hidden_layers=2,
        max_position_embeddings=77,
        projection_dim=projection_dim,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=1,
        hidden_act="gelu",
    )


def _t5_encoder(vocab_size: int, d_model: int) -> Any:
    from transformers import T5Config, T5EncoderModel

    config = T5Config(
        vocab_size=vocab_size,
        d_model=d_model,
        d_kv=8,
        d_ff=37,
        num_layers=2,
        num_heads=4,
        relative_attention_num_buckets=8,
        pad_token_id=0,
        eos_token_id=1,
    )
    return T5EncoderModel(config)


def _kl_vae(latent_channels: int, scaling_factor: float, shift_factor: float) -> Any:
    """``AutoencoderKL`` with 4 blocks (8× downsampling) like FLUX's and SD3's, at width 16/32."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(16, 16, 32, 32),
        layers_per_block=1,
        latent_channels=latent_channels,
        norm_num_groups=8,
        sample_size=32,
        scaling_factor=scaling_factor,
        shift_factor=shift_factor,
        use_quant_conv=False,
        use_post_quant_conv=False,
    )


def _eval_all(components: dict[str, Any]) -> dict[str, Any]:
    for value in components.values():
        if isinstance(value, torch.nn.Module):
            value.eval()
    return components


def tiny_flux_components(seed: int = 0) -> dict[str, Any]:
    """Keyword arguments of ``FluxPipeline``: tiny FLUX transformer (guidance-distilled), KL VAE, CLIP, T5.

    The scheduler is FLUX.1-dev's (dynamic shift, base/max shift 0.5/1.15 over 256..4096 tokens).
    The global RNG is left untouched.
    """
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxTransformer2DModel
    from transformers import CLIPTextModel

    tokenizer = tiny_clip_tokenizer()
    tokenizer_2 = tiny_t5_tokenizer()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        transformer = FluxTransformer2DModel(
            patch_size=1,
            in_channels=16,
            num_layers=1,
            num_single_layers=1,
            attention_head_dim=16,
            num_attention_heads=2,
            joint_attention_dim=32,
            pooled_projection_dim=32,
            guidance_embeds=True,
            axes_dims_rope=(4, 6, 6),
        )
        vae = _kl_vae(latent_channels=4, scaling_factor=0.3611, shift_factor=0.1159)
        text_encoder = CLIPTextModel(_clip_text_config(len(tokenizer), hidden=32, projection_dim=32))
        text_encoder_2 = _t5_encoder(len(tokenizer_2), d_model=32)
    scheduler = FlowMatchEulerDiscreteScheduler(
        num_train_timesteps=1000,
        shift=3.0,
        use_dynamic_shifting=True,
        base_shift=0.5,
        max_shift=1.15,
        base_image_seq_len=256,
        max_image_seq_len=4096,
    )
    return _eval_all(
        {
            "scheduler": scheduler,
            "vae": vae,
            "text_encoder": text_encoder,
            "tokenizer": tokenizer,
            "text_encoder_2": text_encoder_2,
            "tokenizer_2": tokenizer_2,
            "transformer": transformer,
        }
    )


def tiny_sd3_components(seed: int = 0) -> dict[str, Any]:
    """Keyword arguments of ``StableDiffusion3Pipeline``: tiny MMDiT, KL VAE, two CLIPs with projection, T5.

    Widths: CLIP hidden 32 + 32 = T5 width 64 = ``joint_attention_dim``; pooled 32 + 32 = 64. Static
    shift 3.0 as SD3/SD3.5.
    """
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel
    from transformers import CLIPTextModelWithProjection

    tokenizer = tiny_clip_tokenizer()
    tokenizer_2 = tiny_clip_tokenizer()
    tokenizer_3 = tiny_t5_tokenizer()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        transformer = SD3Transformer2DModel(
            sample_size=32,
            patch_size=1,
            in_channels=4,
            num_layers=2,
            attention_head_dim=8,
            num_attention_heads=4,
            joint_attention_dim=64,
            caption_projection_dim=32,
            pooled_projection_dim=64,
            out_channels=4,
        )
        vae = _kl_vae(latent_channels=4, scaling_factor=1.5305, shift_factor=0.0609)
        text_encoder = CLIPTextModelWithProjection(_clip_text_config(len(tokenizer), 32, 32))
        text_encoder_2 = CLIPTextModelWithProjection(_clip_text_config(len(tokenizer_2), 32, 32))
        text_encoder_3 = _t5_encoder(len(tokenizer_3), d_model=64)
    scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0)
    return _eval_all(
        {
            "scheduler": scheduler,
            "transformer": transformer,
            "vae": vae,
            "text_encoder": text_encoder,
            "tokenizer": tokenizer,
            "text_encoder_2": text_encoder_2,
            "tokenizer_2": tokenizer_2,
            "text_encoder_3": text_encoder_3,
            "tokenizer_3": tokenizer_3,
        }
    )


# Qwen2.5-VL special tokens the Qwen-Image prompt templates use, in the order they get ids after the
# 256 byte-level symbols.
QWEN_SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
)


def tiny_qwen_tokenizer() -> Any:
    """Byte-level ``Qwen2Tokenizer`` with no merges (one token per byte) plus Qwen's special tokens."""
    from transformers import Qwen2Tokenizer

    vocab = {c: i for i, c in enumerate(_byte_level_alphabet())}
    for token in QWEN_SPECIAL_TOKENS:
        vocab[token] = len(vocab)
    tokenizer = Qwen2Tokenizer(vocab=vocab, merges=[], model_max_length=4096)
    tokenizer.add_special_tokens({"additional_special_tokens": list(QWEN_SPECIAL_TOKENS[1:])})
    return tokenizer


def tiny_qwen_image_processor() -> Any:
    """Qwen2-VL PIL image processor (patch 14, merge 2) with a small pixel budget (≤ 8×8 merged tokens)."""
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    return Qwen2VLImageProcessorPil(min_pixels=4 * 28 * 28, max_pixels=64 * 28 * 28)


def tiny_qwen_edit_components(seed: int = 0) -> dict[str, Any]:
    """Tiny Qwen-Image-Edit parts: ``QwenImageTransformer2DModel``, ``AutoencoderKLQwenImage``,
    ``Qwen2_5_VLForConditionalGeneration`` (text and vision towers of width 16), tokenizer, PIL image
    processor and the Qwen-Image scheduler (exponential dynamic shift, base/max 0.5/0.9, terminal 0.02).

    Keys: scheduler, vae, text_encoder, tokenizer, image_processor, transformer. ``QwenImageEditPlusPipeline``
    takes these with ``processor=None`` in place of ``image_processor`` (see the module docstring).
    """
    from diffusers import AutoencoderKLQwenImage, FlowMatchEulerDiscreteScheduler, QwenImageTransformer2DModel
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    tokenizer = tiny_qwen_tokenizer()
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in QWEN_SPECIAL_TOKENS}
    config = Qwen2_5_VLConfig(
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": 16,
            "intermediate_size": 16,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "num_key_value_heads": 2,
            "rope_scaling": {"mrope_section": [1, 1, 2], "rope_type": "default", "type": "default"},
            "rope_theta": 1000000.0,
            "bos_token_id": ids["<|endoftext|>"],
            "eos_token_id": ids["<|im_end|>"],
        },
        vision_config={
            "depth": 2,
            "hidden_size": 16,
            "intermediate_size": 16,
            "num_heads": 2,
            "out_hidden_size": 16,
        },
        vocab_size=len(tokenizer),
        bos_token_id=ids["<|endoftext|>"],
        eos_token_id=ids["<|im_end|>"],
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
    )
    z_dim = 4
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        transformer = QwenImageTransformer2DModel(
            patch_size=2,
            in_channels=4 * z_dim,
            out_channels=z_dim,
            num_layers=2,
            attention_head_dim=16,
            num_attention_heads=2,
            joint_attention_dim=16,
            guidance_embeds=False,
            axes_dims_rope=(8, 4, 4),
        )
        vae = AutoencoderKLQwenImage(
            base_dim=z_dim * 6,
            z_dim=z_dim,
            dim_mult=[1, 2, 4],
            num_res_blocks=1,
            temperal_downsample=[False, True],
            latents_mean=[0.1, -0.2, 0.0, 0.3],
            latents_std=[1.5, 0.8, 1.0, 2.0],
        )
        text_encoder = Qwen2_5_VLForConditionalGeneration(config)
    scheduler = FlowMatchEulerDiscreteScheduler(
        num_train_timesteps=1000,
        shift=1.0,
        use_dynamic_shifting=True,
        base_shift=0.5,
        max_shift=0.9,
        base_image_seq_len=256,
        max_image_seq_len=8192,
        shift_terminal=0.02,
        time_shift_type="exponential",
    )
    return _eval_all(
        {
            "scheduler": scheduler,
            "vae": vae,
            "text_encoder": text_encoder,
            "tokenizer": tokenizer,
            "image_processor": tiny_qwen_image_processor(),
            "transformer": transformer,
        }
    )


def save_tiny_pipeline(kind: str, folder: str | Path, seed: int = 0) -> Path:
    """Write a diffusers pipeline folder of tiny random weights; ``kind`` is flux, sd3 or qwen_edit.

    FLUX and SD3 are written by ``Pipeline(**components).save_pretrained(folder)``. Qwen-Image-Edit is
    written as a ``QwenImageEditPlusPipeline`` with ``processor=None`` (transformers 5 cannot build the
    ``Qwen2VLProcessor`` without torchvision) and the PIL image processor saved in ``processor/``, where
    a real Qwen-Image-Edit folder keeps its ``preprocessor_config.json``.
    """
    folder = Path(folder)
    if kind == "flux":
        from diffusers import FluxPipeline

        FluxPipeline(**tiny_flux_components(seed)).save_pretrained(folder)
    elif kind == "sd3":
        from diffusers import StableDiffusion3Pipeline

        StableDiffusion3Pipeline(**tiny_sd3_components(seed)).save_pretrained(folder)
    elif kind == "qwen_edit":
        from diffusers import QwenImageEditPlusPipeline

        components = tiny_qwen_edit_components(seed)
        image_processor = components.pop("image_processor")
        QwenImageEditPlusPipeline(processor=None, **components).save_pretrained(folder)
        image_processor.save_pretrained(folder / "processor")
    else:
        raise ValueError(f"save_tiny_pipeline: kind={kind!r} is not one of 'flux', 'sd3', 'qwen_edit'")
    return folder
