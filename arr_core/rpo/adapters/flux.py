"""FLUX.1 (text-to-image, guidance-distilled) as an RPO ``Policy``, from ``FluxPipeline`` components.

Everything model-specific is read from diffusers 0.42.1's ``FluxPipeline`` so that plain Euler over
``sigmas()`` with ``velocity()`` reproduces ``FluxPipeline.__call__`` (tested to 1e-5 on tiny models):

- prompts: ``FluxPipeline.encode_prompt`` (CLIP pooled output + T5 hidden states, ``max_sequence_length``);
- latents: (b, c, h/8, w/8) noise from ``randn_tensor`` packed 2×2 into tokens (b, h/16·w/16, 4c) by
  ``_pack_latents``, with position ids from ``_prepare_latent_image_ids``;
- schedule: ``sigmas = linspace(1, 1/n, n)`` shifted by ``mu = calculate_shift(image tokens, ...)`` through
  the pipeline's own ``FlowMatchEulerDiscreteScheduler.set_timesteps`` (a fresh copy, so no hidden step
  index), plus the final 0;
- network call: the pipeline passes ``timestep = (1000·σ)/1000`` and the transformer multiplies by 1000
  internally; we pass the same float32 value. Guidance is the distilled guidance embedding
  (``guidance`` scalar per sample, FLUX.1-dev default 3.5), not classifier-free guidance.
- sign: the scheduler's Euler step is ``x + (σ_next − σ)·output``, so the transformer output is the velocity
  v ≈ ε − x₀ of x_σ = (1−σ)·x₀ + σ·ε, as ``arr_core.rpo.policy`` expects, with no sign change.

Deviations from the pipeline: latents are kept in fp32 between steps (the pipeline keeps them in the
transformer dtype); with an fp32 transformer the two are identical. True CFG (``true_cfg_scale``) and
IP-adapters are not supported (the paper trains FLUX.1-dev with its distilled guidance only).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from arr_core.rpo.policy import Cond

# Attention projections of FLUX's double-stream blocks (single blocks have no ``to_out``; peft matches
# by suffix, so ``attn.to_q`` etc. also hit the single blocks).
FLUX_LORA_TARGETS = [
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


class FluxPolicy:
    """RPO policy over a ``FluxPipeline``: packed latents (b, n, d), fp32 outside the transformer."""

    name = "flux"

    def __init__(
        self,
        pipe: Any,
        *,
        height: int = 512,
        width: int = 512,
        guidance: float = 3.5,
        max_sequence_length: int = 512,
        source: str | None = None,
    ) -> None:
        multiple = pipe.vae_scale_factor * 2
        if height <= 0 or width <= 0 or height % multiple or width % multiple:
            raise ValueError(
                f"FluxPolicy: height={height}, width={width} must be positive multiples of {multiple} "
                "(VAE downsampling × 2×2 packing); pick e.g. 512×512"
            )
        if not 0 < max_sequence_length <= 512:
            raise ValueError(f"FluxPolicy: max_sequence_length={max_sequence_length} must be in 1..512")
        self.pipe = pipe
        self.transformer = pipe.transformer
        self.vae = pipe.vae
        self.height = height
        self.width = width
        self.guidance = float(guidance)
        self.max_sequence_length = max_sequence_length
        self.source = source
        self.lora_targets = list(FLUX_LORA_TARGETS)
        self.num_channels_latents = self.transformer.config.in_channels // 4
        # Latent grid before packing, as FluxPipeline.prepare_latents computes it.
        self.latent_height = 2 * (height // multiple)
        self.latent_width = 2 * (width // multiple)
        self.image_seq_len = (self.latent_height // 2) * (self.latent_width // 2)
        self._ids: dict[tuple[torch.device, torch.dtype, int], tuple[torch.Tensor, torch.Tensor]] = {}

    @classmethod
    def from_components(
        cls,
        components: dict[str, Any],
        *,
        device: str | torch.device = "cpu",
        dtype: torch.dtype | str = torch.float32,
        height: int = 512,
        width: int = 512,
        guidance: float = 3.5,
        max_sequence_length: int = 512,
    ) -> FluxPolicy:
        """Build from ``FluxPipeline`` keyword arguments (e.g. ``tiny_flux_components()``)."""
        from diffusers import FluxPipeline

        pipe = FluxPipeline(**components).to(device)
        dtype = _as_dtype(dtype, "FluxPolicy.from_components")
        if pipe.transformer.dtype != dtype:
            pipe = pipe.to(dtype=dtype)
        return cls(
            pipe, height=height, width=width, guidance=guidance, max_sequence_length=max_sequence_length
        )

    @classmethod
    def from_pretrained(
        cls,
        folder: str | Path,
        device: str | torch.device = "cpu",
        dtype: torch.dtype | str = torch.float32,
        height: int = 512,
        width: int = 512,
        guidance: float = 3.5,
        max_sequence_length: int = 512,
    ) -> FluxPolicy:
        """Load a local diffusers FLUX folder (``model_index.json`` + component folders); never downloads."""
        from diffusers import FluxPipeline

        folder = Path(folder)
        dtype = _as_dtype(dtype, "FluxPolicy.from_pretrained")
        if not (folder / "model_index.json").is_file():
            raise ValueError(
                f"FluxPolicy.from_pretrained: {folder} has no model_index.json; pass a local diffusers "
                "folder such as a snapshot of black-forest-labs/FLUX.1-dev"
            )
        pipe = FluxPipeline.from_pretrained(folder, dtype=dtype, local_files_only=True).to(device)
        for module in pipe.components.values():
            if isinstance(module, torch.nn.Module):
                module.eval()
        return cls(
            pipe,
            height=height,
            width=width,
            guidance=guidance,
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
        """{"prompt_embeds": (b, s, d_t5), "pooled_prompt_embeds": (b, d_clip)} from the pipeline's encoders."""
        if conditions is not None:
            raise ValueError("FluxPolicy.encode: conditions must be None (FLUX.1 is text-to-image)")
        if not prompts or not all(isinstance(p, str) for p in prompts):
            raise ValueError("FluxPolicy.encode: prompts must be a non-empty list of strings")
        prompt_embeds, pooled, _ = self.pipe.encode_prompt(
            prompt=prompts, prompt_2=None, device=self.device, max_sequence_length=self.max_sequence_length
        )
        self._position_ids(self.device, self.dtype, prompt_embeds.shape[1])  # made here, not in the loop
        return {"prompt_embeds": prompt_embeds, "pooled_prompt_embeds": pooled}

    def initial_latents(self, batch: int, generator: torch.Generator) -> torch.Tensor:
        """Packed fp32 noise (b, h/16·w/16, 4c), drawn exactly as ``FluxPipeline.prepare_latents`` does."""
        from diffusers.utils.torch_utils import randn_tensor

        shape = (batch, self.num_channels_latents, self.latent_height, self.latent_width)
        noise = randn_tensor(shape, generator=generator, device=self.device, dtype=torch.float32)
        return self.pipe._pack_latents(
            noise, batch, self.num_channels_latents, self.latent_height, self.latent_width
        )

    def sigmas(self, num_steps: int) -> torch.Tensor:
        """(num_steps + 1,) fp32 on the policy's device: FLUX's shifted schedule, final entry 0."""
        from diffusers import FlowMatchEulerDiscreteScheduler
        from diffusers.pipelines.flux.pipeline_flux import calculate_shift

        if num_steps < 1:
            raise ValueError(f"FluxPolicy.sigmas: num_steps={num_steps} must be ≥ 1")
        config = self.pipe.scheduler.config
        scheduler = FlowMatchEulerDiscreteScheduler.from_config(config)
        sigmas = np.linspace(1.0, 1 / num_steps, num_steps)
        if config.get("use_flow_sigmas", False):
            sigmas = None
        mu = calculate_shift(
            self.image_seq_len,
            config.get("base_image_seq_len", 256),
            config.get("max_image_seq_len", 4096),
            config.get("base_shift", 0.5),
            config.get("max_shift", 1.15),
        )
        scheduler.set_timesteps(num_steps, device=self.device, sigmas=sigmas, mu=mu)
        return scheduler.sigmas.to(torch.float32)

    def velocity(self, latents: torch.Tensor, sigma: torch.Tensor, cond: Cond) -> torch.Tensor:
        """v ≈ ε − x₀ for packed latents (b, n, d) at noise levels ``sigma`` (b,) or scalar; fp32 out."""
        batch = latents.shape[0]
        sigma = torch.as_tensor(sigma, dtype=torch.float32, device=latents.device).reshape(-1)
        if sigma.numel() == 1:
            sigma = sigma.expand(batch)
        if sigma.shape[0] != batch or cond["prompt_embeds"].shape[0] != batch:
            raise ValueError(
                f"FluxPolicy.velocity: batch mismatch: latents {batch}, sigma {sigma.shape[0]}, "
                f"cond['prompt_embeds'] {cond['prompt_embeds'].shape[0]}"
            )
        dtype = self.dtype
        # FluxPipeline: t = 1000·σ (scheduler.timesteps), cast to the latents dtype, passed as t / 1000.
        timestep = (sigma * 1000).to(dtype) / 1000
        guidance = None
        if self.transformer.config.guidance_embeds:
            guidance = torch.full((batch,), self.guidance, device=latents.device, dtype=torch.float32)
        prompt_embeds = cond["prompt_embeds"].to(dtype)
        text_ids, img_ids = self._position_ids(latents.device, dtype, prompt_embeds.shape[1])
        out = self.transformer(
            hidden_states=latents.to(dtype),
            timestep=timestep,
            guidance=guidance,
            pooled_projections=cond["pooled_prompt_embeds"].to(dtype),
            encoder_hidden_states=prompt_embeds,
            txt_ids=text_ids,
            img_ids=img_ids,
            return_dict=False,
        )[0]
        return out.to(torch.float32)

    def _position_ids(self, device: torch.device, dtype: torch.dtype, text_len: int) -> tuple[torch.Tensor, torch.Tensor]:
        """FluxPipeline's (text ids (t, 3), image ids (n, 3)), made once per device, dtype and text length:
        the pipeline builds the image ids on the host, so making them per call would copy them to the
        GPU (a host synchronisation) at every denoising step."""
        key = (device, dtype, text_len)
        if key not in self._ids:
            self._ids[key] = (torch.zeros(text_len, 3, device=device, dtype=dtype),
                              self.pipe._prepare_latent_image_ids(1, self.latent_height // 2, self.latent_width // 2,
                                                                  device, dtype))
        return self._ids[key]

    @torch.no_grad()
    def decode_tensor(self, latents: torch.Tensor) -> torch.Tensor:
        """Packed latents at σ = 0 → images (b, 3, H, W) in [0, 1], fp32."""
        unpacked = self.pipe._unpack_latents(latents, self.height, self.width, self.pipe.vae_scale_factor)
        config = self.vae.config
        unpacked = unpacked / config.scaling_factor + config.shift_factor
        image = self.vae.decode(unpacked.to(self.vae.dtype), return_dict=False)[0]
        return self.pipe.image_processor.postprocess(image, output_type="pt").to(torch.float32)

    def decode(self, latents: torch.Tensor) -> list[Image.Image]:
        """Packed latents at σ = 0 → RGB PIL images (as ``FluxPipeline`` with ``output_type="pil"``)."""
        return self.pipe.image_processor.numpy_to_pil(
            self.decode_tensor(latents).permute(0, 2, 3, 1).cpu().numpy()
        )

    @torch.no_grad()
    def encode_latents(self, images: list[Image.Image]) -> torch.Tensor:
        """RGB images → packed clean latents x₀ (b, h/16·w/16, 4c), fp32: the inverse of ``decode`` up to
        the VAE (resized to the policy's size, VAE distribution mode, (z − shift)·scale, packed 2×2)."""
        pixels = self.pipe.image_processor.preprocess(images, self.height, self.width)
        z = self.vae.encode(pixels.to(self.vae.device, self.vae.dtype)).latent_dist.mode()
        z = (z - self.vae.config.shift_factor) * self.vae.config.scaling_factor
        b, c, h, w = z.shape
        return self.pipe._pack_latents(z, b, c, h, w).to(self.device, torch.float32)

    def describe(self) -> dict[str, Any]:
        return {
            "class": type(self).__name__,
            "transformer": type(self.transformer).__name__,
            "parameters": sum(p.numel() for p in self.transformer.parameters()),
            "source": self.source,
            "height": self.height,
            "width": self.width,
            "guidance": self.guidance,
            "max_sequence_length": self.max_sequence_length,
            "dtype": str(self.dtype),
        }
