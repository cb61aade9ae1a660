"""Stable Diffusion 3 / 3.5 as an RPO ``Policy``, from ``StableDiffusion3Pipeline`` components.

Follows diffusers 0.42.1's ``StableDiffusion3Pipeline.__call__`` so that plain Euler over ``sigmas()`` with
``velocity()`` reproduces it (tested on tiny models, with and without guidance):

- prompts: ``StableDiffusion3Pipeline.encode_prompt`` (two CLIPs, penultimate hidden states concatenated and
  padded to the T5 width, then T5; pooled = both CLIP projections);
- latents: (b, c, h/8, w/8) noise from ``randn_tensor``; no packing;
- schedule: the pipeline's ``FlowMatchEulerDiscreteScheduler.set_timesteps(n)`` on a fresh copy: static shift
  from the scheduler config (3.0 for SD3/SD3.5), or dynamic shift (``calculate_shift``) when the config
  asks for it; final 0 appended;
- network call: SD3's transformer takes timesteps on the 0..1000 scale: ``timestep = 1000·σ``;
- optional true classifier-free guidance (Flow-GRPO trains SD3.5 with CFG 4.5): with ``guidance_scale`` > 1
  the negative prompt ("" by default, as the pipeline) is encoded into the ``negative_*`` keys of the
  conditioning, both halves go through the transformer as one batch [uncond; cond] and
  v = v_uncond + s·(v_cond − v_uncond);
- sign: the scheduler's Euler step is ``x + (σ_next − σ)·output``, so the output is v ≈ ε − x₀ unchanged.

Deviations: latents stay fp32 between steps; skip-layer guidance and IP-adapters are not supported.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from PIL import Image

from arr_core.rpo.policy import Cond

# Joint attention projections of SD3's MMDiT blocks (the last block has no ``to_add_out``; SD3.5's extra
# ``attn2`` self-attention is left out, as Flow-GRPO does).
SD3_LORA_TARGETS = [
    "attn.to_q",
    "attn.to_k",
    "attn.to_v",
    "attn.to_out.0",
    "attn.add_q_proj",
    "attn.add_k_proj",
    "attn.add_v_proj",
    "attn.to_add_out",
]


def _as_dtype(dtype: torch.dtype | str, where: str) -> torch.dtype:
    """A torch dtype, or its name as configs spell it ("bfloat16", "float32", "float16")."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype in ("float32", "bfloat16", "float16"):
        return getattr(torch, dtype)
    raise ValueError(
        f"{where}: dtype={dtype!r} must be a torch.dtype or one of 'float32', 'bfloat16', 'float16'"
    )


