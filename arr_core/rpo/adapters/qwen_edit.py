"""Qwen-Image-Edit (and -2509, "Edit Plus") as an RPO ``Policy`` for instruction-based image editing.

Classes (diffusers 0.42.1 / transformers 5): ``QwenImageEditPipeline`` (Qwen-Image-Edit) and
``QwenImageEditPlusPipeline`` (Qwen-Image-Edit-2509, the paper's editing model), both built from
``QwenImageTransformer2DModel``, ``AutoencoderKLQwenImage``, ``Qwen2_5_VLForConditionalGeneration``
(text encoder), ``Qwen2Tokenizer`` and ``FlowMatchEulerDiscreteScheduler``. The variant is read from the
folder's ``model_index.json``.

What follows the pipelines (``QwenImageEdit[Plus]Pipeline.__call__``):

- the source image enters twice, as the pipelines do: (1) through the Qwen2.5-VL text encoder, inside the
  prompt template (Plus: "Picture 1: <|vision_start|><|image_pad|><|vision_end|>" + instruction, the image at
  ~384² pixels; Edit: the image at the VAE size), hidden states of the last layer with the first
  ``prompt_template_encode_start_idx`` template tokens dropped; (2) as conditioning latents: VAE-encoded
  (distribution mode), normalised by the VAE's ``latents_mean``/``latents_std``, packed 2×2 and concatenated
  after the noisy image tokens; the transformer's output keeps only the first (noisy-image) tokens;
- latents (b, n, 4z): noise of shape (b, 1, z, h/8, w/8) from ``randn_tensor``, packed 2×2;
- schedule: ``linspace(1, 1/n, n)`` with ``mu = calculate_shift(image tokens)`` through the pipeline's
  scheduler (exponential time shift, terminal 0.02 for the released config), final 0;
- network call: ``timestep = (1000·σ)/1000`` exactly as the pipeline computes it; ``img_shapes`` lists the
  output grid then the source grid; all-ones text masks are passed as ``None`` (as the pipeline does);
- optional true CFG (``true_cfg_scale`` > 1, negative prompt " " by default) with the pipeline's norm
  rescaling: v = c·‖v_cond‖/‖c‖ with c = v_neg + s·(v_cond − v_neg), norms over the channel axis.

Deviations, on purpose:

- Fixed output size: every source image is resized to the policy's ``height × width`` before VAE encoding
  (the pipelines resize each source to ~1024² pixels at its own aspect ratio and make the output that size),
  so a batch of edits stacks into one tensor and a trajectory's shapes never change.
- No ``Qwen2VLProcessor``: in transformers 5 it cannot be built without torchvision (its constructor checks
  for a video processor class that only exists with torchvision), and this project's CPU environment has no
  torchvision. ``encode`` does that processor's work itself: the Qwen2-VL image processor (PIL backend) for
  ``pixel_values``/``image_grid_thw``, each ``<|image_pad|>`` expanded to ``prod(grid_thw) / merge_size²``
  tokens, then the tokenizer with padding. A test compares it with ``Qwen2VLProcessor`` where torchvision is
  installed and skips, saying so, where it is not.
- ``prompt_embeds`` may be passed to ``encode`` instead of running the text encoder (e.g. precomputed on
  another machine); the source images are still needed for the conditioning latents.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from arr_core.rpo.policy import Cond

# Attention projections of Qwen-Image's dual-stream blocks (image and text streams).
QWEN_EDIT_LORA_TARGETS = [
    "attn.to_q",
    "attn.to_k",
    "attn.to_v",
    "attn.to_out.0",
    "attn.add_q_proj",
    "attn.add_k_proj",
    "attn.add_v_proj",
    "attn.to_add_out",
]

VARIANTS = {"QwenImageEditPipeline": "edit", "QwenImageEditPlusPipeline": "edit_plus"}
# QwenImageEditPlusPipeline's CONDITION_IMAGE_SIZE: the pixel budget of the image the text encoder sees.
CONDITION_IMAGE_AREA = 384 * 384


def _as_dtype(dtype: torch.dtype | str, where: str) -> torch.dtype:
    """A torch dtype, or its name as configs spell it ("bfloat16", "float32", "float16")."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype in ("float32", "bfloat16", "float16"):
        return getattr(torch, dtype)
    raise ValueError(
        f"{where}: dtype={dtype!r} must be a torch.dtype or one of 'float32', 'bfloat16', 'float16'"
    )


def _dimensions(area: int, ratio: float) -> tuple[int, int]:
    """(width, height) with about ``area`` pixels and aspect ``ratio``, multiples of 32 (the pipelines'
    ``calculate_dimensions``)."""
    width = math.sqrt(area * ratio)
    height = width / ratio
    return int(round(width / 32) * 32), int(round(height / 32) * 32)


def qwen_vl_inputs(
    tokenizer: Any, image_processor: Any, texts: list[str], images: list[Image.Image]
) -> dict[str, torch.Tensor]:
    """What ``Qwen2VLProcessor(text=texts, images=images, padding=True, return_tensors="pt")`` returns.

    Images fill the ``<|image_pad|>`` placeholders in order; each placeholder becomes
    ``prod(image_grid_thw[i]) // merge_size²`` image tokens.
    """
    image_token = getattr(tokenizer, "image_token", None) or "<|image_pad|>"
    vision = image_processor(images=images, return_tensors="pt")
    grid = vision["image_grid_thw"]
    merge = image_processor.merge_size**2
    expanded, index = [], 0
    for text in texts:
        parts = text.split(image_token)
        if index + len(parts) - 1 > len(images):
            raise ValueError(
                f"qwen_vl_inputs: the texts hold more {image_token} placeholders than the {len(images)} images"
            )
        out = parts[0]
        for part in parts[1:]:
            out += image_token * int(grid[index].prod() // merge) + part
            index += 1
        expanded.append(out)
    if index != len(images):
        raise ValueError(f"qwen_vl_inputs: {len(images)} images but {index} {image_token} placeholders")
    tokens = tokenizer(expanded, padding=True, return_tensors="pt")
    return {
        "input_ids": tokens["input_ids"],
        "attention_mask": tokens["attention_mask"],
        "pixel_values": vision["pixel_values"],
        "image_grid_thw": grid,
    }


class QwenEditPolicy:
    """RPO policy over a Qwen-Image-Edit pipeline: packed latents (b, n, 4z), source image as conditioning."""

    name = "qwen_edit"

    def __init__(
        self,
        pipe: Any,
        image_processor: Any | None,
        *,
        height: int = 1024,
        width: int = 1024,
        true_cfg_scale: float = 1.0,
        negative_prompt: str = " ",
        max_sequence_length: int = 1024,
        source: str | None = None,
    ) -> None:
        cls_name = type(pipe).__name__
        if cls_name not in VARIANTS:
            raise ValueError(f"QwenEditPolicy: pipe is a {cls_name}; expected one of {sorted(VARIANTS)}")
        multiple = pipe.vae_scale_factor * 2
        if height <= 0 or width <= 0 or height % multiple or width % multiple:
            raise ValueError(
                f"QwenEditPolicy: height={height}, width={width} must be positive multiples of {multiple} "
                "(VAE downsampling × 2×2 packing); pick e.g. 1024×1024"
            )
        if true_cfg_scale < 1.0:
            raise ValueError(
                f"QwenEditPolicy: true_cfg_scale={true_cfg_scale} must be ≥ 1 (1 switches CFG off)"
            )
        if pipe.transformer.config.guidance_embeds:
            raise ValueError("QwenEditPolicy: guidance-distilled Qwen-Image transformers are not supported")
        self.pipe = pipe
        self.variant = VARIANTS[cls_name]
        self.image_processor = image_processor
        self.transformer = pipe.transformer
        self.vae = pipe.vae
        self.height = height
        self.width = width
        self.true_cfg_scale = float(true_cfg_scale)
        self.negative_prompt = negative_prompt
        self.max_sequence_length = max_sequence_length
        self.source = source
        self.lora_targets = list(QWEN_EDIT_LORA_TARGETS)
        self.latent_channels = self.transformer.config.in_channels // 4
        self.latent_height = 2 * (height // multiple)
        self.latent_width = 2 * (width // multiple)
        self.image_seq_len = (self.latent_height // 2) * (self.latent_width // 2)

    @property
    def do_cfg(self) -> bool:
        return self.true_cfg_scale > 1.0

    @classmethod
    def from_components(
        cls,
        components: dict[str, Any],
        *,
        variant: str = "edit_plus",
        device: str | torch.device = "cpu",
        dtype: torch.dtype | str = torch.float32,
        height: int = 1024,
        width: int = 1024,
        true_cfg_scale: float = 1.0,
        negative_prompt: str = " ",
        max_sequence_length: int = 1024,
    ) -> QwenEditPolicy:
        """Build from scheduler/vae/text_encoder/tokenizer/transformer (+ ``image_processor``), e.g.
        ``tiny_qwen_edit_components()``; ``variant`` is ``edit`` or ``edit_plus`` (2509)."""
        from diffusers import QwenImageEditPipeline, QwenImageEditPlusPipeline

        pipe_cls = {"edit": QwenImageEditPipeline, "edit_plus": QwenImageEditPlusPipeline}.get(variant)
        if pipe_cls is None:
            raise ValueError(
                f"QwenEditPolicy.from_components: variant={variant!r} is not 'edit' or 'edit_plus'"
            )
        parts = dict(components)
        image_processor = parts.pop("image_processor", None)
        parts.pop("processor", None)
        pipe = pipe_cls(processor=None, **parts).to(device)
        dtype = _as_dtype(dtype, "QwenEditPolicy.from_components")
        if pipe.transformer.dtype != dtype:
            pipe = pipe.to(dtype=dtype)
        return cls(
            pipe,
            image_processor,
            height=height,
            width=width,
            true_cfg_scale=true_cfg_scale,
            negative_prompt=negative_prompt,
            max_sequence_length=max_sequence_length,
        )

    @classmethod
    def from_pretrained(
        cls,
        folder: str | Path,
        device: str | torch.device = "cpu",
        dtype: torch.dtype | str = torch.float32,
        height: int = 1024,
        width: int = 1024,
        true_cfg_scale: float = 1.0,
        negative_prompt: str = " ",
        max_sequence_length: int = 1024,
        load_text_encoder: bool = True,
    ) -> QwenEditPolicy:
        """Load a local Qwen-Image-Edit(-2509) diffusers folder; never downloads.

        ``load_text_encoder=False`` skips the 7B Qwen2.5-VL (then ``encode`` needs ``prompt_embeds``).
        The image processor is read from ``processor/preprocessor_config.json``.
        """
        import diffusers
        from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

        folder = Path(folder)
        dtype = _as_dtype(dtype, "QwenEditPolicy.from_pretrained")
        index_path = folder / "model_index.json"
        if not index_path.is_file():
            raise ValueError(
                f"QwenEditPolicy.from_pretrained: {folder} has no model_index.json; pass a local diffusers "
                "folder such as a snapshot of Qwen/Qwen-Image-Edit-2509"
            )
        cls_name = json.loads(index_path.read_text()).get("_class_name")
        if cls_name not in VARIANTS:
            raise ValueError(
                f"QwenEditPolicy.from_pretrained: {index_path} names _class_name={cls_name!r}; "
                f"expected one of {sorted(VARIANTS)}"
            )
        skip: dict[str, Any] = {"processor": None}
        if not load_text_encoder:
            skip.update(text_encoder=None, tokenizer=None)
        pipe = (
            getattr(diffusers, cls_name)
            .from_pretrained(folder, dtype=dtype, local_files_only=True, **skip)
            .to(device)
        )
        for module in pipe.components.values():
            if isinstance(module, torch.nn.Module):
                module.eval()
        image_processor = None
        if load_text_encoder:
            image_processor = Qwen2VLImageProcessorPil.from_pretrained(folder / "processor")
        return cls(
            pipe,
            image_processor,
            height=height,
            width=width,
            true_cfg_scale=true_cfg_scale,
            negative_prompt=negative_prompt,
            max_sequence_length=max_sequence_length,
            source=str(folder),
        )

    @property
    def device(self) -> torch.device:
        return self.transformer.device

    @property
    def dtype(self) -> torch.dtype:
        return self.transformer.dtype

    def _text_images(self, images: list[Image.Image]) -> list[Image.Image]:
        """The image the text encoder sees: Plus ~384² pixels at the source's aspect; Edit the VAE-size image."""
        out = []
        for img in images:
            if self.variant == "edit_plus":
                w, h = _dimensions(CONDITION_IMAGE_AREA, img.width / img.height)
            else:
                w, h = self.width, self.height
            out.append(self.pipe.image_processor.resize(img, h, w))
        return out

    @torch.no_grad()
    def encode_text(self, prompts: list[str], images: list[Image.Image]) -> tuple[torch.Tensor, torch.Tensor]:
        """(prompt_embeds (b, s, d), mask (b, s) long) as ``_get_qwen_prompt_embeds`` computes them."""
        if self.pipe.text_encoder is None or self.pipe.tokenizer is None or self.image_processor is None:
            raise ValueError(
                "QwenEditPolicy.encode: no text encoder loaded (load_text_encoder=False); pass prompt_embeds"
            )
        template = self.pipe.prompt_template_encode
        drop = self.pipe.prompt_template_encode_start_idx
        prefix = (
            "Picture 1: <|vision_start|><|image_pad|><|vision_end|>" if self.variant == "edit_plus" else ""
        )
        texts = [template.format(prefix + p) for p in prompts]
        inputs = qwen_vl_inputs(self.pipe.tokenizer, self.image_processor, texts, self._text_images(images))
        encoder = self.pipe.text_encoder
        inputs = {k: v.to(encoder.device) for k, v in inputs.items()}
        inputs["pixel_values"] = inputs["pixel_values"].to(encoder.dtype)
        hidden = encoder(**inputs, output_hidden_states=True).hidden_states[-1]
        pieces = [h[drop:] for h in self.pipe._extract_masked_hidden(hidden, inputs["attention_mask"])]
        length = max(p.shape[0] for p in pieces)
        if length > self.max_sequence_length:
            raise ValueError(
                f"QwenEditPolicy.encode: a prompt gives {length} text tokens > max_sequence_length="
                f"{self.max_sequence_length}; shorten it or raise the limit"
            )
        embeds = torch.stack([torch.cat([p, p.new_zeros(length - p.shape[0], p.shape[1])]) for p in pieces])
        mask = torch.stack(
            [
                torch.cat(
                    [
                        torch.ones(p.shape[0], dtype=torch.long),
                        torch.zeros(length - p.shape[0], dtype=torch.long),
                    ]
                )
                for p in pieces
            ]
        )
        return embeds.to(self.device), mask.to(self.device)

    @torch.no_grad()
    def encode_images(self, images: list[Image.Image]) -> torch.Tensor:
        """Source images → packed, normalised conditioning latents (b, n, 4z), VAE distribution mode."""
        pixels = torch.cat(
            [self.pipe.image_processor.preprocess(img, self.height, self.width) for img in images]
        )
        pixels = pixels.unsqueeze(2).to(device=self.vae.device, dtype=self.vae.dtype)
        latents = self.pipe._encode_vae_image(pixels, generator=None)
        b, z, _, h, w = latents.shape
        return self.pipe._pack_latents(latents, b, z, h, w).to(self.device, torch.float32)

    def encode_latents(self, images: list[Image.Image]) -> torch.Tensor:
        """RGB images → packed clean latents x₀ (b, n, 4z) in the space ``decode`` reads: the same
        normalised VAE latents as the source conditioning (``encode_images``)."""
        return self.encode_images([img.convert("RGB") for img in images])

    def encode(
        self,
        prompts: list[str],
        conditions: list[Image.Image] | None = None,
        prompt_embeds: torch.Tensor | None = None,
        prompt_embeds_mask: torch.Tensor | None = None,
    ) -> Cond:
        """{"prompt_embeds", "prompt_embeds_mask", "image_latents"} (+ ``negative_`` text keys with CFG).

        ``conditions`` (the source images, one per prompt) are required. ``prompt_embeds`` (b, s, d) with an
        optional ``prompt_embeds_mask`` (b, s) replace the text encoder (no CFG in that case).
        """
        if not conditions or len(conditions) != len(prompts):
            raise ValueError(
                f"QwenEditPolicy.encode: conditions must hold one source image per prompt "
                f"({len(prompts)} prompts, {0 if not conditions else len(conditions)} images)"
            )
        images = [img.convert("RGB") for img in conditions]
        if prompt_embeds is None:
            embeds, mask = self.encode_text(prompts, images)
        else:
            if self.do_cfg:
                raise ValueError(
                    "QwenEditPolicy.encode: prompt_embeds cannot be combined with true_cfg_scale > 1"
                )
            if prompt_embeds.shape[0] != len(prompts):
                raise ValueError(
                    f"QwenEditPolicy.encode: prompt_embeds has batch {prompt_embeds.shape[0]}, prompts {len(prompts)}"
                )
            embeds = prompt_embeds.to(self.device)
            mask = (
                prompt_embeds_mask
                if prompt_embeds_mask is not None
                else torch.ones(embeds.shape[:2], dtype=torch.long)
            ).to(self.device)
        cond = {
            "prompt_embeds": embeds,
            "prompt_embeds_mask": mask,
            "image_latents": self.encode_images(images),
        }
        if self.do_cfg:
            neg, neg_mask = self.encode_text([self.negative_prompt] * len(prompts), images)
            cond["negative_prompt_embeds"] = neg
            cond["negative_prompt_embeds_mask"] = neg_mask
        return cond

    def initial_latents(self, batch: int, generator: torch.Generator) -> torch.Tensor:
        """Packed fp32 noise (b, h/16·w/16, 4z), drawn as ``QwenImageEdit*Pipeline.prepare_latents`` does."""
        from diffusers.utils.torch_utils import randn_tensor

        shape = (batch, 1, self.latent_channels, self.latent_height, self.latent_width)
        noise = randn_tensor(shape, generator=generator, device=self.device, dtype=torch.float32)
        return self.pipe._pack_latents(
            noise, batch, self.latent_channels, self.latent_height, self.latent_width
        )

    def sigmas(self, num_steps: int) -> torch.Tensor:
        """(num_steps + 1,) fp32 on the policy's device: the pipeline's shifted schedule, final entry 0."""
        from diffusers import FlowMatchEulerDiscreteScheduler
        from diffusers.pipelines.qwenimage.pipeline_qwenimage_edit_plus import calculate_shift

        if num_steps < 1:
            raise ValueError(f"QwenEditPolicy.sigmas: num_steps={num_steps} must be ≥ 1")
        config = self.pipe.scheduler.config
        scheduler = FlowMatchEulerDiscreteScheduler.from_config(config)
        mu = calculate_shift(
            self.image_seq_len,
            config.get("base_image_seq_len", 256),
            config.get("max_image_seq_len", 4096),
            config.get("base_shift", 0.5),
            config.get("max_shift", 1.15),
        )
        sigmas = np.linspace(1.0, 1 / num_steps, num_steps)
        scheduler.set_timesteps(num_steps, device=self.device, sigmas=sigmas, mu=mu)
        return scheduler.sigmas.to(torch.float32)

    def _forward(
        self, hidden: torch.Tensor, timestep: torch.Tensor, embeds: torch.Tensor, mask: torch.Tensor
    ):
        dtype = self.dtype
        grid = (1, self.latent_height // 2, self.latent_width // 2)
        out = self.transformer(
            hidden_states=hidden.to(dtype),
            timestep=timestep,
            guidance=None,
            encoder_hidden_states_mask=None if bool(mask.all()) else mask,
            encoder_hidden_states=embeds.to(dtype),
            img_shapes=[[grid, grid]] * hidden.shape[0],
            return_dict=False,
        )[0]
        return out.to(torch.float32)

    def velocity(self, latents: torch.Tensor, sigma: torch.Tensor, cond: Cond) -> torch.Tensor:
        """v ≈ ε − x₀ for the noisy image tokens (b, n, 4z) at ``sigma`` (b,) or scalar."""
        batch, n = latents.shape[:2]
        sigma = torch.as_tensor(sigma, dtype=torch.float32, device=latents.device).reshape(-1)
        if sigma.numel() == 1:
            sigma = sigma.expand(batch)
        image_latents = cond["image_latents"]
        if (
            sigma.shape[0] != batch
            or image_latents.shape[0] != batch
            or cond["prompt_embeds"].shape[0] != batch
        ):
            raise ValueError(
                f"QwenEditPolicy.velocity: batch mismatch: latents {batch}, sigma {sigma.shape[0]}, "
                f"cond['image_latents'] {image_latents.shape[0]}, cond['prompt_embeds'] {cond['prompt_embeds'].shape[0]}"
            )
        if image_latents.shape[1] != n:
            raise ValueError(
                f"QwenEditPolicy.velocity: cond['image_latents'] has {image_latents.shape[1]} tokens, latents {n} "
                "(encode and sample with the same policy size)"
            )
        hidden = torch.cat([latents, image_latents.to(latents.dtype)], dim=1)
        timestep = (sigma * 1000).to(self.dtype) / 1000
        out = self._forward(hidden, timestep, cond["prompt_embeds"], cond["prompt_embeds_mask"])[:, :n]
        if not self.do_cfg:
            return out
        if "negative_prompt_embeds" not in cond:
            raise ValueError(
                "QwenEditPolicy.velocity: true_cfg_scale > 1 needs cond['negative_prompt_embeds']"
            )
        neg = self._forward(
            hidden, timestep, cond["negative_prompt_embeds"], cond["negative_prompt_embeds_mask"]
        )
        neg = neg[:, :n]
        combined = neg + self.true_cfg_scale * (out - neg)
        return combined * (out.norm(dim=-1, keepdim=True) / combined.norm(dim=-1, keepdim=True))

    @torch.no_grad()
    def decode_tensor(self, latents: torch.Tensor) -> torch.Tensor:
        """Packed latents at σ = 0 → images (b, 3, H, W) in [0, 1], fp32."""
        unpacked = self.pipe._unpack_latents(latents, self.height, self.width, self.pipe.vae_scale_factor)
        unpacked = unpacked.to(self.vae.dtype)
        z = self.vae.config.z_dim
        mean = (
            torch.tensor(self.vae.config.latents_mean).view(1, z, 1, 1, 1).to(unpacked.device, unpacked.dtype)
        )
        inv_std = 1.0 / torch.tensor(self.vae.config.latents_std).view(1, z, 1, 1, 1).to(
            unpacked.device, unpacked.dtype
        )
        image = self.vae.decode(unpacked / inv_std + mean, return_dict=False)[0][:, :, 0]
        return self.pipe.image_processor.postprocess(image, output_type="pt").to(torch.float32)

    def decode(self, latents: torch.Tensor) -> list[Image.Image]:
        """Packed latents at σ = 0 → RGB PIL images."""
        return self.pipe.image_processor.numpy_to_pil(
            self.decode_tensor(latents).permute(0, 2, 3, 1).cpu().numpy()
        )

    def describe(self) -> dict[str, Any]:
        return {
            "class": type(self).__name__,
            "variant": self.variant,
            "transformer": type(self.transformer).__name__,
            "parameters": sum(p.numel() for p in self.transformer.parameters()),
            "source": self.source,
            "height": self.height,
            "width": self.width,
            "true_cfg_scale": self.true_cfg_scale,
            "dtype": str(self.dtype),
        }