class SD3Policy:
    """RPO policy over a ``StableDiffusion3Pipeline``: latents (b, c, h, w), fp32 outside the transformer."""

    name = "sd3"

    def __init__(
        self,
        pipe: Any,
        *,
        height: int = 512,
        width: int = 512,
        guidance_scale: float = 1.0,
        negative_prompt: str = "",
        max_sequence_length: int = 256,
        source: str | None = None,
    ) -> None:
        multiple = pipe.vae_scale_factor * pipe.patch_size
        if height <= 0 or width <= 0 or height % multiple or width % multiple:
            raise ValueError(
                f"SD3Policy: height={height}, width={width} must be positive multiples of {multiple} "
                "(VAE downsampling × patch size); pick e.g. 512×512"
            )
        if guidance_scale < 1.0:
            raise ValueError(f"SD3Policy: guidance_scale={guidance_scale} must be ≥ 1 (1 switches CFG off)")
        if not 0 < max_sequence_length <= 512:
            raise ValueError(f"SD3Policy: max_sequence_length={max_sequence_length} must be in 1..512")
        self.pipe = pipe
        self.transformer = pipe.transformer
        self.vae = pipe.vae
        self.height = height
        self.width = width
        self.guidance_scale = float(guidance_scale)
        self.negative_prompt = negative_prompt
        self.max_sequence_length = max_sequence_length
        self.source = source
        self.lora_targets = list(SD3_LORA_TARGETS)
        self.latent_shape = (
            self.transformer.config.in_channels,
            height // pipe.vae_scale_factor,
            width // pipe.vae_scale_factor,
        )

    @property
    def do_cfg(self) -> bool:
        return self.guidance_scale > 1.0

    @classmethod
    def from_components(
        cls,
        components: dict[str, Any],
        *,
        device: str | torch.device = "cpu",
        dtype: torch.dtype | str = torch.float32,
        height: int = 512,
        width: int = 512,
        guidance_scale: float = 1.0,
        negative_prompt: str = "",
        max_sequence_length: int = 256,
    ) -> SD3Policy:
        """Build from ``StableDiffusion3Pipeline`` keyword arguments (e.g. ``tiny_sd3_components()``)."""
        from diffusers import StableDiffusion3Pipeline

        pipe = StableDiffusion3Pipeline(**components).to(device)
        dtype = _as_dtype(dtype, "SD3Policy.from_components")
        if pipe.transformer.dtype != dtype:
            pipe = pipe.to(dtype=dtype)
        return cls(
            pipe,
            height=height,
            width=width,
            guidance_scale=guidance_scale,
            negative_prompt=negative_prompt,
            max_sequence_length=max_sequence_length,
        )

    @classmethod
    def from_pretrained(
        cls,
        folder: str | Path,
        device: str | torch.device = "cpu",
        dtype: torch.dtype | str = torch.float32,
        height: int = 512,
        width: int = 512,
        guidance_scale: float = 1.0,
        negative_prompt: str = "",
        max_sequence_length: int = 256,
    ) -> SD3Policy:
        """Load a local diffusers SD3/SD3.5 folder; never downloads."""
        from diffusers import StableDiffusion3Pipeline

        folder = Path(folder)
        dtype = _as_dtype(dtype, "SD3Policy.from_pretrained")
        if not (folder / "model_index.json").is_file():
            raise ValueError(
                f"SD3Policy.from_pretrained: {folder} has no model_index.json; pass a local diffusers "
                "folder such as a snapshot of stabilityai/stable-diffusion-3.5-medium"
            )
        pipe = StableDiffusion3Pipeline.from_pretrained(folder, dtype=dtype, local_files_only=True).to(device)
        for module in pipe.components.values():
            if isinstance(module, torch.nn.Module):
                module.eval()
        return cls(
            pipe,
            height=height,
            width=width,
            guidance_scale=guidance_scale,
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

    @torch.no_grad()
    def encode(self, prompts: list[str], conditions: list[Image.Image] | None = None) -> Cond:
        """{"prompt_embeds": (b, 77+s, d), "pooled_prompt_embeds": (b, p)} and, with CFG, the same two
        keys prefixed ``negative_`` for the negative prompt."""
        if conditions is not None:
            raise ValueError("SD3Policy.encode: conditions must be None (SD3 is text-to-image)")
        if not prompts or not all(isinstance(p, str) for p in prompts):
            raise ValueError("SD3Policy.encode: prompts must be a non-empty list of strings")
        embeds, neg_embeds, pooled, neg_pooled = self.pipe.encode_prompt(
            prompt=prompts,
            prompt_2=None,
            prompt_3=None,
            negative_prompt=[self.negative_prompt] * len(prompts) if self.do_cfg else None,
            do_classifier_free_guidance=self.do_cfg,
            device=self.device,
            max_sequence_length=self.max_sequence_length,
        )
        cond = {"prompt_embeds": embeds, "pooled_prompt_embeds": pooled}
        if self.do_cfg:
            cond["negative_prompt_embeds"] = neg_embeds
            cond["negative_pooled_prompt_embeds"] = neg_pooled
        return cond

    def initial_latents(self, batch: int, generator: torch.Generator) -> torch.Tensor:
        """fp32 noise (b, c, h/8, w/8), drawn as ``StableDiffusion3Pipeline.prepare_latents`` does."""
        from diffusers.utils.torch_utils import randn_tensor

        return randn_tensor(
            (batch, *self.latent_shape), generator=generator, device=self.device, dtype=torch.float32
        )

    def sigmas(self, num_steps: int) -> torch.Tensor:
        """(num_steps + 1,) fp32 on the policy's device: the scheduler's shifted schedule, final entry 0."""
        from diffusers import FlowMatchEulerDiscreteScheduler
        from diffusers.pipelines.stable_diffusion_3.pipeline_stable_diffusion_3 import calculate_shift

        if num_steps < 1:
            raise ValueError(f"SD3Policy.sigmas: num_steps={num_steps} must be ≥ 1")
        config = self.pipe.scheduler.config
        scheduler = FlowMatchEulerDiscreteScheduler.from_config(config)
        kwargs: dict[str, float] = {}
        if config.get("use_dynamic_shifting", None):
            patch = self.transformer.config.patch_size
            image_seq_len = (self.latent_shape[1] // patch) * (self.latent_shape[2] // patch)
            kwargs["mu"] = calculate_shift(
                image_seq_len,
                config.get("base_image_seq_len", 256),
                config.get("max_image_seq_len", 4096),
                config.get("base_shift", 0.5),
                config.get("max_shift", 1.16),
            )
        scheduler.set_timesteps(num_steps, device=self.device, **kwargs)
        return scheduler.sigmas.to(torch.float32)

    def velocity(self, latents: torch.Tensor, sigma: torch.Tensor, cond: Cond) -> torch.Tensor:
        """v ≈ ε − x₀ for latents (b, c, h, w) at ``sigma`` (b,) or scalar; with CFG the guided velocity."""
        batch = latents.shape[0]
        sigma = torch.as_tensor(sigma, dtype=torch.float32, device=latents.device).reshape(-1)
        if sigma.numel() == 1:
            sigma = sigma.expand(batch)
        if sigma.shape[0] != batch or cond["prompt_embeds"].shape[0] != batch:
            raise ValueError(
                f"SD3Policy.velocity: batch mismatch: latents {batch}, sigma {sigma.shape[0]}, "
                f"cond['prompt_embeds'] {cond['prompt_embeds'].shape[0]}"
            )
        dtype = self.dtype
        embeds, pooled = cond["prompt_embeds"], cond["pooled_prompt_embeds"]
        hidden = latents
        if self.do_cfg:
            if "negative_prompt_embeds" not in cond:
                raise ValueError(
                    "SD3Policy.velocity: guidance_scale > 1 needs cond['negative_prompt_embeds'] "
                    "(encode with the same policy)"
                )
            # The pipeline's order: [uncond; cond] in one batch.
            embeds = torch.cat([cond["negative_prompt_embeds"], embeds])
            pooled = torch.cat([cond["negative_pooled_prompt_embeds"], pooled])
            hidden = torch.cat([latents, latents])
            sigma = torch.cat([sigma, sigma])
        out = self.transformer(
            hidden_states=hidden.to(dtype),
            timestep=sigma * self.pipe.scheduler.config.num_train_timesteps,
            encoder_hidden_states=embeds.to(dtype),
            pooled_projections=pooled.to(dtype),
            return_dict=False,
        )[0].to(torch.float32)
        if self.do_cfg:
            uncond, text = out.chunk(2)
            out = uncond + self.guidance_scale * (text - uncond)
        return out

    @torch.no_grad()
    def decode_tensor(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents at σ = 0 → images (b, 3, H, W) in [0, 1], fp32."""
        config = self.vae.config
        scaled = latents / config.scaling_factor + config.shift_factor
        image = self.vae.decode(scaled.to(self.vae.dtype), return_dict=False)[0]
        return self.pipe.image_processor.postprocess(image, output_type="pt").to(torch.float32)

    def decode(self, latents: torch.Tensor) -> list[Image.Image]:
        """Latents at σ = 0 → RGB PIL images (as the pipeline with ``output_type="pil"``)."""
        return self.pipe.image_processor.numpy_to_pil(
            self.decode_tensor(latents).permute(0, 2, 3, 1).cpu().numpy()
        )

    @torch.no_grad()
    def encode_latents(self, images: list[Image.Image]) -> torch.Tensor:
        """RGB images → clean latents x₀ (b, c, h/8, w/8), fp32: the inverse of ``decode`` up to the VAE
        (resized to the policy's size, VAE distribution mode, (z − shift)·scale)."""
        pixels = self.pipe.image_processor.preprocess(images, self.height, self.width)
        z = self.vae.encode(pixels.to(self.vae.device, self.vae.dtype)).latent_dist.mode()
        shift = self.vae.config.shift_factor or 0.0
        return ((z - shift) * self.vae.config.scaling_factor).to(self.device, torch.float32)

    def describe(self) -> dict[str, Any]:
        return {
            "class": type(self).__name__,
            "transformer": type(self.transformer).__name__,
            "parameters": sum(p.numel() for p in self.transformer.parameters()),
            "source": self.source,
            "height": self.height,
            "width": self.width,
            "guidance_scale": self.guidance_scale,
            "max_sequence_length": self.max_sequence_length,
            "dtype": str(self.dtype),
        }
